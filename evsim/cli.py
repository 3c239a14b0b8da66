"""Command-line conventions every process shares (shared/ARCHITECTURE.md, "Conventions").

Each script builds its parser with :func:`make_parser`, then hands its body to :func:`run`,
which turns Ctrl-C and SIGTERM into a clean exit 0 and a runtime failure into one line and exit 1.
An asyncio process runs its body through :func:`run_async`, whose :class:`Supervisor` turns a
long-running task that dies into that same one line and exit 1, rather than a process that hangs.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Optional

from evsim import timefmt

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(name)-8s %(levelname)-7s %(message)s"


class SimError(Exception):
    """A failure the user can act on: printed as one line, exit code 1."""


class UsageError(SimError):
    """Arguments that parse but do not make sense together: exit code 2, like argparse."""


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    return positive_float(text)


def fraction(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= MAX_INT:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_INT}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def stop_signals() -> tuple[int, ...]:
    """The signals that stop a process cleanly. SIGINT stays ignored where it was ignored at
    start (a background child of a script, as under run_all.sh --headless): Ctrl-C in the
    terminal is then the script's to handle, and it stops its children in order."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return (signal.SIGTERM,)
    return (signal.SIGINT, signal.SIGTERM)


MAX_INT = 2**63 - 1  # SQLite's INTEGER


def port_number(text: str) -> int:
    """A TCP port for argparse: 0 (any free one) to 65535."""
    port = non_negative_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {text!r}")
    return port


def since_argument(text: str) -> datetime:
    """``--since``/``--until``: a duration back from now or an ISO time, as UTC."""
    try:
        return timefmt.parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: gc.set_threshold of a busy process (see tune_gc): CPython's are (700, 10, 10). A fleet's
#: objects in flight (a coroutine, a future, a timer per charge point) are alive at each young
#: collection and walked every time, so a pause costs about the same however rare: cp.py with
#: 2,000 charge points spent 12.6 s of 100 in collections at (5_000, 10, 10), 0.5 s at these
#: (CPython 3.11-3.13; 3.14's incremental collector reads the last two differently).
GC_THRESHOLDS = (50_000, 20, 10)


def log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return level


def make_parser(prog: str, description: str, *, can_bus: bool = False,
                speed: bool = True) -> argparse.ArgumentParser:
    """A parser with --log-level, --db, --speed (for processes that keep time) and, for CAN
    nodes, --can-interface/--can-channel."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--log-level", default=os.environ.get("EV_SIM_LOG_LEVEL", "INFO"),
                        type=log_level, metavar="LEVEL",
                        help=f"logging detail: {', '.join(LOG_LEVELS)} "
                             "(default: $EV_SIM_LOG_LEVEL or INFO)")
    parser.add_argument("--db", default=None, metavar="PATH",
                        help="MemoryBank SQLite file (default: $EV_SIM_DB or ev_charging_memory.db)")
    if speed:
        parser.add_argument("--speed", type=positive_float, metavar="F",
                            default=os.environ.get("EV_SIM_SPEED", "1"),
                            help="time scale: every period and wait is divided by F "
                                 "(default: $EV_SIM_SPEED or 1)")
    if can_bus:
        from evsim.canbus import bus as canbus
        canbus.add_arguments(parser)
    return parser


def can_config(args: argparse.Namespace) -> dict:
    """The bus chosen by --can-interface/--can-channel or python-can's configuration."""
    from evsim.canbus import bus as canbus
    try:
        return canbus.bus_config(args.can_interface, args.can_channel)
    except ValueError as exc:
        raise UsageError(exc) from None


def restarts() -> int:
    """How often run_all.sh has started this process again after it died ($EV_SIM_RESTARTS)."""
    try:
        return max(0, int(os.environ.get("EV_SIM_RESTARTS", "0")))
    except ValueError:
        return 0


def close_writer(writer: Any) -> None:
    """Close a BankWriter. Rows it lost to a storage failure make the stop a failure (exit 1),
    unless the process is already failing for another reason, which then stays the one shown."""
    lost = writer.close()
    if lost and sys.exc_info()[1] is None:
        raise SimError(f"MemoryBank: {lost} rows could not be written and were lost")


def announce(writer: Any, description: str, data: dict,
             charge_point_id: Optional[str] = None) -> None:
    """The PROCESS_START event every process writes (with how often it was restarted), and a
    PROCESS_RESTART event too when run_all.sh started it again after it died."""
    count = restarts()
    writer.event("PROCESS_START", description, {**data, "restarts": count}, charge_point_id)
    if count:
        writer.event("PROCESS_RESTART", f"{description} (restart {count})",
                     {"restarts": count}, charge_point_id)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S", stream=sys.stderr,
                        force=True)


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(body: Callable[[argparse.Namespace], Optional[int]], parser: argparse.ArgumentParser,
        argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv``, run ``body(args)`` and map its outcome to the exit codes of the conventions."""
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return body(args) or 0
    except KeyboardInterrupt:
        return 0
    except SimError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    finally:
        signal.signal(signal.SIGTERM, previous)


class Supervisor:
    """The long-running tasks of an asyncio process.

    ``stop`` is set by SIGINT/SIGTERM, or by a task that dies with an exception: a dead task must
    not leave the process running without it. ``failure`` then says which task and why.
    """

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.failure: Optional[str] = None
        self._tasks: set[asyncio.Task] = set()

    def start(self, coroutine: Coroutine, name: str) -> asyncio.Task:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if self.failure is None:
            self.failure = f"{task.get_name()} failed: {type(exc).__name__}: {exc}"
        logging.getLogger("cli").debug("%s failed", task.get_name(), exc_info=exc)
        self.stop.set()

    async def cancel(self) -> None:
        """Cancel the tasks still running and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def tune_gc() -> None:
    """Collect young objects less often (most of a frame's die before), and leave what exists
    once started (modules, classes: all that lives as long as the process) out of the full
    collections, whose pauses grow with every object they walk."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def loop_runner(fast: bool) -> Callable[[Coroutine], Any]:
    """``asyncio.run``, or with ``fast`` uvloop's run where uvloop is installed (it is not on
    Windows): its event loop costs a busy server a fraction of asyncio's per message."""
    if fast:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run
    return asyncio.run


def run_async(amain: Callable[[argparse.Namespace, Supervisor], Awaitable[None]],
              args: argparse.Namespace, fast_loop: bool = False) -> int:
    """Run ``amain(args, supervisor)`` in asyncio (``fast_loop``: see :func:`loop_runner`), for
    :func:`run`.

    SIGINT and SIGTERM set ``supervisor.stop``, for ``amain`` to end cleanly; a supervised task
    that died makes the run a failure (one line, exit 1) once ``amain`` has returned.
    """
    for name in ("ocpp", "websockets"):  # their INFO lines repeat ours
        logging.getLogger(name).setLevel(logging.WARNING)

    async def supervised() -> None:
        supervisor = Supervisor()
        loop = asyncio.get_running_loop()
        for signum in stop_signals():
            loop.add_signal_handler(signum, supervisor.stop.set)
        try:
            await amain(args, supervisor)
        finally:
            await supervisor.cancel()
        if supervisor.failure is not None:
            raise SimError(supervisor.failure)

    loop_runner(fast_loop)(supervised())
    return 0
