#!/usr/bin/env python3
"""The charger's power electronics as a CAN node.

Obeys 0x200 start, 0x201 stop and 0x210 current limit, and every period moves the measured
current a fraction of the way toward its target and publishes it on 0x300. Each command is
recorded in the MemoryBank as a CAN_FRAME event under the source ``charger``.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Optional

from evsim import cli
from evsim.bank import MemoryBankError
from evsim.bank.writer import BankWriter
from evsim.canbus import bus as canbus
from evsim.canbus import frames
from evsim.canbus.link import CanLink
from evsim.charger.model import DEFAULT_MAX_CURRENT, Charger
from evsim.charger.node import ChargerNode, OnCommand
from evsim.clock import Clock
from evsim.constants import CHARGER_PERIOD_S

PROG = "charger_module.py"
SOURCE = "charger"

log = logging.getLogger("charger")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(PROG, __doc__.splitlines()[0], can_bus=True)
    parser.add_argument("--period", type=cli.positive_float, default=CHARGER_PERIOD_S,
                        metavar="S", help="seconds between 0x300 frames, before --speed "
                                          f"(default: {CHARGER_PERIOD_S})")
    parser.add_argument("--ramp", type=cli.fraction, default=0.2, metavar="FRACTION",
                        help="fraction of the gap to the target closed each period, 0-1 "
                             "(default: 0.2)")
    parser.add_argument("--max-current", type=cli.positive_float, default=DEFAULT_MAX_CURRENT,
                        metavar="A", help="highest limit obeyed; higher ones are clamped "
                                          "(default: 125)")
    return parser


def recorder(writer: BankWriter) -> OnCommand:
    """Records a command the charger obeyed as a CAN_FRAME event."""
    def record(frame: frames.Frame, described: str) -> None:
        writer.event("CAN_FRAME", f"received 0x{frame.arbitration_id:03X} {described}",
                     {"id": f"0x{frame.arbitration_id:03X}", "name": frame.name,
                      "amps": frame.amps, "direction": "received"})
    return record


async def amain(args: argparse.Namespace, supervisor: cli.Supervisor,
                clock: Optional[Clock] = None) -> None:
    config = cli.can_config(args)
    clock = clock or Clock(args.speed)
    try:
        writer = BankWriter(args.db, SOURCE, clock.now)
    except (MemoryBankError, OSError) as exc:
        raise cli.SimError(f"MemoryBank: {exc}") from None
    node = ChargerNode(Charger(args.max_current, args.ramp), clock, args.period,
                       on_command=recorder(writer))
    link = CanLink(config, node.on_frame, name=SOURCE)
    log.info("charger module: period %gs (%.3fs at speed %g), ramp %.2f, max %.1f A, bus %s",
             args.period, clock.wall_seconds(args.period), args.speed, args.ramp,
             args.max_current, canbus.describe(config))
    writer.event("PROCESS_START", "charger module started",
                 {"period": args.period, "ramp": args.ramp, "max_current": args.max_current,
                  "speed": args.speed, "can": canbus.describe(config)})
    try:
        supervisor.start(link.run(), "CAN link")
        supervisor.start(node.publish(link), "0x300 publisher")
        await supervisor.stop.wait()
    finally:
        link.close()
        await supervisor.cancel()
        writer.event("PROCESS_STOP", "charger module stopped")
        writer.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(lambda args: cli.run_async(amain, args), build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
