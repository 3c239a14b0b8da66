"""The charger as a CAN node, in asyncio: commands in through :meth:`ChargerNode.on_frame`,
the measured current out on 0x300 every period.

The period is in simulated seconds and the ticks fall on absolute deadlines of the injected
clock, so ``--speed`` divides the period and a slow send does not stretch it. The link is
anything with an ``async send(msg)`` (a :class:`~evsim.canbus.link.CanLink` in the process, a
fake in tests). While its ``up`` says the bus is down the charger does not tick, as before the
move to asyncio: no commands can reach it, and the terminal keeps the one line that says why.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Optional, Protocol

import can

from evsim.canbus import frames
from evsim.charger.model import Charger
from evsim.clock import Clock

log = logging.getLogger("charger")

OnCommand = Callable[[frames.Frame, str], None]


class Link(Protocol):
    async def send(self, msg: can.Message) -> Any: ...


class ChargerNode:
    """A :class:`Charger` on the bus: obeys 0x200/0x201/0x210 and publishes 0x300."""

    def __init__(self, charger: Charger, clock: Clock, period_s: float,
                 on_command: Optional[OnCommand] = None) -> None:
        if not period_s > 0:
            raise ValueError(f"period must be positive, got {period_s}")
        self.charger = charger
        self.clock = clock
        self.period_s = period_s
        self.on_command = on_command
        self.ticks = 0

    def on_frame(self, frame: frames.Frame) -> Optional[str]:
        """Apply a decoded frame; returns what the command did, or None for a frame not for us."""
        described = self.charger.handle(frame)
        if described:
            log.info("command 0x%03X %s", frame.arbitration_id, described)
            if self.on_command is not None:
                self.on_command(frame, described)
        return described

    def close(self) -> None:
        """Shutdown: a charger with injected faults hands over the labels still open."""
        close = getattr(self.charger, "close", None)
        if close is not None:
            close()

    async def tick(self, link: Link) -> Optional[float]:
        """One period: move the current and publish it; nothing while the bus is down."""
        if not getattr(link, "up", True):
            return None
        amps = self.charger.tick(self.period_s)
        self.ticks += 1
        log.info("%-8s target %6.1f A  current %6.1f A", self.charger.state, self.charger.target,
                 amps)
        await link.send(frames.measured_current(amps))
        return amps

    async def publish(self, link: Link) -> None:
        """Tick every period, forever, on deadlines counted from the start: a tick that comes
        late (a loaded machine) is not made up for, and the next one keeps its deadline."""
        deadline = self.clock.sim() + self.period_s
        while True:
            await self.clock.sleep(deadline - self.clock.sim())
            await self.tick(link)
            deadline = max(deadline + self.period_s, self.clock.sim())
