"""The live view: 0x300 frames from the bus, or with ``--cp`` a charge point's current from the
MemoryBank (:mod:`evsim.plot.follow`), into a :class:`~evsim.plot.chart.LiveView`, redrawn every
``--refresh`` wall seconds in a window or, headless, into a PNG.

The bus is read by a :class:`Receiver` thread with an event loop of its own running a
:class:`~evsim.canbus.link.CanLink`; the MemoryBank is polled by the drawing loop before each
frame; the main thread draws (a GUI toolkit wants the main thread). Samples are placed on
simulated time from the injected clock, so the window and the detector see the same signal at
every ``--speed``.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Optional

import matplotlib

from evsim import cli
from evsim.bank import MemoryBank, MemoryBankError
from evsim.canbus import bus as canbus
from evsim.canbus import frames
from evsim.canbus.link import CanLink
from evsim.clock import Clock
from evsim.plot import follow
from evsim.plot.chart import LATEST_ANOMALIES, Chart, History, LiveView
from evsim.plot.draw import DEFAULT_OUTPUT, draw, new_figure, save_png
from evsim.timefmt import parse_timestamp

log = logging.getLogger("plot")


def read_history(db_path: Optional[str], since: datetime) -> History:
    """The count, the latest few and the anomalies since ``since`` (the window's start), and
    the labels that overlap the window, from the MemoryBank opened read-only: a missing
    database is not an error. However many rows the bank holds, a refresh reads only those."""
    try:
        with MemoryBank(db_path, readonly=True) as bank:
            latest = tuple(bank.get_anomalies(LATEST_ANOMALIES))
            marked = tuple(bank.get_anomalies(None, since=since))
            labels = tuple(bank.get_labels_overlapping(since=since))
            return History(bank.count_anomalies(), latest, marked, labels=labels)
    except MemoryBankError as exc:
        return History(problem=str(exc))


class Timeline:
    """Simulated seconds since the plotter started, and where a stored (wall-clock) timestamp
    falls on that axis."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._sim0 = clock.sim()
        self._wall0 = clock.now()

    def now(self) -> float:
        return self.clock.sim() - self._sim0

    def to_x(self, stamp: str) -> float:
        return (parse_timestamp(stamp) - self._wall0).total_seconds() * self.clock.speed

    def wall(self, t: float) -> datetime:
        """The wall-clock time of simulated time ``t``."""
        return self._wall0 + timedelta(seconds=self.clock.wall_seconds(t))


class Receiver:
    """Feeds 0x300 frames into ``view`` from a thread of its own until ``stop`` is set.

    If the link fails, :attr:`failure` says why and ``stop`` is set, so the plot ends (exit 1)
    rather than drawing a bus it no longer hears.
    """

    def __init__(self, config: dict[str, Any], view: LiveView, timeline: Timeline,
                 stop: threading.Event, retry_interval: float = 1.0) -> None:
        self.config = config
        self.view = view
        self.timeline = timeline
        self.stop = stop
        self.retry_interval = retry_interval
        self.failure: Optional[str] = None
        self._link: Optional[CanLink] = None
        self._first = True
        self._thread = threading.Thread(target=self._main, name="can-receiver", daemon=True)

    @property
    def status(self) -> str:
        up = self._link is not None and self._link.up
        return f"bus {canbus.describe(self.config)} {'connected' if up else 'not reachable yet'}"

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the thread (after ``stop``); True once it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def what(self) -> str:
        return "0x300 frames"

    def poll(self) -> None:
        """Nothing: frames arrive on the receiver's own thread."""

    def on_frame(self, frame: frames.Frame) -> None:
        if frame.arbitration_id != frames.MEASURED_CURRENT:
            return
        if self._first:
            log.info("receiving 0x300 (first: %.1f A)", frame.amps)
            self._first = False
        detection = self.view.add(self.timeline.now(), frame.amps)
        if detection is not None:
            log.info("detector %s: %s", detection.kind, detection.description)

    def _main(self) -> None:
        try:
            asyncio.run(self._receive())
        except Exception as exc:  # said in one line by live(), which exits 1
            self.failure = f"CAN receiver failed: {type(exc).__name__}: {exc}"
            log.debug("CAN receiver failed", exc_info=exc)

    async def _receive(self) -> None:
        link = self._link = CanLink(self.config, self.on_frame, name="plot",
                                    retry_interval=self.retry_interval)
        running = asyncio.create_task(link.run())
        stopping = asyncio.ensure_future(asyncio.to_thread(self.stop.wait))
        try:
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.stop.set()  # ends the thread waiting in stopping, and the plot if the link died
            link.close()
            running.cancel()
            await asyncio.gather(running, stopping, return_exceptions=True)
        if not running.cancelled():  # it ended before it was told to
            raise running.exception() or RuntimeError("the CAN link ended")


def gui_unavailable() -> Optional[str]:
    """Why no window can be opened here, or None if a GUI backend loaded."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY and WAYLAND_DISPLAY are not set)"
    from matplotlib.backends import BackendFilter, backend_registry
    try:
        import matplotlib.pyplot as plt
        backend = plt.get_backend().lower()
    except Exception as exc:  # noqa: BLE001 - a broken GUI toolkit raises anything from ImportError to TclError
        return f"the GUI backend failed to load ({exc})"
    if backend not in backend_registry.list_builtin(BackendFilter.INTERACTIVE):
        return f"no GUI backend available (matplotlib chose {backend})"
    return None


def open_figure(args: argparse.Namespace) -> tuple[Any, bool]:
    """The figure to draw in and whether it is headless: a window unless ``--headless`` or the
    display cannot give one, which is said in one line."""
    headless = args.headless
    if not headless:
        reason = gui_unavailable()
        if reason:
            log.warning("%s: rendering headless to %s instead", reason,
                        args.output or DEFAULT_OUTPUT)
            headless = True
    if headless:
        matplotlib.use("Agg")
        return new_figure(args.size), True
    try:
        return new_figure(args.size, gui=True), False
    except Exception as exc:  # noqa: BLE001 - a display that refuses the window: TclError, RuntimeError, ...
        log.warning("the GUI window failed to open (%s): rendering headless to %s instead",
                    exc, args.output or DEFAULT_OUTPUT)
        return new_figure(args.size), True


def open_source(args: argparse.Namespace, timeline: Timeline,
                stop: threading.Event) -> tuple[LiveView, Receiver | follow.Follower, str]:
    """The view, what feeds it (the CAN bus or the MemoryBank, :func:`follow.source_of`) and
    how the log names that."""
    if follow.source_of(args) == "db":
        view = LiveView(args.window, charge_point_id=args.cp,
                        feed=follow.recorded_feed(args.cp))
        follower = follow.Follower(args.db, args.cp, view, timeline.to_x)
        return view, follower, f"the current of {args.cp} from the MemoryBank"
    config = cli.can_config(args)
    view = LiveView(args.window, charge_point_id=args.cp)
    return view, Receiver(config, view, timeline, stop), f"0x300 from {canbus.describe(config)}"


def live(args: argparse.Namespace, clock: Optional[Clock] = None) -> int:
    """Plot until stopped (SIGINT, SIGTERM, the window closed) or ``--duration`` has passed."""
    clock = clock or Clock(args.speed)
    timeline = Timeline(clock)
    stop = threading.Event()
    view, receiver, source = open_source(args, timeline, stop)

    def frame() -> Chart:
        receiver.poll()
        now = timeline.now()
        view.set_status(receiver.status)
        history = read_history(args.db, timeline.wall(view.window_start(now)))
        return view.chart(now, history, timeline.to_x)

    def request_stop(signum, frame) -> None:
        # Not KeyboardInterrupt: raised inside one of matplotlib's weakref callbacks it is
        # swallowed. Not stop.set() here: it deadlocks if the signal came while this thread held
        # the event's lock. A thread of its own can always set it.
        threading.Thread(target=stop.set).start()

    previous = {signum: signal.signal(signum, request_stop) for signum in cli.stop_signals()}
    receiver.start()
    try:
        fig, headless = open_figure(args)
        output = Path(args.output or DEFAULT_OUTPUT) if headless or args.output else None
        log.info("plotting %s, window %g s%s", source, args.window,
                 f", writing {output} every {args.refresh:g} s" if output else "")
        while not stop.is_set():
            draw(fig, frame())
            if output:
                save_png(fig, output)
            left = (clock.wall_seconds(args.duration - timeline.now()) if args.duration
                    else args.refresh)
            if left <= 0:
                break
            if headless:
                stop.wait(min(args.refresh, left))
            else:
                import matplotlib.pyplot as plt
                if not plt.fignum_exists(fig.number):
                    break
                plt.pause(min(args.refresh, left))
        if output and stop.is_set():  # stopped between refreshes: keep the last seconds
            draw(fig, frame())
            save_png(fig, output)
    finally:
        stop.set()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        receiver.join(timeout=10)
        log.info("received %d %s", view.received, receiver.what)
    if receiver.failure:
        raise cli.SimError(receiver.failure)
    return 0
