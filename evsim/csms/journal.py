"""One event per message a charge point sends, typed by its action, so each kind can be read
back on its own: ``memory_viewer.py --events --type STATUS_NOTIFICATION``.

The raw frames both ways are OCPP_MESSAGE events already; this pairs each CALL with the answer
the central system sent (CALLRESULT or CALLERROR) and records one line a person can read, with
the request and the answer as data (MeterValues and the long fields summed up: the samples are
metrics, and the frames hold the rest). It also keeps the charge point's last message for the
control API.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from evsim.csms.actions import CHARGE_POINT_MESSAGES, event_type
from evsim.timefmt import ocpp_time

if TYPE_CHECKING:
    from evsim.clock import Clock
    from evsim.csms.endpoint import CsmsEndpoint

Record = Callable[[str, str, Any, Optional[str]], None]


def _status(answer: dict) -> Any:
    return answer.get("status") or answer.get("idTagInfo", {}).get("status")


def _samples(request: dict, field: str) -> int:
    return sum(len(value.get("sampledValue", [])) for value in request.get(field) or [])


#: action -> the description of (request, answer).
DESCRIBE: dict[str, Callable[[dict, dict], str]] = {
    "Authorize": lambda q, a: f"idTag {q.get('idTag')}: {_status(a)}",
    "BootNotification": lambda q, a: (f"{q.get('chargePointVendor')} "
                                      f"{q.get('chargePointModel')}: {_status(a)}"),
    "DataTransfer": lambda q, a: (f"vendor {q.get('vendorId')}"
                                  + (f" message {q['messageId']}" if q.get("messageId") else "")
                                  + f": {_status(a)}"),
    "DiagnosticsStatusNotification": lambda q, a: f"diagnostics upload {q.get('status')}",
    "FirmwareStatusNotification": lambda q, a: f"firmware {q.get('status')}",
    "Heartbeat": lambda q, a: "heartbeat",
    "MeterValues": lambda q, a: (f"connector {q.get('connectorId')}, transaction "
                                 f"{q.get('transactionId')}: "
                                 f"{_samples(q, 'meterValue')} sampled values"),
    "StartTransaction": lambda q, a: (f"connector {q.get('connectorId')}, idTag "
                                      f"{q.get('idTag')}: transaction {a.get('transactionId')} "
                                      f"{_status(a)}"),
    "StatusNotification": lambda q, a: (f"connector {q.get('connectorId')} {q.get('status')} "
                                        f"({q.get('errorCode')})"),
    "StopTransaction": lambda q, a: (f"transaction {q.get('transactionId')} stopped "
                                     f"({q.get('reason') or 'Local'}), meter "
                                     f"{q.get('meterStop')} Wh"),
    "LogStatusNotification": lambda q, a: (f"log upload {q.get('status')} (request "
                                           f"{q.get('requestId')})"),
    "SecurityEventNotification": lambda q, a: (f"security event {q.get('type')}"
                                               + (f": {q['techInfo']}" if q.get("techInfo")
                                                  else "")),
    "SignCertificate": lambda q, a: f"certificate signing request: {_status(a)}",
    "SignedFirmwareStatusNotification": lambda q, a: (f"signed firmware {q.get('status')} "
                                                      f"(request {q.get('requestId')})"),
}


def summary(action: str, request: Any) -> Any:
    """The request as the typed event keeps it: sample lists and CSRs counted, not copied."""
    if not isinstance(request, dict):
        return request
    if action == "MeterValues":
        return {"connectorId": request.get("connectorId"),
                "transactionId": request.get("transactionId"),
                "sampledValues": _samples(request, "meterValue")}
    if action == "StopTransaction" and "transactionData" in request:
        return {**request, "transactionData": f"{_samples(request, 'transactionData')} "
                                              "sampled values"}
    if action == "SignCertificate" and isinstance(request.get("csr"), str):
        return {"csr": f"{len(request['csr'])} characters"}
    return request


class Journal:
    """Fed every frame of every connection (:meth:`frame`); ``record(event_type, description,
    data, charge_point_id)`` stores an event."""

    def __init__(self, record: Record, clock: Clock) -> None:
        self.record = record
        self.clock = clock

    def frame(self, endpoint: CsmsEndpoint, record: dict[str, Any]) -> None:
        action, kind = record["action"], record["message_type"]
        endpoint.station.last_message = {"action": action, "messageType": kind,
                                         "direction": record["direction"],
                                         "at": ocpp_time(self.clock.now())}
        if record["direction"] == "received":
            if kind == "CALL" and action in CHARGE_POINT_MESSAGES:
                endpoint.unanswered[record["message_id"]] = (action, record["payload"])
            return
        if kind in ("CALLRESULT", "CALLERROR"):
            pending = endpoint.unanswered.pop(record["message_id"], None)
            if pending is not None:
                self._answered(endpoint.id, *pending, kind, record["payload"])

    def _answered(self, charge_point_id: str, action: str, request: Any, kind: str,
                  answer: Any) -> None:
        answer = answer if isinstance(answer, dict) else {}
        if kind == "CALLERROR":
            description = (f"{action} answered {answer.get('errorCode')}: "
                           f"{answer.get('errorDescription')}")
        else:
            try:
                description = f"{action}: {DESCRIBE[action](request, answer)}"
            except (AttributeError, TypeError):  # a request the schema let through oddly
                description = f"{action} answered"
        self.record(event_type(action), description,
                    {"request": summary(action, request), "response": answer}, charge_point_id)
