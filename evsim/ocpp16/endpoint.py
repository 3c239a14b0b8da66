"""OCPP-J 1.6 at our boundary, for both sides: the frame rules and the error codes of 1.6.

The ``ocpp`` library sends 2.0.1's ``FormatViolation`` where 1.6 names ``FormationViolation``, and
swaps ``NotImplemented`` (unknown action) with ``NotSupported`` (known action, not supported)
(mobilityhouse/ocpp #381, #490, #426). :class:`Endpoint` parses every frame itself, answers a bad
CALL with 1.6's own code, ignores a frame it cannot read (OCPP-J 1.6 §4.1.3), and reports every
frame it receives or sends to :meth:`Endpoint.on_frame`. Whatever fails while a CALL is checked
or handled is answered with a CALLERROR, and the connection serves on.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Optional

from jsonschema.exceptions import ValidationError as SchemaValidationError
from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import (
    FormationViolationError,
    FormatViolationError,
    InternalError,
    NotImplementedError,
    NotSupportedError,
    OccurenceConstraintViolationError,
    OCPPError,
    PropertyConstraintViolationError,
)
from ocpp.messages import Call, CallError, CallResult, validate_payload
from ocpp.v16 import ChargePoint
from ocpp.v16.enums import Action

from evsim.ocpp16 import fast

SUBPROTOCOL = "ocpp1.6"
CALL, CALLRESULT, CALLERROR = 2, 3, 4
TYPE_NAMES = {CALL: "CALL", CALLRESULT: "CALLRESULT", CALLERROR: "CALLERROR"}
KNOWN_ACTIONS = frozenset(action.value for action in Action)

log = logging.getLogger("ocpp16")

# The descriptions OCPP-J 1.6 §4.2.3 gives these codes (the library's are swapped too).
NOT_IMPLEMENTED = "Requested Action is not known by receiver"
NOT_SUPPORTED = "Requested Action is recognized but not supported by the receiver"
FORMATION_VIOLATION = ("Payload for Action is syntactically incorrect or not conform the PDU "
                       "structure for Action")


def unknown_action(action: str) -> OCPPError:
    """The error for an action without a handler: 1.6's NotImplemented or NotSupported."""
    cause = {"cause": f"{action} has no handler here"}
    if action in KNOWN_ACTIONS:
        return NotSupportedError(description=NOT_SUPPORTED, details=cause)
    return NotImplementedError(description=NOT_IMPLEMENTED, details=cause)


#: Schema keywords whose failure 1.6 names more precisely than the library's FormatViolation.
SCHEMA_ERRORS = {"enum": PropertyConstraintViolationError,
                 "minItems": OccurenceConstraintViolationError,
                 "maxItems": OccurenceConstraintViolationError}


def to_ocpp16(error: OCPPError) -> OCPPError:
    """Correct an error the library raised to the code OCPP 1.6 defines for it."""
    details = {"cause": str(error.details.get("cause", ""))} if error.details else {}
    if isinstance(error, FormatViolationError):
        schema_error = error.__context__  # the library raises it while handling this one
        if isinstance(schema_error, SchemaValidationError) and \
                schema_error.validator in SCHEMA_ERRORS:
            return SCHEMA_ERRORS[schema_error.validator](details={"cause": schema_error.message})
        return FormationViolationError(description=FORMATION_VIOLATION, details=details)
    if isinstance(error, NotImplementedError):  # the library: known action, no handler
        return NotSupportedError(description=NOT_SUPPORTED, details=details)
    if isinstance(error, NotSupportedError):  # the library: action unknown to 1.6
        return NotImplementedError(description=NOT_IMPLEMENTED, details=details)
    return type(error)(description=error.description, details=details)


async def _checked(msg: Call) -> None:
    """Validate a CALL's payload; whatever else than a schema error the check raises (the
    library's Decimal arithmetic on a number like 1e300, say) is an error of 1.6 too."""
    if fast.valid(msg, "1.6"):
        return
    try:
        await validate_payload(msg, "1.6")
    except OCPPError:
        raise
    except ArithmeticError as exc:
        raise PropertyConstraintViolationError(details={
            "cause": f"a number cannot be checked against its constraints ({one_line(exc)})"}) \
            from None
    except Exception as exc:  # noqa: BLE001 - the check failed on this payload: the sender's
        raise FormationViolationError(description=FORMATION_VIOLATION, details={
            "cause": f"the payload cannot be validated ({one_line(exc)})"}) from None


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and its message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


class Malformed(Exception):
    """A frame that cannot be answered: ignored with a log line."""


@dataclass
class BadCall(Exception):
    """A CALL whose message id can be read but which is not a well-formed CALL."""

    unique_id: str
    error: OCPPError


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _strict_loads(raw: Any) -> Any:
    return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)


def parse(raw: Any) -> Call | CallResult | CallError:
    """Read one OCPP-J frame. Raises Malformed (ignore it) or BadCall (answer with a CALLERROR).

    Python's JSON reader accepts NaN and Infinity, which JSON has not: such a frame is not JSON.
    """
    try:
        message = fast.loads(raw, _strict_loads)
    except RecursionError:
        raise Malformed("not JSON: nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(message, list) or not message:
        raise Malformed("not a JSON array")
    kind = message[0]
    if kind not in TYPE_NAMES or isinstance(kind, bool):
        raise Malformed(f"unknown message type {kind!r}")
    if len(message) < 2 or not isinstance(message[1], str):
        raise Malformed("no readable message id")
    unique_id = message[1]
    if kind == CALL:
        if len(message) != 4 or not isinstance(message[2], str) or not isinstance(message[3], dict):
            raise BadCall(unique_id, FormationViolationError(
                description=FORMATION_VIOLATION,
                details={"cause": "a CALL is [2, messageId, action, {payload}]"}))
        return Call(unique_id, message[2], message[3])
    if kind == CALLRESULT:
        if len(message) != 3 or not isinstance(message[2], dict):
            raise Malformed("a CALLRESULT is [3, messageId, {payload}]")
        return CallResult(unique_id, message[2])
    if len(message) not in (4, 5) or not all(isinstance(m, str) for m in message[2:4]):
        raise Malformed("a CALLERROR is [4, messageId, errorCode, errorDescription, {details}]")
    return CallError(unique_id, message[2], message[3], message[4] if len(message) == 5 else {})


class Endpoint(ChargePoint):
    """An ``ocpp.v16.ChargePoint`` with 1.6's error codes and a hook on every frame.

    ``side`` ("csms" or "cp") names this end in the frame records.
    """

    side = "csms"
    #: Send CALLs through :meth:`_fast_call` rather than the library's ``call``.
    fast_calls = False

    def __init__(self, id: str, connection: Any, response_timeout: float = 30) -> None:
        super().__init__(id, connection, response_timeout=response_timeout,
                         logger=logging.getLogger("ocpp"))
        self._sent_calls: dict[str, str] = {}
        self._received_calls: dict[str, str] = {}

    def on_frame(self, record: dict[str, Any]) -> None:
        """Called for every frame both ways with action, direction, message_type, message_id,
        payload. Override to log or record."""

    def on_ignored(self, raw: Any, reason: str) -> None:
        log.warning("%s: ignored a frame (%s): %.200s", self.id, reason, redact_text(raw))

    async def call(self, payload: Any, suppress: bool = True, unique_id: Optional[str] = None,
                   skip_schema_validation: bool = False) -> Any:
        unique_id = unique_id if unique_id is not None else str(self._unique_id_generator())
        try:
            if self.fast_calls:
                return await self._fast_call(payload, suppress, unique_id, skip_schema_validation)
            return await super().call(payload, suppress, unique_id, skip_schema_validation)
        finally:
            # A call that timed out or failed expects no answer: a late one is ignored.
            self._sent_calls.pop(unique_id, None)

    async def _fast_call(self, payload: Any, suppress: bool, unique_id: str,
                         skip_schema_validation: bool) -> Any:
        """The library's ``call``, with the fast paths of :mod:`evsim.ocpp16.fast`: the same
        frame, the same checks (the library's only where a compiled one refuses), the same
        answer."""
        action = type(payload).__name__
        request = Call(unique_id, action, fast.request_payload(payload))
        version = self._ocpp_version
        if not skip_schema_validation and not fast.valid(request, version):
            await validate_payload(request, version)
        async with self._call_lock:
            await self._send(request.to_json())
            try:
                response = await self._get_specific_response(unique_id, self._response_timeout)
            except TimeoutError:
                raise TimeoutError(f"Waited {self._response_timeout}s for response on "
                                           f"{request.to_json()}.") from None
        if response.message_type_id == CALLERROR:
            self.logger.warning("Received a CALLError: %s'", response)
            if suppress:
                return None
            raise response.to_exception()
        if not skip_schema_validation:
            response.action = action
            if not fast.valid(response, version):
                await validate_payload(response, version)
        return getattr(self._call_result, action)(**fast.snake_case(response.payload))

    async def route_message(self, raw_msg: Any) -> None:
        try:
            msg = parse(raw_msg)
        except Malformed as exc:
            self.on_ignored(raw_msg, str(exc))
            return
        except BadCall as bad:
            self._record("received", CALL, bad.unique_id, None, _payload_of(raw_msg))
            await self._send(CallError(bad.unique_id, bad.error.code, bad.error.description,
                                       bad.error.details).to_json())
            return
        if isinstance(msg, Call):
            self._received_calls[msg.unique_id] = msg.action
            self._record("received", CALL, msg.unique_id, msg.action, msg.payload, raw_msg)
            await self._answer(msg)
            return
        action = self._sent_calls.pop(msg.unique_id, None)
        if action is None:
            self.on_ignored(raw_msg, "a response to no CALL of ours")
            return
        msg.action = action
        if isinstance(msg, CallResult):
            self._record("received", CALLRESULT, msg.unique_id, action, msg.payload, raw_msg)
        else:
            self._record("received", CALLERROR, msg.unique_id, action, _error_payload(msg))
        self._response_queue.put_nowait(msg)

    async def _answer(self, msg: Call) -> None:
        handlers = self.route_map.get(msg.action, {})
        if "_on_action" not in handlers:
            error: Optional[OCPPError] = unknown_action(msg.action)
        else:
            try:
                await self._handle_call(msg)
                return
            except OCPPError as exc:
                error = to_ocpp16(exc)
        log.info("%s: %s %s answered %s", self.id, msg.action, msg.unique_id, error.code)
        await self._send(msg.create_call_error(error).to_json())

    async def _handle_call(self, msg: Call) -> None:
        """The library's, with every failure in 1.6's terms: a payload the schema check fails on
        in any way is the sender's error (``_checked``); a handler that raises, or an answer
        that is not valid, is ours (InternalError, one log line); a failure once the answer is
        sent is only logged. An OCPPError a handler raises is its answer."""
        handlers = self.route_map[msg.action]
        validate = not handlers.get("_skip_schema_validation", False)
        if validate:
            await _checked(msg)
        try:
            kwargs = fast.snake_case(msg.payload)
            response = self._run(handlers["_on_action"], msg, kwargs)
            if inspect.isawaitable(response):
                response = await response
        except OCPPError:
            raise
        except Exception as exc:  # noqa: BLE001 - our bug: InternalError, and serve on
            raise self._failed(msg, "failed", exc) from None
        try:
            result = msg.create_call_result(
                snake_to_camel_case(remove_nones(serialize_as_dict(response))))
            if validate and not fast.valid(result, self._ocpp_version):
                await validate_payload(result, self._ocpp_version)
        except Exception as exc:  # noqa: BLE001 - our bug: InternalError, and serve on
            raise self._failed(msg, "gave an invalid answer", exc) from None
        await self._send(result.to_json())
        if "_after_action" in handlers:
            try:
                after = self._run(handlers["_after_action"], msg, kwargs)
            except Exception as exc:  # noqa: BLE001 - answered already: only logged
                self._failed(msg, "failed after its answer", exc)
                return
            if inspect.isawaitable(after):
                asyncio.ensure_future(after).add_done_callback(
                    lambda task: self._after_done(msg, task))

    def _after_done(self, msg: Call, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._failed(msg, "failed after its answer", task.exception())

    @staticmethod
    def _run(handler: Any, msg: Call, kwargs: dict[str, Any]) -> Any:
        if _takes_unique_id(getattr(handler, "__func__", handler)):
            return handler(**kwargs, call_unique_id=msg.unique_id)
        return handler(**kwargs)

    def _failed(self, msg: Call, what: str, exc: BaseException) -> InternalError:
        """Log a handler's failure in one line (no payload: it may hold a secret)."""
        log.error("%s: %s %s %s: %s", self.id, msg.action, msg.unique_id, what, one_line(exc))
        return InternalError(description="An unexpected error occurred.",
                             details={"cause": f"{msg.action} {what}"})

    async def _send(self, message: str) -> None:
        frame = fast.loads(message, json.loads)
        kind, unique_id = frame[0], frame[1]
        if kind == CALL:
            self._sent_calls[unique_id] = frame[2]
            self._record("sent", CALL, unique_id, frame[2], frame[3], message)
        else:
            action = self._received_calls.pop(unique_id, None)
            payload = frame[2] if kind == CALLRESULT else _error_payload(CallError(*frame[1:]))
            self._record("sent", kind, unique_id, action, payload, message)
        await self._connection.send(message)

    def _record(self, direction: str, kind: int, unique_id: str, action: Optional[str],
                payload: Any, raw: Any = None) -> None:
        self.on_frame({"action": action, "direction": direction,
                       "message_type": TYPE_NAMES[kind], "message_id": unique_id,
                       "payload": redact_frame(payload, raw)})


@functools.cache
def _takes_unique_id(handler: Any) -> bool:
    """Whether an ``@on`` handler (a function of its class: a bounded set) wants the message id."""
    return "call_unique_id" in inspect.signature(handler).parameters


#: Configuration keys whose values are secrets: never logged, never recorded.
SECRET_KEYS = frozenset({"AuthorizationKey"})
REDACTED = "***"


def redact(payload: Any) -> Any:
    """``payload`` with the value of every secret configuration key (in ChangeConfiguration, or
    a GetConfiguration answer) replaced, for logs and records; the frame itself is unchanged."""
    if isinstance(payload, list):
        return [redact(item) for item in payload]
    if not isinstance(payload, dict):
        return payload
    if isinstance(payload.get("key"), str) and payload["key"] in SECRET_KEYS and \
            "value" in payload:
        return {**payload, "value": REDACTED}
    return {name: redact(value) for name, value in payload.items()}


def redact_frame(payload: Any, raw: Any) -> Any:
    """:func:`redact` of a payload read from ``raw``, its JSON text: the payload itself (not
    copied) when the text can name no secret key, not even through an escape."""
    if isinstance(raw, str) and "\\" not in raw and not any(key in raw for key in SECRET_KEYS):
        return payload
    return redact(payload)


def redact_text(raw: Any) -> str:
    """A frame that could not be parsed, for a log or a record: not shown at all if it names a
    secret configuration key, since its value cannot be found reliably."""
    text = str(raw)
    if any(key in text for key in SECRET_KEYS):
        return f"(a frame of {len(text)} characters naming a secret configuration key)"
    return text


def compact(payload: Any, limit: int = 160) -> str:
    """A payload on one short line, for the console."""
    text = json.dumps(payload, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _error_payload(error: CallError) -> dict[str, Any]:
    return {"errorCode": error.error_code, "errorDescription": error.error_description,
            "errorDetails": error.error_details}


def _payload_of(raw: Any) -> Any:
    try:
        message = json.loads(raw)
        return message[3] if len(message) > 3 else None
    except (TypeError, ValueError):
        return None
