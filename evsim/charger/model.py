"""The charger's power module as pure state: a ramp toward a target, moved by explicit ticks.

No clock and no bus, so a test (or a signal generator) drives it tick by tick; the CAN node in
:mod:`evsim.charger.node` decides when a tick happens.
"""
from __future__ import annotations

import logging
from typing import Optional

from evsim.canbus import frames

DEFAULT_MAX_CURRENT = 125.0
RESOLUTION = frames.AMPS_PER_BIT

log = logging.getLogger("charger")


class Charger:
    """The ramp and state of the power module, driven by explicit ticks."""

    def __init__(self, max_current: float = DEFAULT_MAX_CURRENT, ramp: float = 0.2) -> None:
        if not 0 < ramp <= 1:
            raise ValueError(f"ramp must be in (0, 1], got {ramp}")
        if not max_current > 0:
            raise ValueError(f"max current must be positive, got {max_current}")
        self.max_current = max_current
        self.ramp = ramp
        self.limit = self.requested = max_current
        self.charging = False
        self.current = 0.0

    @property
    def state(self) -> str:
        return "CHARGING" if self.charging else "STOPPED"

    @property
    def ceiling(self) -> float:
        """The most current the control loop lets through: the limit (a fault may raise it)."""
        return self.limit

    @property
    def target(self) -> float:
        return self.ceiling if self.charging else 0.0

    def start(self) -> None:
        self.charging = True

    def stop(self) -> None:
        self.charging = False

    @property
    def commanded(self) -> tuple[bool, float]:
        """What the commands so far asked for: a command that leaves this alone is a repeat."""
        return self.charging, self.requested

    def set_limit(self, amps: float) -> float:
        """Apply a limit, clamped to ``[0, max_current]``; returns the limit in force."""
        self.limit = self.requested = min(max(amps, 0.0), self.max_current)
        return self.limit

    def tick(self, seconds: float = 1.0) -> float:
        """Advance ``seconds`` of simulated time and return the new measured current.

        The current closes ``ramp`` of its gap to the target per simulated second, whatever the
        period (so ``--period`` sets only the resolution: ten ticks of 0.1 s close what one of
        1 s does), snaps to the target once within the frame resolution (so it arrives instead
        of creeping forever), and never exceeds the limit (the :attr:`ceiling`).
        """
        target = self.target
        gap = target - self.current
        closed = 1.0 - (1.0 - self.ramp) ** seconds
        self.current = target if abs(gap) <= RESOLUTION else self.current + closed * gap
        self.current = min(max(self.current, 0.0), self.ceiling)
        return self.current

    def handle(self, frame: frames.Frame) -> Optional[str]:
        """Apply a command frame; returns a line describing it, or None for a frame not for us."""
        if frame.arbitration_id == frames.START:
            self.start()
            return "start"
        if frame.arbitration_id == frames.STOP:
            self.stop()
            return "stop"
        if frame.arbitration_id == frames.SET_LIMIT:
            applied = self.set_limit(frame.amps)
            if applied < frame.amps:
                log.warning("limit %.1f A is above the maximum %.1f A: clamped", frame.amps,
                            self.max_current)
            return f"set limit {applied:.1f} A"
        return None
