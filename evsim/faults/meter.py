"""The charge point's faults as pure transforms of what it reports: readings, timestamps, statuses.

The charge point keeps measuring truthfully and asks these objects what to *send*:

- :meth:`MeterFaults.apply` for every MeterValues sample: the reading to send (its timestamp and
  energy register possibly altered) or None (a ``meter-gap`` swallows it);
- :meth:`MeterFaults.timestamp` for every other timestamp it sends (StatusNotification,
  Start/StopTransaction), so a skewed clock is skewed everywhere;
- :meth:`StatusFaults.status` at least once a second with the true connector status: the status
  to show (send a StatusNotification whenever it differs from the last one sent).

Each fault shows only during a transaction (``status-flap`` only while the true status is
Charging), counts ``after=`` from the first one, and labels the intervals in which it shows. A
register that a fault moved stays moved: after a freeze or a drift the register carries on from
where it was, as a real meter's would, rather than jumping back.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple, Optional

from evsim.faults.kinds import CHARGE_POINT, FaultSpec
from evsim.faults.labels import OnLabel, Window

METER_KINDS = ("meter-freeze", "meter-backwards", "energy-drift", "clock-skew", "meter-gap")
STATUS_KINDS = ("status-flap",)
FLOWING_A = 1.0  # a register that does not move shows only while at least this much flows
FLAP_STATUSES = ("SuspendedEVSE", "Faulted")


class Reading(NamedTuple):
    """What the charge point sends for one sample."""

    timestamp: datetime
    amps: float
    energy_wh: float


def _windows(specs: Sequence[FaultSpec], kinds: Sequence[str], charge_point_id: str,
             on_label: OnLabel, seed: Optional[int], speed: float, source: str) -> list[Window]:
    windows = []
    for index, spec in enumerate(specs):
        if spec.info.process != CHARGE_POINT or spec.kind not in kinds:
            raise ValueError(f"{spec.kind} is not a fault of this part of {CHARGE_POINT} "
                             f"(valid: {', '.join(kinds)})")
        windows.append(Window(spec, charge_point_id, source, seed, on_label, speed, index))
    return windows


class MeterFaults:
    """The meter and clock faults of one charge point (``meter-*``, ``energy-drift``,
    ``clock-skew``)."""

    def __init__(self, specs: Sequence[FaultSpec], *, charge_point_id: str, on_label: OnLabel,
                 seed: Optional[int] = None, speed: float = 1.0, source: str = "cp") -> None:
        self.speed = speed
        self.windows = _windows(specs, METER_KINDS, charge_point_id, on_label, seed, speed,
                                source)
        self._offset_wh = 0.0
        self._last_true: Optional[float] = None
        self._next_step: dict[int, float] = {}
        self._skew_s = 0.0

    def apply(self, t_sim: float, now: datetime, amps: float, energy_wh: float,
              in_transaction: bool) -> Optional[Reading]:
        """The reading to send for a true sample taken at ``t_sim`` (simulated s) / ``now``
        (wall UTC), or None to send nothing."""
        delta = 0.0 if self._last_true is None else energy_wh - self._last_true
        self._last_true = energy_wh
        flowing = amps >= FLOWING_A
        skew_s, dropped = 0.0, False
        for window in self.windows:
            armed = window.armed(t_sim, in_transaction) and in_transaction
            kind, params = window.spec.kind, window.spec.params
            if kind == "meter-freeze":
                if armed:
                    self._offset_wh -= delta
                window.show(t_sim, now, armed and flowing)
            elif kind == "energy-drift":
                if armed:
                    self._offset_wh += delta * params["percent"] / 100
                window.show(t_sim, now, armed and flowing)
            elif kind == "meter-backwards":
                self._step_down(window, t_sim, armed, energy_wh)
                window.show(t_sim, now, armed)
            elif kind == "clock-skew":
                skew_s += params["minutes"] * 60 if armed else 0.0
                window.show(t_sim, now, armed)
            else:  # meter-gap
                dropped = dropped or armed
                window.show(t_sim, now, armed)
        self._skew_s = skew_s
        if dropped:
            return None
        register = max(0.0, energy_wh + self._offset_wh)
        return Reading(self.timestamp(t_sim, now), amps, register)

    def timestamp(self, t_sim: float, now: datetime) -> datetime:
        """Any timestamp the charge point sends, as its (possibly skewed) clock has it: a skew is
        in simulated seconds, so it is divided by the speed on the wall clock."""
        return now + timedelta(seconds=self._skew_s / self.speed) if self._skew_s else now

    def close(self, t_sim: float, now: datetime) -> None:
        for window in self.windows:
            window.close(t_sim, now)

    def _step_down(self, window: Window, t: float, armed: bool, energy_wh: float) -> None:
        """A step down of ``step`` Wh every ``every`` s, never below 0 Wh (a meter reset)."""
        key = window.index
        if not armed:
            self._next_step.pop(key, None)
            return
        due = self._next_step.setdefault(key, t)
        while t >= due:
            self._offset_wh = max(self._offset_wh - window.spec.params["step"], -energy_wh)
            due += window.spec.params["every"]
        self._next_step[key] = due


class StatusFaults:
    """``status-flap``: while the connector is truly Charging, it is shown flipping to
    SuspendedEVSE or Faulted and back every ``every`` s (the first flip at the onset)."""

    def __init__(self, specs: Sequence[FaultSpec], *, charge_point_id: str, on_label: OnLabel,
                 seed: Optional[int] = None, speed: float = 1.0, source: str = "cp") -> None:
        self.windows = _windows(specs, STATUS_KINDS, charge_point_id, on_label, seed, speed,
                                source)
        self._first = {w.index: w.rng.randrange(len(FLAP_STATUSES)) for w in self.windows}

    def status(self, t_sim: float, now: datetime, status: str) -> str:
        """The status to show at ``t_sim`` for the true ``status``."""
        shown = status
        charging = status == "Charging"
        for window in self.windows:
            if not window.show(t_sim, now, window.armed(t_sim, charging) and charging):
                continue
            begin = (window.origin or 0.0) + window.spec.after
            flips = int((t_sim - begin) // window.spec.params["every"])
            if flips % 2 == 0:
                shown = FLAP_STATUSES[(flips // 2 + self._first[window.index])
                                      % len(FLAP_STATUSES)]
        return shown

    def close(self, t_sim: float, now: datetime) -> None:
        for window in self.windows:
            window.close(t_sim, now)


def charge_point_faults(specs: Sequence[FaultSpec], **kwargs) -> tuple[MeterFaults, StatusFaults]:
    """Split the charge point's ``--inject`` faults between the meter and the status."""
    meter = [spec for spec in specs if spec.kind in METER_KINDS]
    status = [spec for spec in specs if spec.kind in STATUS_KINDS]
    other = [spec.kind for spec in specs if spec.kind not in METER_KINDS + STATUS_KINDS]
    if other:
        raise ValueError(f"not faults of {CHARGE_POINT}: {', '.join(other)}")
    return MeterFaults(meter, **kwargs), StatusFaults(status, **kwargs)
