#!/usr/bin/env python3
"""Live chart of the charger's current (CAN 0x300), its fluctuation detector and MemoryBank history.

Live: subscribes to 0x300, draws the rolling ``--window`` (simulated seconds) with the current
value, min/avg/max, the swings the detector counts and a red indicator while it sees a fluctuation;
anomalies recorded in the MemoryBank (by csms.py) are listed and marked on the chart, their
episodes in a lane of their own above the ground truth (the labels of injected faults). The plotter
records nothing: it opens the MemoryBank read-only, and waits for it if it does not exist yet.

Any charge point of a fleet, live: ``--cp ID`` draws ID's current as csms.py recorded it in the
MemoryBank (from its MeterValues, polled every ``--refresh``), with ID's anomalies and labels, no
CAN bus needed; ``--source can`` keeps the bus's 0x300 with ``--cp`` (:mod:`evsim.plot.follow`).

``--headless --output current.png`` renders with Agg and rewrites the PNG (atomically) every
``--refresh`` seconds; ``--from-db`` draws a past session or time range into a PNG instead.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from evsim import cli
from evsim.plot.draw import DEFAULT_OUTPUT
from evsim.plot.follow import SOURCES
from evsim.plot.live import live
from evsim.plot.past import RANGE, from_db

PROG = "plot_current.py"


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT in pixels, got {text!r}") \
            from None
    if not (100 <= width <= 10000 and 100 <= height <= 10000):
        raise argparse.ArgumentTypeError(f"size must be 100 to 10000 pixels each way, got {text!r}")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(PROG, __doc__.splitlines()[0], can_bus=True)
    parser.add_argument("--window", type=cli.positive_float, default=60.0, metavar="S",
                        help="simulated seconds shown (default: 60)")
    parser.add_argument("--duration", type=cli.positive_float, metavar="S",
                        help="exit after S simulated seconds (S / --speed wall seconds); "
                             "default: until stopped")
    parser.add_argument("--headless", action="store_true",
                        help="no window: render with Agg into --output")
    parser.add_argument("--output", metavar="PNG",
                        help=f"PNG to write (default with --headless or --from-db: "
                             f"{DEFAULT_OUTPUT})")
    parser.add_argument("--refresh", type=cli.positive_float, default=2.0, metavar="S",
                        help="wall seconds between redraws and PNG rewrites: a display rate, "
                             "not simulated time (default: 2)")
    parser.add_argument("--size", type=parse_size, default=(1000, 600), metavar="WxH",
                        help="image size in pixels (default: 1000x600)")
    past = parser.add_argument_group("a past session or time range (no CAN bus needed)")
    past.add_argument("--from-db", type=cli.non_negative_int, nargs="?", const=RANGE, metavar="TX",
                      help="draw from the MemoryBank's current metrics: the session with this "
                           "transaction id, or without one the range of --since/--until")
    past.add_argument("--since", type=cli.since_argument, metavar="WHEN",
                      help="with --from-db: start of the range, 10m / 2h / 3d ago or ISO time")
    past.add_argument("--until", type=cli.since_argument, metavar="WHEN",
                      help="with --from-db: end of the range (default: now)")
    parser.add_argument("--cp", metavar="ID",
                        help="only this charge point: live, its current as csms.py recorded "
                             "it in the MemoryBank (any charge point of a fleet, no CAN bus "
                             "needed) with its anomalies and labels; with --from-db its "
                             "session or samples")
    parser.add_argument("--source", choices=SOURCES,
                        help="where the live current comes from: can (the bus's 0x300 "
                             "frames, the one charge point on the bus) or db (the MemoryBank, "
                             "with --cp). Default: db with --cp, can without")
    return parser


def check_output(output: Optional[str]) -> Path:
    """The PNG path, refused up front if it can never be written."""
    path = Path(output or DEFAULT_OUTPUT)
    if path.is_dir():
        raise cli.UsageError(f"--output {path} is a directory, not a PNG file")
    if not path.parent.is_dir():
        raise cli.UsageError(f"--output {path}: the directory {path.parent} does not exist")
    return path


def run(args: argparse.Namespace) -> int:
    output = check_output(args.output)
    if args.from_db is None:
        if args.since or args.until:
            raise cli.UsageError("--since and --until go with --from-db")
        if args.source == "db" and not args.cp:
            raise cli.UsageError("--source db follows one charge point: give --cp ID")
        return live(args)
    if args.source:
        raise cli.UsageError("--source is for the live view: --from-db reads the MemoryBank")
    if args.from_db is RANGE and args.since is None:
        raise cli.UsageError("--from-db needs a session's transaction id or --since")
    return from_db(args, output)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
