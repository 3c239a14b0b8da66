"""When the samples say they were taken: TIMESTAMP_SKEW and METER_VALUE_GAP.

- Skew: each sample's timestamp against the central system's receive time (simulated s). The
  last ``samples`` offsets all beyond ``threshold_s`` the same way, and steady (within
  ``steady_s``, or a ``steady_share`` of the time their timestamps span, of each other), make an
  episode; it ends once the last ``samples`` are all within half the threshold. Steadiness
  tells a skewed clock, whose offset holds, from a backlog delivered after a reconnection,
  whose offsets shrink toward zero by nearly the sampling interval per message as it catches
  up.
- Gap: during a transaction, two consecutive samples further apart on the sample timeline than
  ``min_gap_s`` and ``factor`` times the usual interval (the median of the last ones), or a
  stop that long after the last sample. A clock jump is not a gap (the timeline absorbs it).
  Decided when the samples resume, so its latency is the gap itself.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

from evsim.detection.episodes import Episode
from evsim.detection.noise import median
from evsim.detection.observations import Finding


@dataclass(frozen=True)
class SkewConfig:
    threshold_s: float = 60.0
    samples: int = 10
    steady_s: float = 2.0
    steady_share: float = 0.25


class SkewDetector:
    def __init__(self, config: Optional[SkewConfig] = None) -> None:
        self.config = config or SkewConfig()
        self.episode = Episode("TIMESTAMP_SKEW")
        self._offsets: deque[float] = deque(maxlen=self.config.samples)
        self._times: deque[float] = deque(maxlen=self.config.samples)

    def update(self, t: float, offset: float) -> list[Finding]:
        """A sample at ``t`` whose timestamp was ``offset`` simulated s ahead of its receipt."""
        config, offsets = self.config, self._offsets
        offsets.append(offset)
        self._times.append(t)
        if len(offsets) < config.samples:
            return []
        low, high = min(offsets), max(offsets)
        steady = high - low <= max(config.steady_s,
                                   config.steady_share * (self._times[-1] - self._times[0]))
        skewed = steady and (low >= config.threshold_s or high <= -config.threshold_s)
        if self.episode.active:
            calm = max(abs(low), abs(high)) < config.threshold_s / 2
            found = self.episode.step(t, not calm)
        else:
            typical = median(list(offsets))
            way = "ahead of" if typical > 0 else "behind"
            found = self.episode.step(
                t, skewed, f"sample timestamps {abs(typical):.0f} s {way} the central system",
                {"current_value": round(typical, 1), "expected_value": 0.0,
                 "deviation": round(typical, 1)})
        return [found] if found else []

    def close(self, t: float) -> list[Finding]:
        found = self.episode.close(t)
        return [found] if found else []


@dataclass(frozen=True)
class GapConfig:
    min_gap_s: float = 10.0
    factor: float = 5.0
    intervals: int = 15
    min_intervals: int = 3


class GapDetector:
    def __init__(self, config: Optional[GapConfig] = None) -> None:
        self.config = config or GapConfig()
        self._intervals: deque[float] = deque(maxlen=self.config.intervals)
        self._last: Optional[float] = None
        self._session = False

    def session(self, t: float, open_: bool) -> list[Finding]:
        found = [] if open_ else self._judge(t, "until the transaction stopped")
        self._session, self._last = open_, None
        return found

    def update(self, t: float, jumped: bool) -> list[Finding]:
        """A sample at ``t`` on the timeline; ``jumped``: the clock jumped just before it."""
        if not self._session:
            return []
        found = [] if jumped else self._judge(t, "")
        if self._last is not None and not found and not jumped and t > self._last:
            self._intervals.append(t - self._last)
        self._last = t
        return found

    def _judge(self, t: float, why: str) -> list[Finding]:
        config, last = self.config, self._last
        if last is None or len(self._intervals) < config.min_intervals:
            return []
        usual = median(list(self._intervals))
        limit = max(config.min_gap_s, config.factor * usual)
        silent = t - last
        if silent <= limit:
            return []
        text = f"no MeterValues for {silent:.0f} s (usually every {usual:.0f} s)"
        values = {"current_value": round(silent, 1), "expected_value": round(usual, 1),
                  "deviation": round(silent - usual, 1), "gap_s": round(silent, 1)}
        return [Finding("METER_VALUE_GAP", "started", "MEDIUM",
                        f"{text} {why}".strip(), t, values)]
