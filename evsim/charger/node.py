"""The charger as a CAN node, in asyncio: commands in through :meth:`ChargerNode.on_frame`,
the measured current out on 0x300 every period.

The period is in simulated seconds and the ticks fall on absolute deadlines of the injected
clock, so ``--speed`` divides the period and a slow send does not stretch it. The link is
anything with an ``async send(msg)`` (a :class:`~evsim.canbus.link.CanLink` in the process, a
fake in tests). The power stage runs whether or not the bus is up; it publishes only when it is.

The watchdog is a real power module's safety rule: current flows only while commands keep
coming. The charge point repeats its intent every cycle; after ``watchdog_s`` simulated seconds
without a command (the charge point dead, the bus down) the charger stops and ramps to 0 A
until a start comes again. The silence must also last ``SILENCE_FLOOR_WALL_S`` wall seconds, so
that at a high ``--speed`` a charge point on a loaded machine is not cut off for being late.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Optional, Protocol

import can

from evsim.canbus import frames
from evsim.charger.model import Charger
from evsim.clock import Clock, Schedule, run_schedules

log = logging.getLogger("charger")

OnCommand = Callable[[frames.Frame, str], None]
OnWatchdog = Callable[[float], None]



class Link(Protocol):
    async def send(self, msg: can.Message) -> Any: ...


class ChargerNode:
    """A :class:`Charger` on the bus: obeys 0x200/0x201/0x210 and publishes 0x300."""

    def __init__(self, charger: Charger, clock: Clock, period_s: float,
                 on_command: Optional[OnCommand] = None,
                 watchdog_s: float = frames.WATCHDOG_TIMEOUT_S,
                 on_watchdog: Optional[OnWatchdog] = None) -> None:
        if not period_s > 0:
            raise ValueError(f"period must be positive, got {period_s}")
        self.charger = charger
        self.clock = clock
        self.period_s = period_s
        self.on_command = on_command
        self.watchdog_s = watchdog_s
        self.on_watchdog = on_watchdog
        self.last_command_at = clock.sim()
        self.ticks = 0

    def on_frame(self, frame: frames.Frame) -> Optional[str]:
        """Apply a decoded frame; returns what the command did, or None for a frame not for us.
        Only a command that changes what was asked is logged and handed to ``on_command``: the
        charge point repeats its intent every cycle."""
        before = self.charger.commanded
        described = self.charger.handle(frame)
        if described is None:
            return None
        self.last_command_at = self.clock.sim()
        if self.charger.commanded == before:
            log.debug("command 0x%03X %s (repeated)", frame.arbitration_id, described)
            return described
        log.info("command 0x%03X %s", frame.arbitration_id, described)
        if self.on_command is not None:
            self.on_command(frame, described)
        return described

    def silent_for(self) -> float:
        """Simulated seconds since the last command."""
        return self.clock.sim() - self.last_command_at

    def watch(self) -> bool:
        """Stop a charging charger whose commands stopped coming; True when it did."""
        silent = self.silent_for()
        if (not self.charger.charging or self.watchdog_s <= 0
                or silent <= self.clock.silence(self.watchdog_s)):
            return False
        self.charger.stop()
        log.warning("watchdog: no command for %.1f s (simulated): stopping, ramping to 0 A",
                    silent)
        if self.on_watchdog is not None:
            self.on_watchdog(silent)
        return True

    def close(self) -> None:
        """Shutdown: a charger with injected faults hands over the labels still open."""
        close = getattr(self.charger, "close", None)
        if close is not None:
            close()

    async def tick(self, link: Link) -> Optional[float]:
        """One period: the watchdog, then move the current and publish it. Returns the current
        published, or None while the bus is down."""
        self.watch()
        amps = self.charger.tick(self.period_s)
        self.ticks += 1
        if not getattr(link, "up", True):
            return None
        log.info("%-8s target %6.1f A  current %6.1f A", self.charger.state, self.charger.target,
                 amps)
        await link.send(frames.measured_current(amps))
        return amps

    async def publish(self, link: Link) -> None:
        """:meth:`publish_schedule` in a task of its own."""
        await run_schedules([self.publish_schedule(link)], self.clock)

    async def publish_schedule(self, link: Link, phase_s: float = 0.0,
                               start: float | None = None) -> Schedule:
        """Tick every period, forever, on deadlines counted from ``start`` (default: now) and
        ``phase_s`` later: a tick that comes late (a loaded machine) is not made up for, and
        the next one keeps its deadline."""
        deadline = (self.clock.sim() if start is None else start) + self.period_s + phase_s
        while True:
            yield deadline
            await self.tick(link)
            deadline = max(deadline + self.period_s, self.clock.sim())
