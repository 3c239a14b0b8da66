"""What a chart of the current shows, as plain data: no matplotlib, no bus, no clock.

:class:`LiveView` keeps the rolling window of 0x300 samples and the detector fed with them;
:class:`History` is what the MemoryBank says about anomalies; both turn into a :class:`Chart`,
which :mod:`evsim.plot.draw` renders. Times are simulated seconds since the plotter started.
"""
from __future__ import annotations

import textwrap
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from evsim.detection.fluctuation import Detection, FluctuationDetector
from evsim.timefmt import local_time

WAITING = "waiting for CAN data"
LATEST_ANOMALIES = 5
PANEL_CHARS = 30


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
    """The rolling window of 0x300 samples and the detector fed with them.

    Thread-safe: the CAN receiver adds samples while the drawing loop makes charts.
    """

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
