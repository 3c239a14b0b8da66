"""The charge point's side of the CAN bus: it commands the charger and meters what it publishes.

The charger is known only by its 0x300 frames: each one feeds the energy register, and
SILENT_PERIODS periods without one (and SILENCE_FLOOR_WALL_S wall seconds) mean the charger is
gone (the connector shows Faulted).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import can

from evsim.canbus import frames
from evsim.clock import Clock, Schedule, run_schedules
from evsim.constants import SILENT_PERIODS
from evsim.cp.meter import EnergyMeter

log = logging.getLogger("cp")


class Link(Protocol):
    @property
    def up(self) -> bool: ...

    async def send(self, msg: can.Message) -> bool: ...


RUN, LIMIT = "run", "limit"


class ChargerBridge:
    """Frames out (start, stop, limit) and 0x300 in; ``period_s`` is the charger's period in
    simulated seconds. ``record(event_type, description, data)`` keeps what was sent.

    The bridge holds what the charge point wants of the charger (:attr:`charging`,
    :attr:`limit`). A change is sent at once; :meth:`keep_alive` repeats the whole of it every
    command cycle, so that the charger's watchdog hears it, and so that a frame that could not
    be sent (the bus down) arrives one cycle later. A frame is recorded when it differs from the
    last one of its kind that went out: what was delivered decides, not what was meant when
    the frame was made, since a repeat made before a change may go out just before it.
    """

    def __init__(self, meter: EnergyMeter, clock: Clock, period_s: float,
                 record: Callable[[str, str, Any], None], link: Link | None = None) -> None:
        self.meter = meter
        self.clock = clock
        self.period_s = period_s
        self.record = record
        self.link = link
        self.silent = False
        self.last_frame_at = clock.sim()
        self.charging = False
        self.limit: float | None = None
        self.delivered: dict[str, tuple[int, bytes]] = {}

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
        """True the first time the charger has been silent for SILENT_PERIODS periods (and
        SILENCE_FLOOR_WALL_S wall seconds)."""
        silent_for = self.clock.sim() - self.last_frame_at
        if self.silent or silent_for <= self.clock.silence(SILENT_PERIODS * self.period_s):
            return False
        self.silent = True
        log.warning("charger silent for %.1f s (simulated): Faulted", silent_for)
        return True

    async def set_charging(self, charging: bool) -> None:
        """Start (0x200) or stop (0x201) the charger."""
        self.charging = charging
        await self._deliver(RUN)

    async def apply_limit(self, limit: float, force: bool = False) -> None:
        """Send 0x210 when ``limit`` differs from the one wanted so far (always, with ``force``)."""
        if force or limit != self.limit:
            self.limit = limit
            await self._deliver(LIMIT)

    async def resync(self, limit: float, charging: bool) -> None:
        """A (re)opened bus or a charger back: it may have missed anything, so tell it all."""
        self.limit, self.charging = limit, charging
        log.info("telling the charger everything again: limit %.1f A, %s", limit,
                 "start" if charging else "stop")
        await self.repeat()

    async def repeat(self) -> None:
        """The whole wanted state, limit first."""
        for kind in (LIMIT, RUN):
            await self._deliver(kind)

    async def keep_alive(self) -> None:
        """:meth:`keep_alive_schedule` in a task of its own."""
        await run_schedules([self.keep_alive_schedule()], self.clock)

    async def keep_alive_schedule(self, start: float | None = None) -> Schedule:
        """:meth:`repeat` every command cycle (the DBC's ``GenMsgCycleTime``) from ``start``
        (default: now), on deadlines."""
        deadline = self.clock.sim() if start is None else start
        while True:
            yield deadline
            if self.up:
                await self.repeat()
            deadline = max(deadline + frames.COMMAND_CYCLE_S, self.clock.sim())

    async def _deliver(self, kind: str) -> None:
        if kind == LIMIT and self.limit is None:
            return
        msg = (frames.set_limit(self.limit) if kind == LIMIT
               else frames.start() if self.charging else frames.stop())
        sent = (msg.arbitration_id, bytes(msg.data))
        if self.link is None or not await self.link.send(msg):
            return
        if self.delivered.get(kind) == sent:
            if log.isEnabledFor(logging.DEBUG):  # a repeat each cycle: described only if shown
                frame = frames.decode(msg)
                log.debug("CAN repeated 0x%03X %s%s", msg.arbitration_id, frame.name,
                          f" {frame.amps:.1f} A" if frame.amps is not None else "")
            return
        frame = frames.decode(msg)
        amps = f" {frame.amps:.1f} A" if frame.amps is not None else ""
        self.delivered[kind] = sent
        log.info("CAN sent 0x%03X %s%s", msg.arbitration_id, frame.name, amps)
        self.record("CAN_FRAME", f"cp->charger 0x{msg.arbitration_id:03X} {frame.name}{amps}",
                    {"id": f"0x{msg.arbitration_id:03X}", "name": frame.name, "amps": frame.amps})
