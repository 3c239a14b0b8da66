#!/usr/bin/env python3
"""The charger's power electronics as a CAN node.

Obeys 0x200 start, 0x201 stop and 0x210 current limit, and every period moves the measured
current a fraction of the way toward its target and publishes it on 0x300. Each command that
changes what was asked is recorded in the MemoryBank as a CAN_FRAME event under the source
``charger``. With no command for --watchdog seconds it stops (a WATCHDOG event).

``--inject KIND[:key=value,...]`` (repeatable) with ``--seed N`` makes it misbehave on cue
(oscillation, over-current, ignore-limit, dropout: see evsim.faults), and records the ground
truth of each fault as a label of the charge point ``--id``.
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
from evsim.charger.node import ChargerNode, OnCommand, OnWatchdog
from evsim.clock import Clock
from evsim.constants import CHARGER_PERIOD_S
from evsim.faults import kinds
from evsim.faults.charger import FaultyCharger
from evsim.faults.labels import bank_recorder

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
    parser.add_argument("--watchdog", type=cli.non_negative_float,
                        default=frames.WATCHDOG_TIMEOUT_S, metavar="S",
                        help="simulated seconds without a command after which a charging "
                             "charger stops; 0: never (default: "
                             f"{frames.WATCHDOG_TIMEOUT_S:g}, the DBC's WatchdogTimeout)")
    parser.add_argument("--inject", type=inject_argument, action="append", default=[],
                        metavar="KIND[:key=value,...]", help=kinds.inject_help(kinds.CHARGER))
    parser.add_argument("--seed", type=cli.non_negative_int, default=0, metavar="N",
                        help="seed of the injected faults (default: 0)")
    parser.add_argument("--id", default="CP_1", metavar="ID",
                        help="the charge point this charger belongs to, for the labels of "
                             "injected faults (default: CP_1)")
    return parser


def inject_argument(text: str) -> kinds.FaultSpec:
    """``--inject``: a fault of this process, or a one-line error listing the valid ones."""
    try:
        return kinds.parse_inject(text, kinds.CHARGER)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def make_charger(args: argparse.Namespace, clock: Clock, writer: BankWriter) -> Charger:
    """The power module's model, with the injected faults if any."""
    if not args.inject:
        return Charger(args.max_current, args.ramp)
    for spec in args.inject:
        log.warning("injecting %s (seed %d, charge point %s)", spec, args.seed, args.id)
    return FaultyCharger(args.inject, sim=clock.sim, now=clock.now,
                         on_label=bank_recorder(writer, log), charge_point_id=args.id,
                         seed=args.seed, speed=args.speed, source=SOURCE,
                         max_current=args.max_current, ramp=args.ramp)


def recorder(writer: BankWriter) -> OnCommand:
    """Records a command the charger obeyed as a CAN_FRAME event."""
    def record(frame: frames.Frame, described: str) -> None:
        writer.event("CAN_FRAME", f"received 0x{frame.arbitration_id:03X} {described}",
                     {"id": f"0x{frame.arbitration_id:03X}", "name": frame.name,
                      "amps": frame.amps, "direction": "received"})
    return record


def watchdog_recorder(writer: BankWriter) -> OnWatchdog:
    """Records a stop by the watchdog as a WATCHDOG event."""
    def record(silent_s: float) -> None:
        writer.event("WATCHDOG", f"no command for {silent_s:.1f} s: stopped",
                     {"silent_s": round(silent_s, 1)})
    return record


async def amain(args: argparse.Namespace, supervisor: cli.Supervisor,
                clock: Optional[Clock] = None) -> None:
    config = cli.can_config(args)
    clock = clock or Clock(args.speed)
    try:
        writer = BankWriter(args.db, SOURCE, clock.now)
    except (MemoryBankError, OSError) as exc:
        raise cli.SimError(f"MemoryBank: {exc}") from None
    node = ChargerNode(make_charger(args, clock, writer), clock, args.period,
                       on_command=recorder(writer), watchdog_s=args.watchdog,
                       on_watchdog=watchdog_recorder(writer))
    link = CanLink(config, node.on_frame, name=SOURCE)
    log.info("charger module: period %gs (%.3fs at speed %g), ramp %.2f, max %.1f A, bus %s",
             args.period, clock.wall_seconds(args.period), args.speed, args.ramp,
             args.max_current, canbus.describe(config))
    writer.event("PROCESS_START", "charger module started",
                 {"period": args.period, "ramp": args.ramp, "max_current": args.max_current,
                  "watchdog": args.watchdog,
                  "speed": args.speed, "can": canbus.describe(config),
                  "inject": [str(spec) for spec in args.inject], "seed": args.seed})
    try:
        supervisor.start(link.run(), "CAN link")
        supervisor.start(node.publish(link), "0x300 publisher")
        await supervisor.stop.wait()
    finally:
        link.close()
        await supervisor.cancel()
        node.close()
        writer.event("PROCESS_STOP", "charger module stopped")
        cli.close_writer(writer)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(lambda args: cli.run_async(amain, args), build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
