"""The per-message work of an OCPP endpoint, made cheap without changing a single answer.

Each function takes a fast path only where it gives exactly what the ``ocpp`` library or the
standard library would, and leaves every other case to them: orjson reads a frame unless it could
read it differently from :mod:`json` (a number of 19 digits or more, which orjson makes a float);
a schema compiled by fastjsonschema accepts a payload only if jsonschema would, and whatever it
refuses is checked again by the library, whose error is the answer; a camelCase key is converted
by the library once and then remembered, and so is a snake_case key of a CALL we send.
"""
from __future__ import annotations

import dataclasses
import functools
import random
import re
import uuid
from collections.abc import Callable
from typing import Any, Optional

import fastjsonschema
import orjson
from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case
from ocpp.messages import Call, CallResult, get_validator

#: Where jsonschema reads numbers as Decimal (the library's exceptions): left to the library.
DECIMAL_SCHEMAS = frozenset({(Call.message_type_id, "SetChargingProfile"),
                             (Call.message_type_id, "RemoteStartTransaction"),
                             (CallResult.message_type_id, "GetCompositeSchedule")})
_LONG_NUMBER = re.compile(r"\d{19}")
_LONG_NUMBER_BYTES = re.compile(rb"\d{19}")
_KEYS_REMEMBERED = 4096


def loads(raw: Any, slow: Callable[[Any], Any]) -> Any:
    """``slow(raw)`` (a :func:`json.loads`), by orjson whenever orjson reads it the same;
    whatever orjson refuses is read (or refused, with its own error) by ``slow``."""
    if isinstance(raw, str):
        fast = _LONG_NUMBER.search(raw) is None
    else:
        fast = isinstance(raw, bytes) and _LONG_NUMBER_BYTES.search(raw) is None
    if fast:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return slow(raw)


@functools.lru_cache(maxsize=_KEYS_REMEMBERED)
def _snake_key(key: str) -> str:
    return next(iter(camel_to_snake_case({key: None})))


@functools.lru_cache(maxsize=_KEYS_REMEMBERED)
def _camel_key(key: str) -> str:
    return next(iter(snake_to_camel_case({key: None})))


def request_payload(request: Any) -> Any:
    """The library's ``remove_nones(snake_to_camel_case(serialize_as_dict(request)))`` of a
    CALL's dataclass, without its deep copy: containers are new, leaves shared."""
    if isinstance(request, dict):
        return {_camel_key(key): request_payload(value) for key, value in request.items()
                if value is not None}
    if isinstance(request, list):
        return [request_payload(value) for value in request if value is not None]
    if dataclasses.is_dataclass(request) and not isinstance(request, type):
        return {_camel_key(name): request_payload(value)
                for name in request.__dataclass_fields__
                if (value := getattr(request, name)) is not None}
    return request


_ids = random.Random()


def message_id() -> uuid.UUID:
    """A version 4 UUID as :func:`uuid.uuid4` makes, from a pseudo-random generator: a message
    id must be unique, not secret, and ``os.urandom`` is a system call a message."""
    return uuid.UUID(int=_ids.getrandbits(128), version=4)


def snake_case(data: Any) -> Any:
    """The library's ``camel_to_snake_case``, each distinct key converted once."""
    if isinstance(data, dict):
        return {_snake_key(key): snake_case(value) for key, value in data.items()}
    if isinstance(data, list):
        return [snake_case(value) for value in data]
    return data


@functools.cache
def _compiled(message_type_id: int, action: str, ocpp_version: str) -> Optional[Callable]:
    """The library's schema for this message compiled to Python (None: none, or Decimal)."""
    if (message_type_id, action) in DECIMAL_SCHEMAS and ocpp_version == "1.6":
        return None
    try:
        schema = get_validator(message_type_id, action, ocpp_version).schema
    except (OSError, ValueError):
        return None
    return fastjsonschema.compile(schema, use_default=False, use_formats=False)


def valid(message: Call | CallResult, ocpp_version: str) -> bool:
    """True if the payload certainly passes the library's check; False means "ask it"."""
    if type(message) not in (Call, CallResult) or not isinstance(message.action, str):
        return False
    check = _compiled(message.message_type_id, message.action, ocpp_version)
    if check is None:
        return False
    try:
        check(message.payload)
    except Exception:  # noqa: BLE001 - refused, or could not tell: the library decides
        return False
    return True
