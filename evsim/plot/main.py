#!/usr/bin/env python3
"""Live chart of the charger's current (CAN 0x300), its fluctuation detector and MemoryBank history.

Live: subscribes to 0x300, draws the rolling ``--window`` (simulated seconds) with the current
value, min/avg/max, the swings the detector counts and a red indicator while it sees a fluctuation;
anomalies recorded in the MemoryBank (by csms.py) are listed and marked on the chart. The plotter
records nothing: it opens the MemoryBank read-only, and waits for it if it does not exist yet.

``--headless --output current.png`` renders with Agg and rewrites the PNG (atomically) every
``--refresh`` seconds; ``--from-db`` draws a past session or time range into a PNG instead.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

import can
import matplotlib
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

from evsim import cli
from evsim.bank import MemoryBank, MemoryBankError, parse_timestamp
from evsim.canbus import bus as canbus
from evsim.canbus import frames
from evsim.detection.fluctuation import SEVERITIES, Detection, FluctuationDetector
from evsim.viewer.main import local_time, parse_since

PROG = "plot_current.py"
DEFAULT_OUTPUT = "current.png"
RANGE = object()  # --from-db given without a transaction id
WAITING = "waiting for CAN data"
LATEST_ANOMALIES = 5
PANEL_CHARS = 30
SEVERITY_COLORS = {"LOW": "#bf9000", "MEDIUM": "#e69138", "HIGH": "#cc0000",
                   "CRITICAL": "#7f0000"}
ALARM_RED = "#d00000"

log = logging.getLogger("plot")


# -- what a chart shows (pure) -------------------------------------------------------------------

@dataclass
class Chart:
    """Everything one frame of the chart shows; :func:`draw` turns it into matplotlib artists."""

    title: str
    xlabel: str
    series: list[tuple[str, list, list[float]]] = field(default_factory=list)
    xlim: Optional[tuple[Any, Any]] = None
    waiting: Optional[str] = None
    stats: list[str] = field(default_factory=list)
    alarm: Optional[str] = None
    calm: str = "current steady"
    episodes: list[tuple[Any, Any]] = field(default_factory=list)
    markers: list[tuple[Any, str]] = field(default_factory=list)
    history: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class History:
    """What the chart shows of the MemoryBank's anomalies: how many there are, the latest few
    (newest first) and those to mark on the chart; or why there are none to show."""

    total: int = 0
    latest: tuple[dict, ...] = ()
    marked: tuple[dict, ...] = ()
    problem: Optional[str] = None

    @classmethod
    def of(cls, anomalies: Sequence[dict]) -> History:
        """All of these anomalies (newest first), every one marked."""
        return cls(len(anomalies), tuple(anomalies[:LATEST_ANOMALIES]), tuple(anomalies))

    def lines(self) -> list[str]:
        if self.problem:
            return ["MemoryBank (retrying):", *textwrap.wrap(self.problem, PANEL_CHARS,
                                                             initial_indent=" ",
                                                             subsequent_indent=" ")]
        lines = [f"MemoryBank: {self.total} anomal{'y' if self.total == 1 else 'ies'}"]
        for anomaly in self.latest:
            lines.append(f" {local_time(anomaly['timestamp'])[6:]} {anomaly['severity']:<8} "
                         f"{anomaly.get('charge_point_id') or ''}")
        return lines


def read_history(db_path: Optional[str], since: datetime) -> History:
    """The count, the latest few and the anomalies since ``since`` (the window's start), from
    the MemoryBank opened read-only: a missing database is not an error. However many
    anomalies the bank holds, a refresh reads only those."""
    try:
        with MemoryBank(db_path, readonly=True) as bank:
            latest = tuple(bank.get_anomalies(LATEST_ANOMALIES))
            marked = tuple(bank.get_anomalies(None, since=since))
            return History(bank.count_anomalies(), latest, marked)
    except MemoryBankError as exc:
        return History(problem=str(exc))


def current_stats(amps: Sequence[float]) -> list[str]:
    """The current value and min/avg/max, one per line, aligned."""
    if not amps:
        return [f"{name} {'-':>7}" for name in ("now", "min", "avg", "max")]
    figures = (amps[-1], min(amps), sum(amps) / len(amps), max(amps))
    return [f"{name} {value:7.1f} A" for name, value in zip(("now", "min", "avg", "max"), figures)]


def alarm_text(detection: Detection) -> str:
    period = f"\nperiod {detection.period_s:.1f} s" if detection.period_s else ""
    return f"FLUCTUATION {detection.severity}\nswings of {detection.amplitude_a:.0f} A{period}"


class LiveView:
    """The rolling window of 0x300 samples and the detector fed with them (thread-safe)."""

    def __init__(self, window_s: float, detector: Optional[FluctuationDetector] = None) -> None:
        self.window_s = window_s
        self.detector = detector or FluctuationDetector()
        self.samples: deque[tuple[float, float]] = deque()
        self.detection: Optional[Detection] = None
        self.episodes: list[list[Optional[float]]] = []
        self.status = ""
        self.received = 0
        self._lock = threading.Lock()

    def add(self, t: float, amps: float) -> Optional[Detection]:
        """One 0x300 sample at simulated time ``t``."""
        with self._lock:
            self.received += 1
            self.samples.append((t, amps))
            while self.samples[0][0] < t - self.window_s:
                self.samples.popleft()
            detection = self.detector.update(t, amps)
            if detection is not None:
                self.detection = detection
                if detection.kind == "started":
                    self.episodes.append([detection.started_at, None])
                elif detection.kind == "ended" and self.episodes:
                    self.episodes[-1][1] = t
            self.episodes = [e for e in self.episodes if e[1] is None or e[1] >= t - self.window_s]
            return detection

    def set_status(self, status: str) -> None:
        with self._lock:
            self.status = status

    def window_start(self, now: float) -> float:
        return max(0.0, now - self.window_s)

    def chart(self, now: float, history: History, to_x: Callable[[str], float]) -> Chart:
        """The chart at simulated time ``now``; ``to_x`` maps a stored timestamp to that time."""
        with self._lock:
            start = self.window_start(now)
            shown = [(t, a) for t, a in self.samples if t >= start]
            amps = [a for _, a in shown]
            chart = Chart(
                title=f"Charger current (CAN 0x300), last {self.window_s:g} s",
                xlabel="simulated time since start (s)",
                series=[("0x300 current", [t for t, _ in shown], amps)],
                xlim=(start, max(now, self.window_s)),
                waiting=None if shown else f"{WAITING}\n{self.status}".strip(),
                stats=current_stats(amps) + [
                    f"swings {self.detector.swings:3d} in {self.detector.config.window_s:g} s"],
                alarm=alarm_text(self.detection) if self.detector.active else None,
                calm="current steady" if shown else "no data yet",
                episodes=[(begin, now if end is None else end) for begin, end in self.episodes
                          if end is None or end >= start],
                history=history.lines())
        for anomaly in history.marked:
            x = to_x(anomaly["timestamp"])
            if start <= x <= now:
                chart.markers.append((x, anomaly["severity"]))
        return chart


# -- drawing ---------------------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT in pixels, got {text!r}") \
            from None
    if not (100 <= width <= 10000 and 100 <= height <= 10000):
        raise argparse.ArgumentTypeError(f"size must be 100 to 10000 pixels each way, got {text!r}")
    return width, height


DPI = 100


def new_figure(size: tuple[int, int], gui: bool = False):
    """A figure of exactly ``size`` pixels; pyplot (and its GUI backend) only when ``gui``."""
    figsize = (size[0] / DPI, size[1] / DPI)
    if gui:
        import matplotlib.pyplot as plt
        return plt.figure(figsize=figsize, dpi=DPI, layout="constrained")
    from matplotlib.figure import Figure
    return Figure(figsize=figsize, dpi=DPI, layout="constrained")


def draw(fig, chart: Chart) -> None:
    """Redraw ``fig``: the chart on the left, the indicator and the figures on the right."""
    fig.clear()
    scale = min(1.0, max(0.7, fig.get_figwidth() * DPI / 1000))
    grid = fig.add_gridspec(1, 2, width_ratios=(2.6, 1))
    ax, panel = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    ax.set_title(chart.title, loc="left", fontsize=12)
    ax.set_xlabel(chart.xlabel)
    ax.set_ylabel("current (A)")
    ax.grid(True, alpha=0.3)
    peak = 0.0
    for label, xs, amps in chart.series:
        ax.plot(xs, amps, lw=1.6, label=label, marker="." if len(xs) < 120 else None)
        peak = max([peak, *amps])
    ax.set_ylim(0, max(10.0, peak * 1.15))
    if chart.xlim is not None:
        ax.set_xlim(*chart.xlim)
    first_xs = chart.series[0][1] if chart.series else []
    if first_xs and isinstance(first_xs[0], datetime):
        locator = AutoDateLocator(tz=first_xs[0].tzinfo)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=first_xs[0].tzinfo))
    if len(chart.series) > 1:
        ax.legend(loc="upper left", fontsize=8)
    for begin, end in chart.episodes:
        ax.axvspan(begin, end, color=ALARM_RED, alpha=0.12, lw=0)
    for x, severity in chart.markers:
        color = SEVERITY_COLORS.get(severity, ALARM_RED)
        ax.axvline(x, color=color, ls="--", lw=1)
        ax.scatter([x], [0.96], marker="v", s=90, color=color, zorder=5,
                   transform=ax.get_xaxis_transform(), clip_on=False)
    if chart.waiting:
        ax.text(0.5, 0.5, chart.waiting, transform=ax.transAxes, ha="center", va="center",
                fontsize=15, color="0.4")

    panel.axis("off")
    if chart.alarm:
        panel.text(0.03, 0.99, chart.alarm, va="top", fontsize=11 * scale, weight="bold",
                   color="white", bbox=dict(boxstyle="round,pad=0.5", facecolor=ALARM_RED,
                                            edgecolor="none"))
    else:
        panel.text(0.03, 0.99, chart.calm, va="top", fontsize=12 * scale, color="#38761d",
                   bbox=dict(boxstyle="round,pad=0.5", facecolor="#d9ead3", edgecolor="none"))
    panel.text(0.03, 0.76, "\n".join(chart.stats), va="top", fontsize=9 * scale,
               family="monospace", linespacing=1.6)
    panel.text(0.03, 0.5, "\n".join(chart.history), va="top", fontsize=9 * scale,
               family="monospace", linespacing=1.5)


def save_png(fig, path: Path) -> None:
    """Write the PNG through a temporary file, so a reader never sees half an image."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        fig.savefig(partial, format="png", dpi=DPI)
        os.replace(partial, path)
    except OSError as exc:
        raise cli.SimError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)


# -- the live plot -----------------------------------------------------------------------------

def receive(config: dict, view: LiveView, clock: Callable[[], float],
            stop: threading.Event) -> None:
    """Feed 0x300 frames to ``view`` until ``stop``; reconnects when the bus is lost."""
    def session(bus: can.BusABC) -> None:
        view.set_status(f"bus {canbus.describe(config)} connected")
        first = True
        try:
            while not stop.is_set():
                msg = bus.recv(timeout=0.2)
                frame = frames.decode_or_log(msg, log) if msg is not None else None
                if frame is not None and frame.arbitration_id == frames.MEASURED_CURRENT:
                    if first:
                        log.info("receiving 0x300 (first: %.1f A)", frame.amps)
                        first = False
                    detection = view.add(clock(), frame.amps)
                    if detection is not None:
                        log.info("detector %s: %s", detection.kind, detection.description)
        finally:
            view.set_status(f"bus {canbus.describe(config)} not reachable yet")

    view.set_status(f"bus {canbus.describe(config)} not reachable yet")
    canbus.keep_open(config, session, stop)


def gui_unavailable() -> Optional[str]:
    """Why no window can be opened here, or None if a GUI backend loaded."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY and WAYLAND_DISPLAY are not set)"
    from matplotlib.backends import BackendFilter, backend_registry
    try:
        import matplotlib.pyplot as plt
        backend = plt.get_backend().lower()
    except Exception as exc:  # a broken GUI toolkit raises anything from ImportError to TclError
        return f"the GUI backend failed to load ({exc})"
    if backend not in backend_registry.list_builtin(BackendFilter.INTERACTIVE):
        return f"no GUI backend available (matplotlib chose {backend})"
    return None


def live(args: argparse.Namespace) -> int:
    config = cli.can_config(args)
    headless = args.headless
    if not headless:
        reason = gui_unavailable()
        if reason:
            log.warning("%s: rendering headless to %s instead", reason,
                        args.output or DEFAULT_OUTPUT)
            headless = True
    if headless:
        matplotlib.use("Agg")

    started_mono, started_wall = time.monotonic(), time.time()

    def clock() -> float:
        return (time.monotonic() - started_mono) * args.speed

    def to_x(stamp: str) -> float:
        return (parse_timestamp(stamp).timestamp() - started_wall) * args.speed

    view = LiveView(args.window)
    stop = threading.Event()

    def frame() -> Chart:
        now = clock()
        window_start = started_wall + view.window_start(now) / args.speed
        history = read_history(args.db, datetime.fromtimestamp(window_start, UTC))
        return view.chart(now, history, to_x)

    def request_stop(signum, frame) -> None:
        # Not KeyboardInterrupt: raised inside one of matplotlib's weakref callbacks it is
        # swallowed. Not stop.set() here: it deadlocks if the signal came while this thread held
        # the event's lock. A thread of its own can always set it.
        threading.Thread(target=stop.set).start()

    previous = {signum: signal.signal(signum, request_stop) for signum in cli.stop_signals()}
    receiver = threading.Thread(target=receive, args=(config, view, clock, stop),
                                name="can-receiver", daemon=True)
    receiver.start()
    try:
        fig = new_figure(args.size, gui=not headless)
    except Exception as exc:  # a display that refuses the window: TclError, RuntimeError, ...
        log.warning("the GUI window failed to open (%s): rendering headless to %s instead",
                    exc, args.output or DEFAULT_OUTPUT)
        headless = True
        fig = new_figure(args.size)
    output = Path(args.output or DEFAULT_OUTPUT) if headless or args.output else None
    deadline = started_mono + args.duration / args.speed if args.duration else None
    log.info("plotting 0x300 from %s, window %g s%s", canbus.describe(config), args.window,
             f", writing {output} every {args.refresh:g} s" if output else "")
    try:
        while not stop.is_set():
            draw(fig, frame())
            if output:
                save_png(fig, output)
            left = deadline - time.monotonic() if deadline else args.refresh
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
        receiver.join(timeout=2)
        log.info("received %d 0x300 frames", view.received)
    return 0


# -- a past session or time range from the MemoryBank --------------------------------------------

def find_session(bank: MemoryBank, transaction_id: int, charge_point_id: Optional[str]) -> dict:
    sessions = [s for s in bank.get_sessions(limit=None, charge_point_id=charge_point_id)
                if s["transaction_id"] == transaction_id]
    if not sessions:
        raise cli.SimError(f"no session with transaction id {transaction_id}"
                           + (f" on {charge_point_id}" if charge_point_id else "")
                           + f" in {bank.path}")
    if len(sessions) > 1:
        raise cli.SimError(f"transaction id {transaction_id} is on several charge points ("
                           + ", ".join(sorted({s['charge_point_id'] for s in sessions}))
                           + "): choose one with --cp")
    return sessions[0]


def current_samples(bank: MemoryBank, **filters: Any) -> list[dict]:
    """Each current sample once: as the central system received it, else as the charge point
    reported it (a charge point run against another central system)."""
    return (bank.get_metrics("current", source="csms", **filters)
            or bank.get_metrics("current", **filters))


def past_chart(bank: MemoryBank, args: argparse.Namespace) -> Chart:
    """The chart of a session (``--from-db TX``) or of a time range (``--since``/``--until``).

    Anomalies come from the MemoryBank as csms.py recorded them, not from running the detector
    again: stored timestamps are wall-clock, and at ``--speed 10`` they are 10 times closer.
    """
    if args.from_db is not RANGE:
        session = find_session(bank, args.from_db, args.cp)
        cp = session["charge_point_id"]
        rows = current_samples(bank, charge_point_id=cp, transaction_id=args.from_db)
        since, until = session["start_time"], session["end_time"]
        what = f"session {cp} transaction {args.from_db}"
    else:
        cp = args.cp
        rows = current_samples(bank, charge_point_id=cp, since=args.since, until=args.until)
        since = until = None
        what = "current" + (f" of {cp}" if cp else "")
    if not rows:
        raise cli.SimError(f"no current samples for {what} in {bank.path}")
    since = since or rows[0]["timestamp"]
    until = until or rows[-1]["timestamp"]
    by_charge_point: dict[str, tuple[list, list[float]]] = {}
    for row in rows:
        xs, amps = by_charge_point.setdefault(row["charge_point_id"] or "?", ([], []))
        xs.append(parse_timestamp(row["timestamp"]).astimezone())
        amps.append(row["value"])
    anomalies = bank.get_anomalies(None, charge_point_id=cp, since=since, until=until)
    history = History.of(anomalies)
    worst = max((a["severity"] for a in anomalies), key=SEVERITIES.index, default=None)
    return Chart(
        title=f"{what[0].upper()}{what[1:]}: {local_time(since)} to {local_time(until)[6:]}",
        xlabel="local time",
        series=[(name, xs, values) for name, (xs, values) in sorted(by_charge_point.items())],
        stats=current_stats([row["value"] for row in rows])[1:] + [f"samples {len(rows):5d}"],
        alarm=f"{len(anomalies)} ANOMAL{'Y' if len(anomalies) == 1 else 'IES'}\nworst {worst}"
        if anomalies else None,
        calm="no anomaly recorded",
        markers=[(parse_timestamp(a["timestamp"]).astimezone(), a["severity"])
                 for a in anomalies],
        history=history.lines())


def from_db(args: argparse.Namespace) -> int:
    matplotlib.use("Agg")
    output = Path(args.output or DEFAULT_OUTPUT)
    try:
        with MemoryBank(args.db, readonly=True) as bank:
            chart = past_chart(bank, args)
    except MemoryBankError as exc:
        raise cli.SimError(exc) from None
    fig = new_figure(args.size)
    draw(fig, chart)
    save_png(fig, output)
    log.info("wrote %s", output)
    return 0


# -- command line ----------------------------------------------------------------------------------

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
    past.add_argument("--since", type=parse_since, metavar="WHEN",
                      help="with --from-db: start of the range, 10m / 2h / 3d ago or ISO time")
    past.add_argument("--until", type=parse_since, metavar="WHEN",
                      help="with --from-db: end of the range (default: now)")
    past.add_argument("--cp", metavar="ID", help="with --from-db: only this charge point")
    return parser


def check_output(output: Optional[str]) -> None:
    """Refuse a PNG path that can never be written, before any work is done."""
    path = Path(output or DEFAULT_OUTPUT)
    if path.is_dir():
        raise cli.UsageError(f"--output {path} is a directory, not a PNG file")
    if not path.parent.is_dir():
        raise cli.UsageError(f"--output {path}: the directory {path.parent} does not exist")


def run(args: argparse.Namespace) -> int:
    check_output(args.output)
    if args.from_db is None:
        if args.since or args.until or args.cp:
            raise cli.UsageError("--since, --until and --cp go with --from-db")
        return live(args)
    if args.from_db is RANGE and args.since is None:
        raise cli.UsageError("--from-db needs a session's transaction id or --since")
    return from_db(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
