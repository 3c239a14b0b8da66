"""OCPP 1.6 charging profiles: build them (central system), validate them, find the limit in
force and the composite schedule (charge point).

Pure: no I/O; the caller passes "now" and the simulated-time scale, so a schedule's periods elapse
in simulated seconds (wall seconds x speed) like every other wait of the simulator.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Optional

from ocpp.charge_point import camel_to_snake_case

from evsim.timefmt import ocpp_time, parse_ocpp_time

PURPOSES = ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile")
KINDS = ("Absolute", "Recurring", "Relative")
RECURRENCY_SECONDS = {"Daily": 86400, "Weekly": 7 * 86400}
UNITS = ("A", "W")
MAX_STACK_LEVEL = 10
MAX_PERIODS = 24
MAX_PROFILES = 10


class ProfileError(ValueError):
    """A profile the charge point cannot apply: the reason, in one line."""


def build(profile_id: int, limit: float, *, purpose: str = "TxDefaultProfile",
          stack_level: int = 0, unit: str = "A", start: Optional[datetime] = None,
          transaction_id: Optional[int] = None) -> dict[str, Any]:
    """A one-period profile as it goes on the wire (camelCase): ``limit`` from ``start`` on.

    With ``start`` it is Absolute; without, Relative (to the start of the transaction).
    """
    schedule: dict[str, Any] = {"chargingRateUnit": unit,
                                "chargingSchedulePeriod": [{"startPeriod": 0,
                                                            "limit": round(float(limit), 1)}]}
    if start is not None:
        schedule["startSchedule"] = ocpp_time(start)
    profile: dict[str, Any] = {"chargingProfileId": profile_id, "stackLevel": stack_level,
                               "chargingProfilePurpose": purpose,
                               "chargingProfileKind": "Absolute" if start else "Relative",
                               "chargingSchedule": schedule}
    if transaction_id is not None:
        profile["transactionId"] = transaction_id
    return profile


@dataclass(frozen=True)
class Period:
    start_s: int
    limit: float


@dataclass(frozen=True)
class ChargingProfile:
    id: int
    stack_level: int
    purpose: str
    kind: str
    unit: str
    periods: tuple[Period, ...]
    start_schedule: Optional[datetime] = None
    duration_s: Optional[int] = None
    recurrency: Optional[str] = None
    valid_from: Optional[datetime] = None
    valid_to: Optional[datetime] = None
    transaction_id: Optional[int] = None

    def limit_at(self, now: datetime, *, speed: float = 1.0, voltage: float = 230.0,
                 transaction_start: Optional[datetime] = None) -> Optional[float]:
        """The limit in A this profile sets at ``now``, or None when it sets none.

        A limit in W is converted at the nominal ``voltage`` (the charge point is single-phase).
        A schedule without a start counts from the start of the transaction, or from now.
        """
        if (self.valid_from and now < self.valid_from) or (self.valid_to and now >= self.valid_to):
            return None
        origin = self.start_schedule if self.kind != "Relative" else None
        origin = origin or transaction_start or now
        elapsed = round((now - origin).total_seconds() * speed, 3)  # µs of wall time rounding
        if self.recurrency:
            elapsed %= RECURRENCY_SECONDS[self.recurrency]
        if elapsed < 0 or (self.duration_s is not None and elapsed >= self.duration_s):
            return None
        limit = [p.limit for p in self.periods if p.start_s <= elapsed][-1]
        return limit if self.unit == "A" else limit / voltage

    def breakpoints(self, now: datetime, horizon_s: float, *, speed: float = 1.0,
                    transaction_start: Optional[datetime] = None) -> set[int]:
        """The simulated seconds after ``now`` (within ``horizon_s``) at which this profile's
        limit may change: period starts, the end of its duration, recurrences, validity."""
        offsets = [(moment - now).total_seconds() * speed
                   for moment in (self.valid_from, self.valid_to) if moment]
        origin = self.start_schedule if self.kind != "Relative" else None
        elapsed = (now - (origin or transaction_start or now)).total_seconds() * speed
        starts = [p.start_s for p in self.periods]
        if self.duration_s is not None:
            starts.append(self.duration_s)
        if self.recurrency:
            every = RECURRENCY_SECONDS[self.recurrency]
            first, last = math.floor(elapsed / every), math.floor((elapsed + horizon_s) / every)
            offsets += [k * every + s - elapsed for k in range(first, last + 1) for s in starts]
        else:
            offsets += [s - elapsed for s in starts]
        return {math.ceil(round(t, 3)) for t in offsets if 0 <= t < horizon_s}


def parse(data: Mapping[str, Any]) -> ChargingProfile:
    """Validate a csChargingProfiles object (camelCase or the ocpp library's snake_case)."""
    data = camel_to_snake_case(dict(data))
    try:
        schedule = data["charging_schedule"]
        raw_periods = schedule["charging_schedule_period"]
        periods = tuple(Period(int(p["start_period"]), float(p["limit"])) for p in raw_periods)
        profile = ChargingProfile(
            id=int(data["charging_profile_id"]), stack_level=int(data["stack_level"]),
            purpose=data["charging_profile_purpose"], kind=data["charging_profile_kind"],
            unit=schedule["charging_rate_unit"], periods=periods,
            start_schedule=_time(schedule.get("start_schedule")),
            duration_s=schedule.get("duration"), recurrency=data.get("recurrency_kind"),
            valid_from=_time(data.get("valid_from")), valid_to=_time(data.get("valid_to")),
            transaction_id=data.get("transaction_id"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"malformed charging profile: {exc}") from None
    _check(profile)
    return profile


def _time(text: Optional[str]) -> Optional[datetime]:
    return parse_ocpp_time(text) if text else None


def _check(profile: ChargingProfile) -> None:
    problems = []
    if profile.purpose not in PURPOSES:
        problems.append(f"unknown purpose {profile.purpose!r}")
    if profile.kind not in KINDS:
        problems.append(f"unknown kind {profile.kind!r}")
    if profile.unit not in UNITS:
        problems.append(f"unknown charging rate unit {profile.unit!r}")
    if not 0 <= profile.stack_level <= MAX_STACK_LEVEL:
        problems.append(f"stack level {profile.stack_level} outside 0..{MAX_STACK_LEVEL}")
    if not 1 <= len(profile.periods) <= MAX_PERIODS:
        problems.append(f"needs 1 to {MAX_PERIODS} schedule periods, got {len(profile.periods)}")
    elif profile.periods[0].start_s != 0:
        problems.append("the first schedule period must start at 0")
    starts = [p.start_s for p in profile.periods]
    if any(b <= a for a, b in itertools.pairwise(starts)):
        problems.append("schedule periods must start in increasing order")
    if any(p.limit < 0 for p in profile.periods):
        problems.append("a limit is negative")
    if profile.duration_s is not None and profile.duration_s <= 0:
        problems.append("duration must be positive")
    if profile.kind == "Recurring" and (profile.recurrency not in RECURRENCY_SECONDS
                                        or profile.start_schedule is None):
        problems.append("a Recurring profile needs recurrencyKind and startSchedule")
    if profile.transaction_id is not None and profile.purpose != "TxProfile":
        problems.append("only a TxProfile may name a transaction")
    if profile.valid_from and profile.valid_to and profile.valid_to <= profile.valid_from:
        problems.append("validTo is not after validFrom")
    if problems:
        raise ProfileError("; ".join(problems))


@dataclass
class Installed:
    connector_id: int
    profile: ChargingProfile
    raw: Optional[dict] = None  # as it came, to be kept in the charge point's state


class ProfileStore:
    """The profiles installed on a one-connector charge point and the limit they put in force."""

    def __init__(self, default_limit: float, *, voltage: float = 230.0, speed: float = 1.0) -> None:
        self.default_limit = default_limit
        self.voltage = voltage
        self.speed = speed
        self.installed: list[Installed] = []
        self._ranked_of: list[Installed] | None = None
        self._ranking: dict[tuple[str, int], list[ChargingProfile]] = {}

    def install(self, connector_id: int, profile: ChargingProfile,
                transaction_id: Optional[int] = None, transaction_running: bool = False,
                raw: Optional[Mapping[str, Any]] = None) -> None:
        """Install ``profile`` (replacing one with its id or its stack level and purpose).

        Raises ProfileError when the connector or the transaction does not fit it.
        """
        if connector_id not in (0, 1):
            raise ProfileError(f"no connector {connector_id}")
        if profile.purpose == "ChargePointMaxProfile" and connector_id != 0:
            raise ProfileError("a ChargePointMaxProfile belongs on connector 0")
        if profile.purpose == "TxProfile":
            if connector_id == 0:
                raise ProfileError("a TxProfile needs a connector")
            if not transaction_running:
                raise ProfileError("a TxProfile needs a transaction in progress")
            if profile.transaction_id is not None and profile.transaction_id != transaction_id:
                raise ProfileError(f"transaction {profile.transaction_id} is not in progress")
        kept = [i for i in self.installed
                if i.profile.id != profile.id
                and (i.profile.stack_level, i.profile.purpose, i.connector_id)
                != (profile.stack_level, profile.purpose, connector_id)]
        if len(kept) >= MAX_PROFILES:
            raise ProfileError(f"already {MAX_PROFILES} profiles installed")
        self.installed = kept + [Installed(connector_id, profile,
                                           dict(raw) if raw is not None else None)]

    def clear(self, profile_id: Optional[int] = None, connector_id: Optional[int] = None,
              purpose: Optional[str] = None, stack_level: Optional[int] = None) -> int:
        """Remove the profiles that match (by id alone when it is given); returns how many."""
        def matches(i: Installed) -> bool:
            if profile_id is not None:
                return i.profile.id == profile_id
            return ((connector_id is None or i.connector_id == connector_id)
                    and (purpose is None or i.profile.purpose == purpose)
                    and (stack_level is None or i.profile.stack_level == stack_level))
        before = len(self.installed)
        self.installed = [i for i in self.installed if not matches(i)]
        return before - len(self.installed)

    def end_transaction(self) -> None:
        """A TxProfile lives as long as its transaction."""
        self.clear(purpose="TxProfile")

    def limit(self, now: datetime, transaction_start: Optional[datetime] = None, *,
              origin: Optional[datetime] = None) -> float:
        """The limit in A in force on connector 1 at ``now``.

        The TxProfile of the running transaction wins over the TxDefaultProfile (connector 1
        over connector 0); the highest stack level in force wins within a purpose; a
        ChargePointMaxProfile caps the result; without any, the default limit. Without a
        transaction a Relative profile counts from ``origin`` (default: ``now``).
        """
        def top(purpose: str, connectors: tuple[int, ...]) -> Optional[float]:
            for connector in connectors:
                for profile in self._ranked(purpose, connector):
                    amps = profile.limit_at(now, speed=self.speed, voltage=self.voltage,
                                            transaction_start=transaction_start or origin)
                    if amps is not None:
                        return amps
            return None

        amps = None
        if transaction_start is not None:
            amps = top("TxProfile", (1,))
        if amps is None:
            amps = top("TxDefaultProfile", (1, 0))
        if amps is None:
            amps = self.default_limit
        cap = top("ChargePointMaxProfile", (0,))
        return round(min(amps, cap) if cap is not None else amps, 1)

    def _ranked(self, purpose: str, connector: int) -> list[ChargingProfile]:
        """The profiles of ``purpose`` on ``connector``, highest stack level first: sorted again
        only once the installed ones change (a change puts a new list in place), not at each
        of the several limits a charge point works out a second."""
        if self._ranked_of is not self.installed:
            self._ranked_of, self._ranking = self.installed, {}
        key = (purpose, connector)
        if key not in self._ranking:
            self._ranking[key] = sorted((i.profile for i in self.installed
                                         if i.profile.purpose == purpose
                                         and i.connector_id == connector),
                                        key=lambda p: p.stack_level, reverse=True)
        return self._ranking[key]

    def composite(self, now: datetime, duration_s: int, unit: str = "A",
                  transaction_start: Optional[datetime] = None) -> list[Period]:
        """The composite schedule from ``now`` for ``duration_s`` simulated seconds: the limit
        :meth:`limit` puts in force, as periods in ``unit`` (A, or W at the nominal voltage).
        Without a transaction a Relative profile counts from ``now``."""
        if unit not in UNITS:
            raise ProfileError(f"unknown charging rate unit {unit!r}")
        origin = transaction_start or now
        points = {0}
        for installed in self.installed:
            points |= installed.profile.breakpoints(now, duration_s, speed=self.speed,
                                                    transaction_start=origin)
        periods: list[Period] = []
        for offset in sorted(points):
            amps = self.limit(now + timedelta(seconds=offset / self.speed), transaction_start,
                              origin=origin)
            value = round(amps if unit == "A" else amps * self.voltage, 1)
            if not periods or periods[-1].limit != value:
                periods.append(Period(offset, value))
        return periods
