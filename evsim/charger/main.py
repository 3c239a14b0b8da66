#!/usr/bin/env python3
"""The charger's power electronics as a CAN node.

Obeys 0x200 start, 0x201 stop and 0x210 current limit, and every period moves the measured
current a fraction of the way toward its target and publishes it on 0x300.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Optional

import can

from evsim import cli
from evsim.bank import MemoryBankError
from evsim.bank.writer import BankWriter
from evsim.canbus import bus as canbus
from evsim.canbus import frames

DEFAULT_MAX_CURRENT = 125.0
RESOLUTION = frames.AMPS_PER_BIT

log = logging.getLogger("charger")


class Charger:
    """The ramp and state of the power module, driven by explicit ticks (one tick = one period)."""

    def __init__(self, max_current: float = DEFAULT_MAX_CURRENT, ramp: float = 0.2) -> None:
        if not 0 < ramp <= 1:
            raise ValueError(f"ramp must be in (0, 1], got {ramp}")
        if not max_current > 0:
            raise ValueError(f"max current must be positive, got {max_current}")
        self.max_current = max_current
        self.ramp = ramp
        self.limit = max_current
        self.charging = False
        self.current = 0.0

    @property
    def state(self) -> str:
        return "CHARGING" if self.charging else "STOPPED"

    @property
    def target(self) -> float:
        return self.limit if self.charging else 0.0

    def start(self) -> None:
        self.charging = True

    def stop(self) -> None:
        self.charging = False

    def set_limit(self, amps: float) -> float:
        """Apply a limit, clamped to ``[0, max_current]``; returns the limit in force."""
        self.limit = min(max(amps, 0.0), self.max_current)
        return self.limit

    def tick(self) -> float:
        """Advance one period and return the new measured current.

        The current closes ``ramp`` of its gap to the target each tick, snaps to the target once
        within the frame resolution (so it arrives instead of creeping forever), and never
        exceeds the limit.
        """
        gap = self.target - self.current
        self.current = self.target if abs(gap) <= RESOLUTION else self.current + self.ramp * gap
        self.current = min(max(self.current, 0.0), self.limit)
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


OnCommand = Callable[[frames.Frame, str], None]


def serve(bus: can.BusABC, charger: Charger, period: float,
          clock: Callable[[], float] = time.monotonic, on_command: Optional[OnCommand] = None
          ) -> None:
    """Obey commands from ``bus`` and publish the current every ``period`` wall seconds, forever."""
    next_tick = clock() + period
    while True:
        msg = bus.recv(timeout=max(0.0, next_tick - clock()))
        if msg is not None:
            receive(charger, msg, on_command)
        now = clock()
        if now >= next_tick:
            amps = charger.tick()
            bus.send(frames.measured_current(amps))
            log.info("%-8s target %6.1f A  current %6.1f A", charger.state, charger.target, amps)
            next_tick = max(next_tick + period, now)


def receive(charger: Charger, msg: can.Message, on_command: Optional[OnCommand] = None) -> None:
    frame = frames.decode_or_log(msg, log)
    if frame is None:
        return
    described = charger.handle(frame)
    if described:
        log.info("command 0x%03X %s", frame.arbitration_id, described)
        if on_command is not None:
            on_command(frame, described)


def build_parser():
    parser = cli.make_parser("charger_module.py", __doc__.splitlines()[0], can_bus=True)
    parser.add_argument("--period", type=cli.positive_float, default=1.0, metavar="S",
                        help="seconds between 0x300 frames, before --speed (default: 1.0)")
    parser.add_argument("--ramp", type=cli.fraction, default=0.2, metavar="FRACTION",
                        help="fraction of the gap to the target closed each period, 0-1 "
                             "(default: 0.2)")
    parser.add_argument("--max-current", type=cli.positive_float, default=DEFAULT_MAX_CURRENT,
                        metavar="A", help="highest limit obeyed; higher ones are clamped "
                                          "(default: 125)")
    return parser


def run(args) -> int:
    config = cli.can_config(args)
    charger = Charger(args.max_current, args.ramp)
    period = args.period / args.speed
    try:
        writer = BankWriter(args.db, "charger")
    except (MemoryBankError, OSError) as exc:
        raise cli.SimError(f"MemoryBank: {exc}") from None

    def record(frame: frames.Frame, described: str) -> None:
        writer.event("CAN_FRAME", f"received 0x{frame.arbitration_id:03X} {described}",
                     {"id": f"0x{frame.arbitration_id:03X}", "name": frame.name,
                      "amps": frame.amps, "direction": "received"})

    log.info("charger module: period %.3fs, ramp %.2f, max %.1f A, bus %s", period, args.ramp,
             args.max_current, canbus.describe(config))
    writer.event("PROCESS_START", "charger module started",
                 {"period": args.period, "ramp": args.ramp, "max_current": args.max_current,
                  "speed": args.speed, "can": canbus.describe(config)})
    try:
        canbus.keep_open(config, lambda bus: serve(bus, charger, period, on_command=record))
    finally:
        writer.event("PROCESS_STOP", "charger module stopped")
        writer.close()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
