"""Checking and encoding the values a caller hands the MemoryBank, before SQLite sees them.

Every function raises ValueError with a message that names the field and the bad value, so a
caller learns what was wrong without reading SQL; nothing here touches the database.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Optional, Union

import orjson

from evsim.constants import SEVERITIES
from evsim.timefmt import format_timestamp

#: SQLite's largest INTEGER.
SQLITE_MAX_INTEGER = 2**63 - 1

#: A time as the MemoryBank accepts it: a datetime (naive is UTC), ISO-8601 text, epoch seconds,
#: or None for now.
Timestamp = Union[datetime, str, float, int, None]
#: A lower or upper time bound: a Timestamp, or a timedelta meaning that long before now.
Since = Union[datetime, str, float, int, timedelta, None]
Clock = Callable[[], datetime]

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
#: orjson hands these to its ``default`` (none: TypeError), so that they reach _ENCODER.
_PASSTHROUGH = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                | orjson.OPT_PASSTHROUGH_SUBCLASS)
#: In orjson's text, what _ENCODER may write otherwise: null (a NaN or infinity, which it
#: refuses), and floats below 1e-4 (it writes 2.5e-05 where orjson writes 0.000025 or 2.5e-5).
_MAYBE_DIFFERENT = (b"null", b"e-", b"0.0000")


def to_json(value: Any, what: str) -> Optional[str]:
    """Encode ``value`` as compact JSON text; a ``str`` must already be JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"{what} is a string but not JSON text ({exc}): "
                             f"{value[:60]!r}") from None
    try:
        return _encode(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from None


def _encode(value: Any) -> str:
    """_ENCODER's text, by orjson (several times faster) wherever it writes the same."""
    try:
        text = orjson.dumps(value, option=_PASSTHROUGH)
    except TypeError:
        return _ENCODER.encode(value)
    if any(part in text for part in _MAYBE_DIFFERENT):
        return _ENCODER.encode(value)
    return text.decode()


def number(value: Any, what: str) -> Optional[float]:
    """A finite number (or None); numeric text is converted, NaN and infinities are refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return value


def text(value: Any, what: str, required: bool = True) -> Optional[str]:
    """A string; ``required`` means present and non-empty, otherwise None passes."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        kind = "a non-empty string" if required else "a string"
        raise ValueError(f"{what} must be {kind}, got {value!r}")
    return value


def valid_transaction_id(value: Any) -> Union[int, str, None]:
    """An OCPP transaction id: an integer (a string is kept as given), or None."""
    if value is None or (isinstance(value, (int, str)) and not isinstance(value, bool)):
        return value
    raise ValueError(f"transaction_id must be an integer or a string, got {value!r}")


def severity(value: Any) -> str:
    """One of :data:`~evsim.constants.SEVERITIES`, in any letter case."""
    upper = value.upper() if isinstance(value, str) else value
    if upper not in SEVERITIES:
        raise ValueError(f"unknown severity {value!r}: expected one of {', '.join(SEVERITIES)}")
    return upper


def limit(value: Any) -> Optional[int]:
    """A row limit: None (no limit) or a whole number SQLite can take."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not 0 <= value <= SQLITE_MAX_INTEGER):
        raise ValueError(f"limit must be a whole number from 0 to {SQLITE_MAX_INTEGER}, "
                         f"got {value!r}")
    return value


def stored_time(value: Since, clock: Clock) -> str:
    """Any accepted time form as the stored text; ``clock`` says when now is (for None and for
    a timedelta back from now)."""
    if value is None:
        return format_timestamp(clock())
    if isinstance(value, timedelta):
        try:
            return format_timestamp(clock() - value)
        except OverflowError:
            raise ValueError(f"{value} before now is out of range") from None
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return format_timestamp(datetime.fromtimestamp(value, UTC))
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"timestamp {value!r} is out of range") from None
    if isinstance(value, str):
        try:
            return format_timestamp(datetime.fromisoformat(value.strip()))
        except ValueError:
            raise ValueError(f"timestamp {value!r} is not an ISO-8601 time") from None
    raise ValueError(f"timestamp must be a datetime, ISO-8601 string or epoch seconds, "
                     f"got {value!r}")


def days_ago(days: Any, clock: Clock) -> str:
    """The stored time ``days`` (0 or more) before ``clock()``."""
    days = number(days, "days")
    if days is None or days < 0:
        raise ValueError(f"days must be 0 or more, got {days!r}")
    try:
        return stored_time(timedelta(days=days), clock)
    except OverflowError:
        raise ValueError(f"days must be at most {timedelta.max.days}, got {days!r}") from None


# -- rows, as the write methods take them ------------------------------------------------------

def event_row(clock: Clock, event_type: str, source: str, description: str, data: Any = None,
              charge_point_id: Optional[str] = None, timestamp: Timestamp = None,
              data_json: Optional[str] = None) -> tuple:
    """The values of an events row, in the order of its columns. ``data_json`` is ``data``
    that :func:`to_json` encoded already (a writer queues text: the garbage collector does not
    follow it, as it would a dict tree kept waiting)."""
    return (stored_time(timestamp, clock), text(event_type, "event_type"), text(source, "source"),
            text(description, "description", required=False) or "",
            to_json(data, "data") if data_json is None else data_json,
            text(charge_point_id, "charge_point_id", required=False))


def metric_row(clock: Clock, name: str, value: float, unit: Optional[str],
               source: Optional[str], charge_point_id: Optional[str] = None,
               transaction_id: Optional[int] = None, timestamp: Timestamp = None) -> tuple:
    """The values of a metrics row, in the order of its columns."""
    if value is None:
        raise ValueError(f"metric {name!r} has no value")
    return (stored_time(timestamp, clock), text(name, "metric name"),
            number(value, "metric value"), text(unit, "unit", required=False),
            text(source, "source", required=False),
            text(charge_point_id, "charge_point_id", required=False),
            valid_transaction_id(transaction_id))


_ANOMALY_CHECKS: dict[str, Callable[[Any], Any]] = {
    "anomaly_type": lambda v: text(v, "anomaly_type"),
    "severity": severity,
    "description": lambda v: text(v, "description", required=False) or "",
    "current_value": lambda v: number(v, "current_value"),
    "expected_value": lambda v: number(v, "expected_value"),
    "deviation": lambda v: number(v, "deviation"),
    "pattern": lambda v: to_json(v, "pattern"),
    "charge_point_id": lambda v: text(v, "charge_point_id", required=False),
    "transaction_id": valid_transaction_id,
}


def anomaly_fields(clock: Clock, fields: dict[str, Any]) -> dict[str, Any]:
    """Anomaly columns given by name, checked and encoded; TypeError for an unknown name."""
    unknown = set(fields) - set(_ANOMALY_CHECKS) - {"timestamp", "end_time"}
    if unknown:
        raise TypeError(f"unknown anomaly field(s): {', '.join(sorted(unknown))}")
    return {name: stored_time(value, clock) if name in ("timestamp", "end_time")
            else _ANOMALY_CHECKS[name](value) for name, value in fields.items()}


def session_start(clock: Clock, charge_point_id: Any, transaction_id: Any, start_time: Timestamp,
                  meter_start_wh: Any, id_tag: Any) -> dict[str, Any]:
    """The session columns start_session sets, checked and encoded."""
    return {"charge_point_id": text(charge_point_id, "charge_point_id"),
            "transaction_id": valid_transaction_id(transaction_id),
            "start_time": stored_time(start_time, clock),
            "meter_start_wh": number(meter_start_wh, "meter_start_wh"),
            "id_tag": text(id_tag, "id_tag", required=False)}


def session_end(clock: Clock, *, end_time: Timestamp, energy_wh: Any, stop_reason: Any,
                meter_stop_wh: Any, min_current: Any, avg_current: Any, max_current: Any,
                sample_count: Any) -> dict[str, Any]:
    """The session columns end_session sets, checked and encoded (None: not given)."""
    return {"energy_wh": number(energy_wh, "energy_wh"),
            "meter_stop_wh": number(meter_stop_wh, "meter_stop_wh"),
            "min_current": number(min_current, "min_current"),
            "avg_current": number(avg_current, "avg_current"),
            "max_current": number(max_current, "max_current"),
            "sample_count": sample_count,
            "stop_reason": text(stop_reason, "stop_reason", required=False),
            "end_time": stored_time(end_time, clock)}


def rows(items: Iterable[dict], make_row: Callable[..., tuple], what: str) -> list[tuple]:
    """Every item of a batch checked and encoded before anything is written, so a batch is
    stored whole or not at all; the error names the item."""
    encoded = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{what} {index} is not a dict: {item!r}")
        try:
            encoded.append(make_row(**item))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} {index}: {exc}") from None
    return encoded


def label_row(clock: Clock, charge_point_id: str, anomaly_type: str, start: Timestamp,
              end: Timestamp, parameters: Any = None, seed: Optional[int] = None,
              source: str = "") -> tuple:
    """The values of a labels row, in the order of its columns. ``end`` None is an open label
    (not now, unlike the other times); an end before the start is refused."""
    start_text = stored_time(start, clock)
    end_text = None if end is None else stored_time(end, clock)
    if end_text is not None and end_text < start_text:
        raise ValueError(f"label end {end_text} is before its start {start_text}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or abs(seed) > SQLITE_MAX_INTEGER):
        raise ValueError(f"seed must be a whole number (or None), got {seed!r}")
    return (text(charge_point_id, "charge_point_id"), text(anomaly_type, "anomaly_type"),
            start_text, end_text, to_json(parameters, "parameters"), seed,
            text(source, "source"))
