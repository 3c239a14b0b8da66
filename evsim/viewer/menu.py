"""The viewer's interactive menu: numbered choices read from stdin until 0, end of input or
Ctrl-C. A bad answer re-prompts; an error is printed and the menu goes on."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from evsim import cli
from evsim.bank import MemoryBank, MemoryBankError
from evsim.viewer.format import events_table, render, titled
from evsim.viewer.sections import Viewer

DEFAULT_ROWS = 20
MENU = ("Summary", "Recent events", "Anomalies", "Sessions", "Learned patterns", "Statistics",
        "Search events", "Export", "Clean old data", "Fleet (one row per charge point)")


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
        "10": lambda: with_limit("fleet", "How many charge points?", viewer.fleet),
    }
    try:
        while True:
            print("\nMemoryBank: " + str(viewer.bank.path))
            for index, title in enumerate(MENU, start=1):
                print(f"  {index:>2}. {title}")
            print(f"  {0:>2}. Exit")
            choice = ask(f"Choose 0-{len(MENU)}: ")
            if choice in ("0", "q", "quit", "exit"):
                return 0
            if choice not in actions:
                print(f"Invalid choice {choice!r}: enter a number from 0 to {len(MENU)}.")
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


def clean_old_data(path: Path) -> str:
    """The one write of the viewer, on its own connection, after a confirmation."""
    days = ask_number("Delete data older than how many days?", 7)
    answer = ask(f"Delete events, anomalies, metrics, finished sessions and ended labels older "
                 f"than {days} days from {path}? [y/N]: ")
    if answer.lower() not in ("y", "yes"):
        return "Nothing deleted."
    with MemoryBank(path) as writer:
        deleted = writer.clean_old_data(days)
    return "Deleted " + ", ".join(f"{count:,} {table}" for table, count in deleted.items())
