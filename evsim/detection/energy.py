"""The energy register against itself and against the power delivered: METER_FREEZE,
ENERGY_REGISTER_DECREASE and ENERGY_MISMATCH.

The expected energy is the power of each sample held until the next (as the charge point's own
meter integrates it), never across a gap. The register's resolution is learned as the greatest
common divisor of its steps (to the mWh), so a meter that counts whole Wh or tens of Wh is
judged by what it can show.

- Decrease: the register is lower than the sample before by more than ``decrease_wh``. The
  episode lasts while decreases keep coming within ``clear_s``.
- Freeze: during a transaction the register has not moved for ``hold_s`` while the expected
  energy over that time is at least ``freeze_wh`` (and four register steps). Ends when it moves.
- Mismatch: over a sliding window of up to ``window_s`` (at least ``min_span_s`` and
  ``min_wh``), the register's increase differs from the expected one by more than ``tolerance``
  plus ``z`` standard errors (the current's noise over the window, the register's resolution);
  the episode goes on while it differs by half the tolerance.
  A decrease, a freeze or a gap restarts the window, and no mismatch is judged while either of
  the other two is open: each fault is one anomaly, of its own kind.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional

from evsim.detection.episodes import Episode
from evsim.detection.noise import NoiseEstimator
from evsim.detection.observations import Finding


@dataclass(frozen=True)
class EnergyConfig:
    decrease_wh: float = 0.05
    clear_s: float = 30.0
    hold_s: float = 10.0
    freeze_wh: float = 5.0
    window_s: float = 90.0
    min_span_s: float = 45.0
    min_wh: float = 20.0
    tolerance: float = 0.08
    z: float = 5.0
    max_step_s: float = 10.0  # a longer interval between samples is not integrated
    every_s: float = 1.0


class EnergyDetector:
    """One connector's energy register."""

    def __init__(self, config: Optional[EnergyConfig] = None) -> None:
        self.config = config or EnergyConfig()
        self.decrease = Episode("ENERGY_REGISTER_DECREASE", clear_s=self.config.clear_s,
                                severity="HIGH")
        self.freeze = Episode("METER_FREEZE", severity="HIGH")
        self.mismatch = Episode("ENERGY_MISMATCH")
        self._power = NoiseEstimator(blocks=32, floor=1.0)
        self._last: Optional[tuple[float, Optional[float], Optional[float]]] = None
        self._expected = 0.0  # Wh integrated so far
        self._quantum_mwh = 0  # the register's resolution: the gcd of its steps, in mWh
        self._session = False
        self._moved: Optional[tuple[float, float]] = None  # (t, register) it last moved
        self._recent: deque[tuple[float, float]] = deque()  # (t, expected) for the freeze
        self._window: deque[tuple[float, float, float]] = deque()  # (t, register, expected)
        self._judged = -math.inf

    def session(self, t: float, open_: bool) -> list[Finding]:
        self._session = open_
        self._restart()
        if open_:
            return []
        return [f for f in (self.freeze.close(t, "session ended"),
                            self.mismatch.close(t, "session ended"),
                            self.decrease.close(t, "session ended")) if f]

    def gap(self) -> None:
        """The charge point's clock jumped: do not integrate across."""
        self._last = None
        self._restart()

    def update(self, t: float, register: Optional[float], power: Optional[float]
               ) -> list[Finding]:
        """A sample at ``t``: the register (Wh) and the power (W), either may be absent."""
        found: list[Optional[Finding]] = []
        last = self._last
        if last is not None and t - last[0] > self.config.max_step_s:
            self._restart()  # nothing is known of the energy delivered meanwhile
        elif last is not None and last[2] is not None and t > last[0]:
            self._expected += last[2] * (t - last[0]) / 3600
        if power is not None:
            self._power.add(power)
        if register is not None and last is not None and last[1] is not None:
            step = round((register - last[1]) * 1000)
            if step > 0:
                self._quantum_mwh = math.gcd(self._quantum_mwh, step)
            found += self._check_decrease(t, register, last[1])
        self._last = (t, register if register is not None else (last[1] if last else None),
                      power)
        if register is None:
            self._restart()
        elif self._session:
            found += self._check_freeze(t, register)
            found += self._check_mismatch(t, register)
        if self.decrease.active:
            found.append(self.decrease.step(t, False))  # ends clear_s after the last decrease
        return [f for f in found if f]

    def close(self, t: float) -> list[Finding]:
        return [f for f in (self.freeze.close(t), self.mismatch.close(t), self.decrease.close(t))
                if f]

    @property
    def _step_wh(self) -> float:
        """The register's resolution (0.1 Wh until a step shows it)."""
        return self._quantum_mwh / 1000 if self._quantum_mwh else 0.1

    def _restart(self) -> None:
        self._moved = None
        self._recent.clear()
        self._window.clear()

    def _stalling(self) -> bool:
        """The register should have moved since it last did, and has not."""
        moved = self._moved
        if moved is None or not self._recent:
            return False
        since = next((e for at, e in self._recent if at >= moved[0]), self._expected)
        return self._expected - since >= 2 * self._step_wh + 1.0

    def _check_decrease(self, t: float, register: float, before: float) -> list[Finding]:
        if register >= before - self.config.decrease_wh:
            return []
        self._restart()
        found = self.decrease.step(t, True, f"energy register fell from {before:.1f} Wh to "
                                   f"{register:.1f} Wh",
                                   {"current_value": register, "expected_value": before,
                                    "deviation": round(register - before, 2)})
        return [found] if found else []

    def _check_freeze(self, t: float, register: float) -> list[Finding]:
        config, recent = self.config, self._recent
        moved = self._moved
        recent.append((t, self._expected))
        while len(recent) > 2 and recent[1][0] <= t - config.hold_s:
            recent.popleft()
        if moved is None or register > moved[1] + self._step_wh / 2:
            self._moved = (t, register)
            if self.freeze.active:
                self._window.clear()
                return [f for f in (self.freeze.close(t, "register moves again"),) if f]
            return []
        if self.freeze.active:
            return []
        expected = self._expected - recent[0][1]
        frozen = (t - moved[0] >= config.hold_s and t - recent[0][0] >= config.hold_s
                  and expected >= max(config.freeze_wh, 4 * self._step_wh))
        if not frozen:
            return []
        self._window.clear()
        found = self.freeze.step(t, True, f"energy register stuck at {register:.1f} Wh for "
                                 f"{t - moved[0]:.0f} s while {expected:.1f} Wh were delivered",
                                 {"current_value": register,
                                  "expected_value": round(register + expected, 1),
                                  "deviation": round(-expected, 1)})
        return [found] if found else []

    def _check_mismatch(self, t: float, register: float) -> list[Finding]:
        config, window = self.config, self._window
        if self.freeze.active or self.decrease.active:
            window.clear()
            return []
        if self._stalling():
            return []  # a freeze may be forming: it is the freeze detector's to judge
        window.append((t, register, self._expected))
        while len(window) > 2 and window[1][0] <= t - config.window_s:
            window.popleft()
        if t - self._judged < config.every_s:
            return []
        self._judged = t
        t0, register0, expected0 = window[0]
        span, delivered, counted = t - t0, self._expected - expected0, register - register0
        if span < config.min_span_s or delivered < max(config.min_wh, 50 * self._step_wh):
            found = self.mismatch.step(t, False) if self.mismatch.active else None
            return [found] if found else []
        mean_power = delivered * 3600 / span
        error = (self._power.sigma / mean_power / math.sqrt(len(window))
                 + 2 * self._step_wh / delivered)
        ratio = counted / delivered
        # to start, surely off; to go on, off by half the tolerance (one episode, not many)
        bar = config.tolerance / 2 if self.mismatch.active else config.tolerance + config.z * error
        off = abs(ratio - 1) > bar
        found = self.mismatch.step(
            t, off, f"energy register grew {counted:.1f} Wh while {delivered:.1f} Wh were "
            f"delivered over {span:.0f} s ({(ratio - 1) * 100:+.0f} %)",
            {"current_value": round(counted, 1), "expected_value": round(delivered, 1),
             "deviation": round(counted - delivered, 1)})
        return [found] if found else []
