"""Detects a repeated fluctuation of the charging current and learns it as a pattern.

Pure logic: :class:`FluctuationDetector` is fed ``(t, amps)`` samples, ``t`` in simulated seconds,
and has no clock and no I/O, so a run at ``--speed 10`` makes the decisions of a run at
``--speed 1``. What an episode teaches (learned patterns) is in :mod:`evsim.detection.patterns`.

How it decides. A zigzag (turning point) tracker turns the samples into *swings*: moves between
two turning points at least ``min_swing_a`` apart, confirmed by two samples in a row past that
threshold, so that one outlier is not a swing. Noise smaller than the threshold never makes a
swing, and a slow ramp is a single swing however long it lasts. An *episode* starts when
``min_swings`` swings fall inside the last ``window_s`` seconds, and ends once the window holds
no swing (the current has been calm for ``window_s``): one anomaly per episode, escalated while
it grows. The period is measured between the moments swings of the same direction are
confirmed, which a flat, noisy bottom or top does not blur.

Noise. Bounded noise of +/-2 A never fires. Gaussian noise of sigma 2 A on a steady current
(outliers of 8 A and more) made no episode in 1,000 simulated hours at one sample a second (the
charge point's meter values; without the two-sample confirmation about one hour in two had a
false LOW episode), but 2 false LOW episodes in 40 hours at ten samples a second: with many
samples, runs of outliers become likely; a faster signal that noisy needs a larger
``min_swing_a``. The price of the confirmation is one sample of latency, and a fluctuation
seen in single samples (a 14 A peak-to-peak sine of 4 s period sampled every second) is missed.

Defaults, from the seed's scenario (8 s cycle: limit 0 A for 2 s, limit 100 A for 1 s, start for
2 s, stop for 3 s; the charger closes 20 % of its gap per second, so the current only climbs
0 -> 36 A before it falls back):

- ``min_swing_a = 10``: under a third of the seed's 36 A swing, while +/-2 A noise spans 4 A.
- ``min_swings = 3``: a rise, a fall and a rise again. A start and a stop are 2 swings and never
  fire; the seed fires on its second rise, 9 to 10 s after its first swing (inside cycle two).
- ``window_s = 20``: three swings of an oscillation with a period up to ~20 s; slower changes
  are a charging profile, not a fluctuation.
- Severity: score = (swings / min_swings) x (peak-to-peak amplitude / min_swing_a); LOW below 2,
  MEDIUM from 2, HIGH from 5, CRITICAL from 10. The seed starts MEDIUM (3 swings of 36 A: 3.6),
  is HIGH at its 5th swing and CRITICAL at its 9th.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from evsim.constants import SEVERITIES

ANOMALY_TYPE = "CURRENT_FLUCTUATION"


@dataclass(frozen=True)
class DetectorConfig:
    min_swing_a: float = 10.0
    min_swings: int = 3
    window_s: float = 20.0
    severity_scores: tuple[float, float, float] = (2.0, 5.0, 10.0)

    def __post_init__(self) -> None:
        if not self.min_swing_a > 0:
            raise ValueError(f"min_swing_a must be positive, got {self.min_swing_a}")
        if self.min_swings < 2:
            raise ValueError(f"min_swings must be at least 2 (a rise and a fall), "
                             f"got {self.min_swings}")
        if not self.window_s > 0:
            raise ValueError(f"window_s must be positive, got {self.window_s}")
        if list(self.severity_scores) != sorted(self.severity_scores) or \
                len(self.severity_scores) != len(SEVERITIES) - 1:
            raise ValueError(f"severity_scores must be 3 increasing scores, "
                             f"got {self.severity_scores}")


@dataclass(frozen=True)
class Detection:
    """One step of an episode: it ``started``, ``escalated`` (severity rose) or ``ended``.

    ``amplitude_a`` is the mean peak-to-peak size of the episode's completed swings,
    ``expected_a`` the mean current over the window (the level it swings around) and
    ``deviation_a`` how far the farthest turning point in the window strayed from it.
    """

    kind: str
    severity: str
    swings: int
    period_s: Optional[float]
    amplitude_a: float
    expected_a: float
    current_a: float
    deviation_a: float
    started_at: float
    description: str

    def pattern_parameters(self) -> dict[str, Any]:
        return {"period_s": self.period_s, "amplitude_a": self.amplitude_a, "swings": self.swings}


@dataclass
class _Swing:
    start_t: float
    start_a: float
    end_t: float
    end_a: float
    counted_at: float

    @property
    def rising(self) -> bool:
        return self.end_a > self.start_a

    @property
    def size(self) -> float:
        return abs(self.end_a - self.start_a)


@dataclass
class _Episode:
    started_at: float
    swings: int = 0
    severity: int = 0
    sizes: float = 0.0
    sized: int = 0
    periods: float = 0.0
    timed: int = 0
    last_counted: dict[bool, float] = field(default_factory=dict)

    def add_started(self, swing: _Swing) -> None:
        self.swings += 1
        previous = self.last_counted.get(swing.rising)
        if previous is not None:
            self.periods += swing.counted_at - previous
            self.timed += 1
        self.last_counted[swing.rising] = swing.counted_at

    def add_completed(self, swing: _Swing) -> None:
        self.sizes += swing.size
        self.sized += 1

    @property
    def amplitude(self) -> float:
        return self.sizes / self.sized if self.sized else 0.0

    @property
    def period(self) -> Optional[float]:
        return self.periods / self.timed if self.timed else None


class FluctuationDetector:
    """One per signal (charge point): ``update(t, amps)`` returns a :class:`Detection` or None."""

    def __init__(self, config: Optional[DetectorConfig] = None) -> None:
        self.config = config or DetectorConfig()
        self._reset()

    def _reset(self) -> None:
        self._last: Optional[tuple[float, float]] = None
        self._low: Optional[tuple[float, float]] = None
        self._high: Optional[tuple[float, float]] = None
        self._leg: Optional[_Swing] = None
        self._pending: Optional[tuple[tuple[float, float], tuple[float, float]]] = None
        self._swings: deque[_Swing] = deque()
        self._samples: deque[tuple[float, float]] = deque()
        self._sum = 0.0
        self._episode: Optional[_Episode] = None

    @property
    def active(self) -> bool:
        """An episode is going on."""
        return self._episode is not None

    @property
    def swings(self) -> int:
        """Swings counted inside the window, as of the last sample."""
        return len(self._swings)

    def update(self, t: float, amps: float) -> Optional[Detection]:
        """Feed one sample; out-of-order or non-finite samples are ignored."""
        if not (math.isfinite(t) and math.isfinite(amps)):
            return None
        if self._last is not None and t < self._last[0]:
            return None
        self._last = (t, amps)
        self._slide_window(t, amps)
        ended = self._end(t) if self._episode is not None and not self._swings else None
        new_swing = self._track(t, amps)
        if ended is not None or new_swing is None:
            return ended
        if self._episode is None:
            return self._start(t) if len(self._swings) >= self.config.min_swings else None
        self._episode.add_started(new_swing)
        return self._escalate()

    def close(self, t: float) -> Optional[Detection]:
        """End an open episode (shutdown, or the session ended) and start afresh."""
        detection = self._end(t) if self._episode is not None else None
        self._reset()
        return detection

    def _slide_window(self, t: float, amps: float) -> None:
        horizon = t - self.config.window_s
        while self._swings and self._swings[0].counted_at < horizon:
            self._swings.popleft()
        while self._samples and self._samples[0][0] < horizon:
            self._sum -= self._samples.popleft()[1]
        self._samples.append((t, amps))
        self._sum += amps

    def _track(self, t: float, amps: float) -> Optional[_Swing]:
        """Advance the zigzag; returns the swing this sample confirmed, if any."""
        leg, threshold = self._leg, self.config.min_swing_a
        if leg is None:
            if self._low is None or amps <= self._low[1]:
                self._low = (t, amps)
            if self._high is None or amps >= self._high[1]:
                self._high = (t, amps)
            if self._high[1] - self._low[1] < threshold:
                self._pending = None
                return None
            start = self._low if self._low[0] < self._high[0] else self._high
            return self._confirm(start, t, amps)
        if (amps >= leg.end_a) if leg.rising else (amps <= leg.end_a):
            leg.end_t, leg.end_a = t, amps
            self._pending = None
            return None
        if abs(amps - leg.end_a) < threshold:
            self._pending = None
            return None
        return self._confirm((leg.end_t, leg.end_a), t, amps)

    def _confirm(self, start: tuple[float, float], t: float, amps: float) -> Optional[_Swing]:
        """A move past the threshold from ``start`` is a swing once a second sample in a row
        has moved past it from the same start, the same way: one outlier is not a swing."""
        pending = self._pending
        if (pending is None or pending[0] != start
                or (pending[1][1] > start[1]) != (amps > start[1])):
            self._pending = (start, (t, amps))
            return None
        first, self._pending = pending[1], None
        if self._leg is not None and self._episode is not None:
            self._episode.add_completed(self._leg)
        self._leg = swing = _Swing(start[0], start[1], *first, counted_at=t)
        if (amps > swing.end_a) if swing.rising else (amps < swing.end_a):
            swing.end_t, swing.end_a = t, amps
        self._swings.append(swing)
        return swing

    def _start(self, t: float) -> Detection:
        episode = self._episode = _Episode(started_at=self._swings[0].start_t)
        for swing in self._swings:
            episode.add_started(swing)
            if swing is not self._leg:
                episode.add_completed(swing)
        episode.severity = self._severity_level()
        return self._detection("started", t)

    def _escalate(self) -> Optional[Detection]:
        level = self._severity_level()
        if level <= self._episode.severity:
            return None
        self._episode.severity = level
        return self._detection("escalated", self._last[0])

    def _end(self, t: float) -> Detection:
        detection = self._detection("ended", t)
        self._episode = None
        return detection

    def _severity_level(self) -> int:
        episode, config = self._episode, self.config
        score = (episode.swings / config.min_swings) * (episode.amplitude / config.min_swing_a)
        return sum(score >= threshold for threshold in config.severity_scores)

    def _detection(self, kind: str, t: float) -> Detection:
        episode = self._episode
        expected = self._sum / len(self._samples)
        extremes = [a for swing in self._swings for a in (swing.start_a, swing.end_a)]
        current = self._last[1]
        deviation = max((abs(a - expected) for a in extremes), default=abs(current - expected))
        severity = SEVERITIES[episode.severity]
        period, amplitude = episode.period, episode.amplitude
        every = f", period {period:.1f} s" if period is not None else ""
        summary = (f"{episode.swings} swings of {amplitude:.1f} A peak to peak{every}, around "
                   f"{expected:.1f} A (now {current:.1f} A)")
        lead = {"started": "current fluctuation",
                "escalated": f"current fluctuation escalated to {severity}",
                "ended": f"current fluctuation ended after {t - episode.started_at:.0f} s"}[kind]
        return Detection(kind=kind, severity=severity, swings=episode.swings,
                         period_s=_round(period), amplitude_a=round(amplitude, 2),
                         expected_a=round(expected, 2), current_a=round(current, 2),
                         deviation_a=round(deviation, 2), started_at=episode.started_at,
                         description=f"{lead}: {summary}")


def _round(value: Optional[float], digits: int = 2) -> Optional[float]:
    return None if value is None else round(value, digits)


_MOVED_TO_PATTERNS = ("PATTERN_PREFIX", "pattern_name", "match_pattern", "merge_pattern")


def __getattr__(name: str) -> Any:
    """The pattern functions moved to :mod:`evsim.detection.patterns`; they stay reachable here
    for callers written against this module. Loaded on first use, because patterns imports this
    module."""
    if name in _MOVED_TO_PATTERNS:
        from evsim.detection import patterns
        return getattr(patterns, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
