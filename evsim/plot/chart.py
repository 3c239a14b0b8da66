"""What a chart of the current shows, as plain data: no matplotlib, no bus, no clock.

:class:`LiveView` keeps the rolling window of samples and the detector fed with them;
:class:`History` is what the MemoryBank says about anomalies; both turn into a :class:`Chart`,
which :mod:`evsim.plot.draw` renders. Times are simulated seconds since the plotter started.

Ground truth (the MemoryBank's labels) and what the central system detected (its anomalies) are
kept apart as :class:`Band` lists, so a miss, a false alarm or a late detection shows at a glance.
"""
from __future__ import annotations

import math
import textwrap
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from evsim.detection.fluctuation import Detection, FluctuationDetector
from evsim.timefmt import local_time

WAITING = "waiting for CAN data"
LATEST_ANOMALIES = 5
PANEL_CHARS = 30


@dataclass(frozen=True)
class Band:
    """An interval of the x axis about one anomaly type (``kind``); ``end`` None when only its
    beginning is known (an episode not ended, drawn as a marker)."""

    start: Any
    end: Optional[Any]
    kind: str


@dataclass(frozen=True)
class Feed:
    """Where a live view's samples come from, as its chart names them."""

    title: str
    series: str
    waiting: str


CAN_FEED = Feed("Charger current (CAN 0x300)", "0x300 current", WAITING)


@dataclass
class Chart:
    """Everything one frame of the chart shows; :func:`~evsim.plot.draw.draw` turns it into
    matplotlib artists."""

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
    ground_truth: list[Band] = field(default_factory=list)
    detected: list[Band] = field(default_factory=list)


@dataclass(frozen=True)
class History:
    """What the chart shows of the MemoryBank's anomalies: how many there are, the latest few
    (newest first) and those to mark on the chart; or why there are none to show."""

    total: int = 0
    latest: tuple[dict, ...] = ()
    marked: tuple[dict, ...] = ()
    problem: Optional[str] = None
    labels: tuple[dict, ...] = ()

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


def for_charge_point(row: Mapping[str, Any], charge_point_id: Optional[str]) -> bool:
    """Whether a row belongs on a chart of ``charge_point_id`` (None: of every charge point)."""
    return charge_point_id is None or row.get("charge_point_id") == charge_point_id


def ground_truth_bands(labels: Iterable[Mapping[str, Any]], to_x: Callable[[str], Any],
                       window: tuple[Any, Any],
                       charge_point_id: Optional[str] = None) -> list[Band]:
    """The labels that overlap ``window``, clipped to it, oldest first; a label still open
    runs to the window's end, as its fault still shows."""
    first, last = window
    bands = []
    for label in labels:
        if not for_charge_point(label, charge_point_id):
            continue
        start = to_x(label["start"])
        end = last if label.get("end") is None else to_x(label["end"])
        if start <= last and end >= first:
            bands.append(Band(max(start, first), min(end, last), str(label["anomaly_type"])))
    return sorted(bands, key=lambda band: band.start)


def detected_bands(anomalies: Iterable[Mapping[str, Any]], to_x: Callable[[str], Any],
                   window: tuple[Any, Any], charge_point_id: Optional[str] = None) -> list[Band]:
    """The anomalies' episodes that overlap ``window``, clipped to it, oldest first: from the
    detection to its ``end_time`` once it has ended, else only the detection (``end`` None)."""
    first, last = window
    bands = []
    for anomaly in anomalies:
        if not for_charge_point(anomaly, charge_point_id):
            continue
        start = to_x(anomaly["timestamp"])
        end = to_x(anomaly["end_time"]) if anomaly.get("end_time") else None
        if start <= last and (start if end is None else end) >= first:
            bands.append(Band(max(start, first), None if end is None else min(end, last),
                              str(anomaly.get("anomaly_type") or "")))
    return sorted(bands, key=lambda band: band.start)


def captions(bands: Sequence[Band], position: Callable[[Any], float],
             min_gap: float) -> list[Optional[str]]:
    """The text beside each band of a lane (None: none): its kind, at least ``min_gap`` (in
    ``position`` units) after the caption before it so none writes over another, and not again
    for a band of the kind last named unless another kind came between."""
    shown: list[Optional[str]] = []
    named: Optional[str] = None
    named_at = -math.inf
    other_since = False
    for band in bands:
        x = position(band.start)
        fresh = x - named_at >= min_gap and (band.kind != named or other_since)
        shown.append(band.kind if fresh else None)
        if fresh:
            named, named_at, other_since = band.kind, x, False
        else:
            other_since = other_since or band.kind != named
    return shown


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
    """The rolling window of samples (0x300 frames, or a charge point's recorded current: its
    ``feed``) and the detector fed with them.

    Thread-safe: the CAN receiver adds samples while the drawing loop makes charts. The
    MemoryBank's anomalies and labels it marks on the chart are of ``charge_point_id`` only, or
    of every charge point (None); the panel's count and latest anomalies are of the whole site.
    """

    def __init__(self, window_s: float, detector: Optional[FluctuationDetector] = None,
                 charge_point_id: Optional[str] = None, feed: Feed = CAN_FEED) -> None:
        self.window_s = window_s
        self.charge_point_id = charge_point_id
        self.feed = feed
        self.detector = detector or FluctuationDetector()
        self.samples: deque[tuple[float, float]] = deque()
        self.detection: Optional[Detection] = None
        self.episodes: list[list[Optional[float]]] = []
        self.status = ""
        self.received = 0
        self._lock = threading.Lock()

    def add(self, t: float, amps: float) -> Optional[Detection]:
        """One sample at simulated time ``t``, not before the last one."""
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
                title=f"{self.feed.title}, last {self.window_s:g} s",
                xlabel="simulated time since start (s)",
                series=[(self.feed.series, [t for t, _ in shown], amps)],
                xlim=(start, max(now, self.window_s)),
                waiting=None if shown else f"{self.feed.waiting}\n{self.status}".strip(),
                stats=current_stats(amps) + [
                    f"swings {self.detector.swings:3d} in {self.detector.config.window_s:g} s"],
                alarm=alarm_text(self.detection) if self.detector.active else None,
                calm="current steady" if shown else "no data yet",
                episodes=[(begin, now if end is None else end) for begin, end in self.episodes
                          if end is None or end >= start],
                history=history.lines())
        for anomaly in history.marked:
            x = to_x(anomaly["timestamp"])
            if start <= x <= now and for_charge_point(anomaly, self.charge_point_id):
                chart.markers.append((x, anomaly["severity"]))
        window = (start, now)
        chart.ground_truth = ground_truth_bands(history.labels, to_x, window,
                                                self.charge_point_id)
        chart.detected = detected_bands(history.marked, to_x, window, self.charge_point_id)
        return chart
