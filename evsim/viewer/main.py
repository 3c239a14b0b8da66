#!/usr/bin/env python3
"""Read the MemoryBank from a terminal: a summary, recent events, anomalies, sessions, learned
patterns and metric statistics as tables (or JSON), an export, and an interactive menu.

The database is opened read-only, so looking never creates a file; only the menu's "clean old
data" writes, after a confirmation.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Optional

from tabulate import tabulate

from evsim import cli
from evsim.bank import (
    SEVERITIES,
    TABLES,
    MemoryBank,
    MemoryBankError,
    default_db_path,
    parse_timestamp,
)

PROG = "memory_viewer"
WIDTH = 100
DEFAULT_ROWS = 20
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
CREATE_HINT = "run ./run_all.sh (or csms.py) to create it"
SECTIONS = ("summary", "events", "anomalies", "sessions", "patterns", "stats", "export")
COUNTED = ("events", "anomalies", "sessions")
TAKES_VALUE = (*COUNTED, "export")



# -- pure helpers: parsing and formatting ---------------------------------------------------------

def parse_since(text: str) -> datetime:
    """A duration back from now (``90s``, ``10m``, ``2h``, ``3d``, ``1w``) or an ISO-8601 time,
    as a UTC time; an ISO time without an offset is local time, like every time the viewer shows."""
    match = DURATION.match(text)
    try:
        if match:
            amount, unit = match.groups()
            return datetime.now(UTC) - timedelta(**{DURATION_UNITS[unit.lower()]:
                                                             float(amount)})
        moment = datetime.fromisoformat(text.strip())
        return (moment if moment.tzinfo else moment.astimezone()).astimezone(UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (10m, 2h, 3d) nor an ISO time "
            f"(2024-05-01T12:00)") from None
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is too far back") from None


def local_time(stamp: Optional[str]) -> str:
    """A stored UTC timestamp as short local time: ``05-01 14:03:07``."""
    return parse_timestamp(stamp).astimezone().strftime("%m-%d %H:%M:%S") if stamp else ""


def number(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.2f}".rstrip("0").rstrip(".")


def one_line(value: Any) -> str:
    """Any value as one line of text; JSON values compact."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return " ".join(value.split())


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def fit_table(headers: Sequence[str], rows: Iterable[Sequence[str]], max_widths: Sequence[int],
              right: Sequence[int] = (), width: int = WIDTH) -> str:
    """A table no wider than ``width``: each column cut to its maximum, the last column (the
    one with free text) gets what is left."""
    cut = [[shorten(cell, limit) for cell, limit in zip(row, max_widths)] for row in rows]
    align = ["right" if i in right else "left" for i in range(len(headers))]

    def draw() -> str:
        return tabulate(cut, headers=list(headers), tablefmt="simple", colalign=align,
                        disable_numparse=True)
    table = draw()
    excess = max(map(len, table.splitlines())) - width
    if excess > 0 and cut:
        last = max(max(len(row[-1]) for row in cut) - excess, len(headers[-1]), 10)
        for row in cut:
            row[-1] = shorten(row[-1], last)
        table = draw()
    return table


def events_table(events: list[dict]) -> str:
    rows = [(str(e["id"]), local_time(e["timestamp"]), e["event_type"], e["source"],
             one_line(e["charge_point_id"]), one_line(e["description"]), one_line(e["data"]))
            for e in events]
    return fit_table(("ID", "Time", "Type", "Source", "CP", "Description", "Data"), rows,
                     (8, 14, 16, 8, 10, 30, WIDTH), right=(0,))


def anomalies_table(anomalies: list[dict]) -> str:
    rows = [(local_time(a["timestamp"]), a["severity"], a["anomaly_type"],
             one_line(a["charge_point_id"]),
             f"{number(a['current_value'])}/{number(a['expected_value'])}".strip("/"),
             number(a["deviation"]), one_line(a["description"])) for a in anomalies]
    return fit_table(("Time", "Sev", "Type", "CP", "Value/exp", "Dev", "Description"), rows,
                     (14, 8, 20, 10, 13, 7, WIDTH), right=(4, 5))


def sessions_table(sessions: list[dict]) -> str:
    rows = [(one_line(s["charge_point_id"]), one_line(s["transaction_id"]),
             local_time(s["start_time"]), local_time(s["end_time"]) or "active",
             number(s["energy_wh"]),
             "/".join(number(s[key]) or "-" for key in ("min_current", "avg_current",
                                                         "max_current")),
             one_line(s["sample_count"]), one_line(s["stop_reason"])) for s in sessions]
    return fit_table(("CP", "Tx", "Start", "End", "Energy Wh", "A min/avg/max", "Samples",
                      "Reason"), rows, (10, 6, 14, 14, 9, 17, 7, WIDTH), right=(1, 4, 6))


def patterns_table(patterns: list[dict]) -> str:
    rows = [(p["name"], str(p["occurrences"]), number(p["confidence"]),
             local_time(p["first_seen"]), local_time(p["last_seen"]), one_line(p["parameters"]))
            for p in patterns]
    return fit_table(("Name", "Seen", "Confidence", "First seen", "Last seen", "Parameters"),
                     rows, (24, 7, 10, 14, 14, WIDTH), right=(1, 2))


def stats_table(statistics: list[dict]) -> str:
    rows = [(s["name"] + (f" ({s['source']})" if s.get("source") else ""), one_line(s["unit"]),
             str(s["count"]),
             *(number(s[key]) for key in ("min", "max", "avg", "stddev", "latest")),
             local_time(s["latest_timestamp"])) for s in statistics]
    return fit_table(("Metric", "Unit", "Count", "Min", "Max", "Avg", "Stddev", "Latest",
                      "Latest at"), rows, (16, 5, 9, 9, 9, 9, 9, 9, 14),
                     right=(2, 3, 4, 5, 6, 7))


def summary_table(summary: dict) -> str:
    severities = summary["anomalies_by_severity"]
    last = summary["last_anomaly"]
    types = ", ".join(f"{name} {count:,}" for name, count in summary["event_types"].items())
    rows = [
        ("Database", summary["database"]),
        ("Events", f"{summary['total_events']:,}"),
        ("First / last event", f"{local_time(summary['first_event']) or '-'} / "
                               f"{local_time(summary['last_event']) or '-'}"),
        ("Event types", types or "-"),
        ("Charge points", ", ".join(summary["charge_points"]) or "-"),
        ("Anomalies", f"{summary['total_anomalies']:,} ("
                      + ", ".join(f"{name} {severities[name]:,}" for name in SEVERITIES) + ")"),
        ("Last anomaly", "-" if last is None else
            f"{local_time(last['timestamp'])} {last['severity']} {last['anomaly_type']}"
            f"{' on ' + last['charge_point_id'] if last['charge_point_id'] else ''}: "
            f"{one_line(last['description'])}"),
        ("Sessions", f"{summary['total_sessions']:,} ({summary['active_sessions']:,} active)"),
        ("Energy delivered", f"{summary['total_energy_wh'] / 1000:,.2f} kWh"),
        ("Metric samples", f"{summary['total_metrics']:,}"),
        ("Learned patterns", f"{summary['total_patterns']:,}"),
    ]
    return fit_table(("Summary", ""), rows, (18, WIDTH))


# -- reading the bank -----------------------------------------------------------------------------

class Viewer:
    """The sections the viewer shows, with the command line's filters applied."""

    def __init__(self, bank: MemoryBank, args: argparse.Namespace):
        self.bank = bank
        self.args = args

    def event_filters(self, search: Optional[str] = None) -> dict:
        args = self.args
        return {"event_type": args.type, "source": args.source, "charge_point_id": args.cp,
                "since": args.since, "search": search or args.search}

    def summary(self) -> dict:
        return self.bank.get_dashboard_summary()

    def events(self, limit: Optional[int], search: Optional[str] = None) -> list[dict]:
        return self.bank.get_recent_events(limit, self.event_filters(search))

    def anomalies(self, limit: Optional[int]) -> list[dict]:
        args = self.args
        return self.bank.get_anomalies(limit, severity=args.severity, anomaly_type=args.type,
                                       charge_point_id=args.cp, since=args.since)

    def sessions(self, limit: Optional[int]) -> list[dict]:
        return self.bank.get_sessions(limit, charge_point_id=self.args.cp, since=self.args.since)

    def patterns(self) -> list[dict]:
        return self.bank.get_patterns()

    def stats(self) -> list[dict]:
        """One row per metric and source: the charge point and the central system record the
        same samples, so mixing sources would count each twice."""
        sources = [self.args.source] if self.args.source else self.bank.get_metric_sources()
        rows = [self.bank.get_metric_statistics(name, since=self.args.since,
                                                charge_point_id=self.args.cp, source=source)
                for name in self.bank.get_metric_names() for source in sources]
        return [row for row in rows if row["count"]]

    def export(self, path: Path) -> dict:
        """JSON: the whole database. CSV: the events that match the filters.
        ValueError for the database's own files."""
        self.bank.check_export_path(path)
        try:
            if path.suffix.lower() != ".csv":
                return {"path": str(path), "rows": self.bank.export_json(path)}
            columns = ("id", *TABLES["events"].columns)
            events = self.bank.get_recent_events(None, self.event_filters())
            with open(path, "w", newline="", encoding="utf-8") as out:
                writer = csv.writer(out)
                writer.writerow(columns)
                for event in reversed(events):
                    writer.writerow([one_line(event[c]) if c == "data" else event[c]
                                     for c in columns])
            return {"path": str(path), "rows": {"events": len(events)}}
        except OSError as exc:
            raise cli.SimError(f"cannot export to {path}: {exc.strerror or exc}") from None


def titled(title: str, table: str, empty: bool) -> str:
    return f"{title}\n{'(none)' if empty else table}\n"


def render(section: str, data: Any, limit: Optional[int] = None) -> str:
    """One section as a titled table."""
    count = f" (last {limit}, newest first)" if limit is not None else ""
    if section == "summary":
        return summary_table(data) + "\n"
    if section == "export":
        rows = ", ".join(f"{count:,} {table}" for table, count in data["rows"].items())
        return f"Exported {rows} to {data['path']}\n"
    title, table = {
        "events": ("Events" + count, events_table),
        "anomalies": ("Anomalies" + count, anomalies_table),
        "sessions": ("Sessions" + count, sessions_table),
        "patterns": ("Learned patterns", patterns_table),
        "stats": ("Metric statistics", stats_table),
    }[section]
    return titled(title, table(data), not data)


# -- the interactive menu -------------------------------------------------------------------------

MENU = ("Summary", "Recent events", "Anomalies", "Sessions", "Learned patterns", "Statistics",
        "Search events", "Export", "Clean old data")


def ask(prompt: str) -> str:
    return input(prompt).strip()


def ask_number(prompt: str, default: int) -> int:
    """A whole number as the command line takes it; anything else re-prompts."""
    while True:
        answer = ask(f"{prompt} [{default}]: ")
        if not answer:
            return default
        try:
            return cli.non_negative_int(answer)
        except argparse.ArgumentTypeError as exc:
            print(f"Try again: {exc}")


def clean_old_data(path: Path) -> str:
    days = ask_number("Delete data older than how many days?", 7)
    answer = ask(f"Delete events, anomalies, metrics and finished sessions older than {days} "
                 f"days from {path}? [y/N]: ")
    if answer.lower() not in ("y", "yes"):
        return "Nothing deleted."
    with MemoryBank(path) as writer:
        deleted = writer.clean_old_data(days)
    return "Deleted " + ", ".join(f"{count:,} {table}" for table, count in deleted.items())


def menu(viewer: Viewer) -> int:
    """The numbered menu; invalid choices re-prompt, EOF and Ctrl-C leave with exit code 0."""
    actions: dict[str, Callable[[], str]] = {
        "1": lambda: render("summary", viewer.summary()),
        "2": lambda: with_limit("events", "How many events?", viewer.events),
        "3": lambda: with_limit("anomalies", "How many anomalies?", viewer.anomalies),
        "4": lambda: with_limit("sessions", "How many sessions?", viewer.sessions),
        "5": lambda: render("patterns", viewer.patterns()),
        "6": lambda: render("stats", viewer.stats()),
        "7": lambda: search(viewer),
        "8": lambda: export(viewer),
        "9": lambda: clean_old_data(viewer.bank.path),
    }
    try:
        while True:
            print("\nMemoryBank: " + str(viewer.bank.path))
            for index, title in enumerate(MENU, start=1):
                print(f"  {index}. {title}")
            print("  0. Exit")
            choice = ask("Choose 0-9: ")
            if choice in ("0", "q", "quit", "exit"):
                return 0
            if choice not in actions:
                print(f"Invalid choice {choice!r}: enter a number from 0 to 9.")
                continue
            try:
                print(actions[choice]().rstrip("\n"))
            except (cli.SimError, MemoryBankError, ValueError) as exc:
                print(f"error: {exc}")
    except (EOFError, KeyboardInterrupt):
        print()
        return 0


def with_limit(section: str, prompt: str, fetch: Callable[[int], list]) -> str:
    limit = ask_number(prompt, DEFAULT_ROWS)
    return render(section, fetch(limit), limit)


def search(viewer: Viewer) -> str:
    text = ask("Search events for: ")
    if not text:
        return "Nothing searched."
    found = viewer.events(DEFAULT_ROWS, search=text)
    return titled(f"Events containing {text!r} (last {DEFAULT_ROWS}, newest first)",
                  events_table(found), not found)


def export(viewer: Viewer) -> str:
    while True:
        path = ask("Export to file (.json: whole database, .csv: events): ")
        if not path:
            return "Nothing exported."
        try:
            return render("export", viewer.export(Path(path)))
        except ValueError as exc:
            print(exc)


# -- command line ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(PROG, __doc__.split("\n\n")[0])
    show = parser.add_argument_group("what to show (several may be given; none: the menu on a "
                                     "terminal, else the summary)")
    show.add_argument("--summary", action="store_true", help="totals and the last anomaly")
    for name in COUNTED:
        show.add_argument(f"--{name}", type=cli.non_negative_int, nargs="?", const=DEFAULT_ROWS,
                          metavar="N", help=f"the last N {name} (default N: {DEFAULT_ROWS})")
    show.add_argument("--patterns", action="store_true", help="learned patterns")
    show.add_argument("--stats", action="store_true", help="statistics of every metric")
    show.add_argument("--export", type=Path, metavar="FILE",
                      help="write the whole database as JSON, or with a .csv name the events "
                           "that match the filters as CSV")
    show.add_argument("--json", action="store_true", help="print JSON instead of tables")
    show.add_argument("--menu", action="store_true",
                      help="the interactive menu even when stdin is not a terminal")
    filters = parser.add_argument_group("filters")
    filters.add_argument("--type", metavar="TYPE", help="event or anomaly type (exact)")
    filters.add_argument("--source", metavar="NAME", help="event source (exact)")
    filters.add_argument("--cp", metavar="ID", help="charge point id (exact)")
    filters.add_argument("--since", type=parse_since, metavar="WHEN",
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
