"""The charger-side faults as a :class:`~evsim.charger.model.Charger` that misbehaves on cue.

:class:`FaultyCharger` is the power module's model with the faults of ``charger_module.py
--inject`` built in, each armed by its :class:`~evsim.faults.labels.Window` and labelled while
it shows:

- ``oscillation``: the control loop hunts: its output alternates every half ``period`` between
  its current and ``amplitude`` A below (never above the limit, so it is no over-current),
  phase from the seed. A square wave, so a meter sampling it once a second sees the whole
  amplitude down to a period of 2 s, where a sine would alias.
- ``over-current``: the loop settles at ``factor`` x the limit instead of the limit.
- ``ignore-limit``: a lowered 0x210 is not followed (a raised one is); the last request is
  applied once the fault is over.
- ``dropout``: the output and the loop fall to 0 A although the charger is still charging.

Time comes from the injected ``sim``/``now`` callables (the node's clock, or a test's), so the
model stays pure and a run at ``--speed 10`` misbehaves as one at ``--speed 1``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Optional

from evsim.charger.model import DEFAULT_MAX_CURRENT, Charger
from evsim.faults.kinds import CHARGER, FaultSpec
from evsim.faults.labels import OnLabel, Window

SHOWING_MARGIN_A = 0.5  # how far above a request an ignored limit must leave the current


class FaultyCharger(Charger):
    """A charger model whose faults are armed by simulated time and labelled while they show."""

    def __init__(self, specs: Sequence[FaultSpec], *, sim: Callable[[], float],
                 now: Callable[[], datetime], on_label: OnLabel, charge_point_id: str,
                 seed: Optional[int] = None, speed: float = 1.0, source: str = "charger",
                 max_current: float = DEFAULT_MAX_CURRENT, ramp: float = 0.2) -> None:
        super().__init__(max_current, ramp)
        for spec in specs:
            if spec.info.process != CHARGER:
                raise ValueError(f"{spec.kind} is injected by {spec.info.process}, not {CHARGER}")
        self._sim, self._now = sim, now
        self.windows = [Window(spec, charge_point_id, source, seed, on_label, speed, index)
                        for index, spec in enumerate(specs)]
        self._phase = {id(w): w.rng.random() for w in self.windows}
        self._over: Optional[float] = None

    def _of(self, kind: str) -> list[Window]:
        return [w for w in self.windows if w.spec.kind == kind]

    @property
    def ceiling(self) -> float:
        return self.limit * self._over if self._over is not None else self.limit

    def set_limit(self, amps: float) -> float:
        self.requested = min(max(amps, 0.0), self.max_current)
        t = self._sim()
        if self.requested < self.limit and any(w.armed(t, self.charging)
                                          for w in self._of("ignore-limit")):
            self._show_ignored(t)
            return self.limit
        return super().set_limit(amps)

    def tick(self, seconds: float = 1.0) -> float:
        t, now = self._sim(), self._now()
        armed = {id(w): w.armed(t, self.charging) and self.charging for w in self.windows}
        over = [w for w in self._of("over-current") if armed[id(w)]]
        self._over = max((w.spec.params["factor"] for w in over), default=None)
        for window in self._of("over-current"):
            window.show(t, now, armed[id(window)] and self.limit > 0)
        self._follow_requests(t)
        current = super().tick(seconds)
        for window in self._of("dropout"):
            if window.show(t, now, armed[id(window)]):
                self.current = current = 0.0
        for window in self._of("oscillation"):
            if window.show(t, now, armed[id(window)]):
                current = self._swing(window, t, current)
        self._show_ignored(t, now)
        return current

    def close(self) -> None:
        """Shutdown: hand over the labels still open."""
        t, now = self._sim(), self._now()
        for window in self.windows:
            window.close(t, now)

    def _follow_requests(self, t: float) -> None:
        """Once no ignore-limit fault is armed, the last request is applied."""
        if self.requested == self.limit:
            return
        if not any(w.armed(t, self.charging) for w in self._of("ignore-limit")):
            super().set_limit(self.requested)

    def _show_ignored(self, t: float, now: Optional[datetime] = None) -> None:
        ignored = (self.charging and self.requested < self.limit
                   and self.current > self.requested + SHOWING_MARGIN_A)
        for window in self._of("ignore-limit"):
            armed = window.armed(t, self.charging)
            window.show(t, now or self._now(), ignored and armed)

    def _swing(self, window: Window, t: float, current: float) -> float:
        """The loop's current, or ``amplitude`` A below it in the other half of each period."""
        amplitude, period = window.spec.params["amplitude"], window.spec.params["period"]
        begin = (window.origin or 0.0) + window.spec.after
        phase = ((t - begin) / period + self._phase[id(window)]) % 1.0
        swung = current - amplitude if phase >= 0.5 else current
        return min(max(swung, 0.0), self.ceiling)
