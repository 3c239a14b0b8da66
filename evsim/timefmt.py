"""The time formats of the site, in one place.

- Stored (MemoryBank): fixed-width UTC with microseconds, ``2024-05-01T12:00:00.000000Z``, so
  text order is time order.
- OCPP: UTC with milliseconds, ``2024-05-01T12:00:00.000Z``.
- Shown: local time, ``05-01 14:03:07``.
- Typed by a user: a duration back from now (``90s``, ``10m``, ``2h``, ``3d``, ``1w``) or an
  ISO-8601 time, local unless it has an offset.
"""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Aware UTC; a naive time is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    """The stored form."""
    return as_utc(value).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_timestamp(text: str) -> datetime:
    """A stored (or any ISO-8601) timestamp as an aware UTC datetime; naive is UTC."""
    return as_utc(datetime.fromisoformat(text))


def ocpp_time(value: datetime) -> str:
    """An OCPP date-time."""
    return as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ocpp_time(text: str) -> datetime:
    """An OCPP date-time (naive is UTC); ValueError for anything else."""
    return parse_timestamp(text)


def local_time(stamp: str | None) -> str:
    """A stored timestamp as short local time, for tables and charts."""
    return parse_timestamp(stamp).astimezone().strftime("%m-%d %H:%M:%S") if stamp else ""


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A duration back from ``now`` or an ISO time, as UTC. ValueError (one line) otherwise."""
    match = DURATION.match(text)
    try:
        if match:
            amount, unit = match.groups()
            return (now or utc_now()) - timedelta(**{DURATION_UNITS[unit.lower()]: float(amount)})
        moment = datetime.fromisoformat(text.strip())
        return (moment if moment.tzinfo else moment.astimezone()).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is too far back") from None
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (10m, 2h, 3d) nor an ISO time "
                         f"(2024-05-01T12:00)") from None
