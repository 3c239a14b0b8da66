"""The charge point's side of the CAN bus: it commands the charger and meters what it publishes.

The charger is known only by its 0x300 frames: each one feeds the energy register, and
SILENT_PERIODS periods without one mean the charger is gone (the connector shows Faulted).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import can

from evsim.canbus import frames
from evsim.clock import Clock
from evsim.constants import SILENT_PERIODS
from evsim.cp.meter import EnergyMeter

log = logging.getLogger("cp")


class Link(Protocol):
    @property
    def up(self) -> bool: ...

    async def send(self, msg: can.Message) -> bool: ...


class ChargerBridge:
    """Frames out (start, stop, limit) and 0x300 in; ``period_s`` is the charger's period in
    simulated seconds. ``record(event_type, description, data)`` keeps what was sent."""

    def __init__(self, meter: EnergyMeter, clock: Clock, period_s: float,
                 record: Callable[[str, str, Any], None], link: Link | None = None) -> None:
        self.meter = meter
        self.clock = clock
        self.period_s = period_s
        self.record = record
        self.link = link
        self.silent = False
        self.last_frame_at = clock.sim()
        self.sent_limit: float | None = None
        self._limit_lock = asyncio.Lock()

    @property
    def up(self) -> bool:
        return self.link is not None and self.link.up

    def on_frame(self, frame: frames.Frame) -> bool:
        """Take a frame from the bus; True when it shows a silent charger is back."""
        if frame.arbitration_id != frames.MEASURED_CURRENT:
            return False
        self.last_frame_at = self.clock.sim()
        self.meter.update(self.last_frame_at, frame.amps)
        back, self.silent = self.silent, False
        if back:
            log.info("charger publishing again")
        return back

    def went_silent(self) -> bool:
        """True the first time the charger has been silent for SILENT_PERIODS periods."""
        silent_for = self.clock.sim() - self.last_frame_at
        if self.silent or silent_for <= SILENT_PERIODS * self.period_s:
            return False
        self.silent = True
        log.warning("charger silent for %.1f s (simulated): Faulted", silent_for)
        return True

    async def send(self, msg: can.Message) -> bool:
        if self.link is None or not await self.link.send(msg):
            return False
        frame = frames.decode(msg)
        amps = f" {frame.amps:.1f} A" if frame.amps is not None else ""
        log.info("CAN sent 0x%03X %s%s", msg.arbitration_id, frame.name, amps)
        self.record("CAN_FRAME", f"cp->charger 0x{msg.arbitration_id:03X} {frame.name}{amps}",
                    {"id": f"0x{msg.arbitration_id:03X}", "name": frame.name, "amps": frame.amps})
        return True

    async def apply_limit(self, limit: float, force: bool = False) -> None:
        """Send 0x210 when ``limit`` differs from the last one sent (always, with ``force``);
        one at a time, so two callers do not both send the same change."""
        async with self._limit_lock:
            if (force or limit != self.sent_limit) and await self.send(frames.set_limit(limit)):
                self.sent_limit = limit

    async def resync(self, limit: float, charging: bool) -> None:
        """A (re)opened bus: the charger may have missed anything, so tell it all again."""
        self.sent_limit = None
        await self.apply_limit(limit)
        if charging:
            await self.send(frames.start())
