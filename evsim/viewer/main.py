#!/usr/bin/env python3
"""Read the MemoryBank from a terminal: a summary, recent events, anomalies, sessions, the fleet
(one row per charge point), learned patterns and metric statistics as tables (or JSON), the
detectors' score against the ground truth, an export, a dataset, and an interactive menu.

The database is opened read-only, so looking never creates a file; only the menu's "clean old
data" writes, after a confirmation.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from evsim import cli
from evsim.bank import SEVERITIES, MemoryBank, MemoryBankError, default_db_path
from evsim.bank.export import check_dataset_directory
from evsim.viewer.format import render
from evsim.viewer.menu import DEFAULT_ROWS, menu
from evsim.viewer.sections import FLEET_SORTS, Viewer

PROG = "memory_viewer"
CREATE_HINT = "run ./run_all.sh (or csms.py) to create it"
SECTIONS = ("summary", "events", "anomalies", "sessions", "security", "fleet", "patterns",
            "stats", "score", "export", "export_dataset")
COUNTED = ("events", "anomalies", "sessions", "security")
TAKES_VALUE = (*COUNTED, "fleet", "export", "export_dataset")

def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(PROG, __doc__.split("\n\n")[0], speed=False)
    show = parser.add_argument_group("what to show (several may be given; none: the menu on a "
                                     "terminal, else the summary)")
    show.add_argument("--summary", action="store_true", help="totals and the last anomaly")
    for name in COUNTED:
        show.add_argument(f"--{name}", type=cli.non_negative_int, nargs="?", const=DEFAULT_ROWS,
                          metavar="N", help=f"the last N {name} (default N: {DEFAULT_ROWS})"
                          if name != "security" else f"the last N refusals and other security "
                          f"events (default N: {DEFAULT_ROWS})")
    show.add_argument("--fleet", type=cli.non_negative_int, nargs="?", const=DEFAULT_ROWS,
                      metavar="N", help=f"one row per charge point, the first N by --sort "
                      f"(default N: {DEFAULT_ROWS}): its last status and whether it is "
                      f"connected (as csms.py recorded them), sessions (open ones), energy of "
                      f"its ended sessions, anomalies by type, last seen; --since counts only "
                      f"what came since and lists only those seen since, --cp keeps one")
    show.add_argument("--sort", choices=tuple(FLEET_SORTS), default="anomalies",
                      help="order of --fleet: anomalies, energy, sessions (most first), seen "
                           "(the longest silent first), id (default: anomalies)")
    show.add_argument("--patterns", action="store_true", help="learned patterns")
    show.add_argument("--stats", action="store_true", help="statistics of every metric")
    show.add_argument("--export", type=Path, metavar="FILE",
                      help="write the whole database as JSON, or with a .csv name the events "
                           "that match the filters as CSV")
    show.add_argument("--score", action="store_true",
                      help="the detectors' score against the labels (ground truth) per anomaly "
                           "type: true/false positives, misses, precision, recall, latency "
                           "(with --cp and --since)")
    show.add_argument("--export-dataset", type=Path, metavar="DIR",
                      help="write metrics, events, labels and anomalies (with --cp and "
                           "--since) as one CSV file per table, and Parquet too when pyarrow "
                           "is installed, into DIR (new or empty)")
    show.add_argument("--json", action="store_true", help="print JSON instead of tables")
    show.add_argument("--menu", action="store_true",
                      help="the interactive menu even when stdin is not a terminal")
    filters = parser.add_argument_group("filters")
    filters.add_argument("--type", metavar="TYPE", help="event or anomaly type (exact)")
    filters.add_argument("--source", metavar="NAME", help="event source (exact)")
    filters.add_argument("--cp", metavar="ID", help="charge point id (exact)")
    filters.add_argument("--since", type=cli.since_argument, metavar="WHEN",
                         help="ISO time (local unless it has an offset) or a duration back "
                              "from now: 30s, 10m, 2h, 3d, 1w")
    filters.add_argument("--severity", type=str.upper, choices=SEVERITIES,
                         help="anomaly severity")
    filters.add_argument("--search", metavar="TEXT",
                         help="events whose description or data contain TEXT")
    return parser


def open_bank(path: Path) -> MemoryBank:
    if not path.exists():
        raise cli.SimError(f"no MemoryBank database at {path}: {CREATE_HINT}")
    try:
        return MemoryBank(path, readonly=True)
    except MemoryBankError as exc:
        raise cli.SimError(str(exc)) from None


def view(args: argparse.Namespace) -> int:
    path = Path(args.db) if args.db else default_db_path()
    with open_bank(path) as bank:
        viewer = Viewer(bank, args)
        wanted = {name: value for name in SECTIONS
                  if (value := getattr(args, name)) is not None and value is not False}
        if not wanted:
            if args.menu or sys.stdin.isatty():
                return menu(viewer)
            wanted = {"summary": True}
        if args.export is not None:
            try:
                bank.check_export_path(args.export)
            except ValueError as exc:
                raise cli.UsageError(f"--export {exc}") from None
        if args.export_dataset is not None:
            try:
                check_dataset_directory(args.export_dataset)
            except ValueError as exc:
                raise cli.UsageError(f"--export-dataset {exc}") from None
        try:
            results = {name: getattr(viewer, name)(value) if name in TAKES_VALUE
                       else getattr(viewer, name)() for name, value in wanted.items()}
        except MemoryBankError as exc:
            raise cli.SimError(str(exc)) from None
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    else:
        print("\n".join(render(name, data, getattr(args, name) if name in COUNTED else None)
                        for name, data in results.items()), end="")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return cli.run(view, build_parser(), argv)
    except BrokenPipeError:  # the reader left (``| head``): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
