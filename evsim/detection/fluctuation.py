"""Detects a repeated fluctuation of the charging current and learns it as a pattern.

Pure logic: :class:`FluctuationDetector` is fed ``(t, amps)`` samples, ``t`` in simulated seconds,
and has no clock and no I/O, so a run at ``--speed 10`` makes the decisions of a run at
``--speed 1``. What an episode teaches (learned patterns) is in :mod:`evsim.detection.patterns`.

How it decides. A zigzag tracker (:mod:`evsim.detection.swings`) turns the samples into
*swings*: moves of at least ``h`` between two turning points, ``h`` being ``min_swing_a``, or
``noise_k`` times the estimated noise when that is more. An *episode* starts when
``min_swings`` swings fall inside the last ``window_s`` seconds and the samples of the swinging
pass two tests: they vary more than noise could (a chi-square test on their variance, as rare
for noise as a normal variable beyond ``significance``), and by a fluctuation of at least
``min_swing_a`` peak to peak once the noise variance is taken out (so noise cannot stretch an
8 A ripple into 10 A swings). It ends once the window holds no swing and its samples vary no
more than noise (a fluctuation at the edge of the noise may miss a swing for a while): one
anomaly per episode, escalated while it grows. The period is measured between the moments
swings of the same direction are counted.

A swing may last a single sample (a square wave of period 2 s, a 14 A peak-to-peak sine of
period 4 s, both sampled once a second). What keeps noise out is estimating it, not a higher
bar:

- *Noise estimate* (:mod:`evsim.detection.noise`): learned from the calm stretches only
  (current flowing, no swing in the window, the samples of the last ``memory_s`` within
  ``min_swing_a`` of each other), so a fluctuation big enough to matter never raises the bar
  that would hide it; on noise of sigma 2 A such stretches are the rule, and leaving out the
  rare others does not bias it (at sigma 3 A it reads some 10 % low). An upper confidence
  bound, and 2 A until a few samples are known.
- *Turning points expire* after ``memory_s``: on a steady noisy current the extreme of an ever
  longer stretch would keep growing until noise alone made a swing from it.
- *Glitches* (:mod:`evsim.detection.glitches`): a single sample that leaves a calm current and
  comes straight back is replaced by its neighbours' mean. This holds each sample back by two,
  so a decision comes two samples after the sample that made it.
- *Confirmation in time*: a move past ``h`` counts once the samples of the last ``confirm_s``
  (at least one) all show it: three in a row at ten samples a second, one at one a second.

Gaussian noise of sigma 2 A on a steady current made no episode in 1,000 simulated hours at one
sample a second nor at ten (``benchmarks/detection.py``).

Defaults, from the seed's scenario (8 s cycle: limit 0 A for 2 s, limit 100 A for 1 s, start for
2 s, stop for 3 s; the charger closes 20 % of its gap per second, so the current only climbs
0 -> 36 A before it falls back):

- ``min_swing_a = 10``: under a third of the seed's 36 A swing, while +/-2 A noise spans 4 A.
- ``min_swings = 3``: a rise, a fall and a rise again. A start and a stop are 2 swings and never
  fire; the seed fires on its second rise, inside cycle two.
- ``window_s = 20``: three swings of an oscillation with a period up to ~20 s; slower changes
  are a charging profile, not a fluctuation.
- ``noise_k = 6``: noise of sigma 2 A raises ``h`` to 12 A; then a swing is a pair of samples
  six sigmas apart within seconds, which noise makes a few times a day.
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
from evsim.detection.glitches import GlitchFilter
from evsim.detection.noise import NoiseEstimator
from evsim.detection.swings import Swing, Zigzag

ANOMALY_TYPE = "CURRENT_FLUCTUATION"
AMPLITUDE_Z = 1.5  # the variance of the swinging samples is taken this sure (lower bound)
QUIET_Z = 3.0  # an episode ends once the window's variance is within this of the noise's
IDLE_A = 1.0  # below this no current flows: such samples tell nothing of the noise
GLITCH_CALM_K = 4.0  # around a glitch the signal moves less than this many noise sigmas


@dataclass(frozen=True)
class DetectorConfig:
    min_swing_a: float = 10.0
    min_swings: int = 3
    window_s: float = 20.0
    severity_scores: tuple[float, float, float] = (2.0, 5.0, 10.0)
    noise_k: float = 6.0
    significance: float = 5.5
    confirm_s: float = 0.25
    noise_floor_a: float = 0.3
    memory_s: float = 10.0

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
        if self.noise_k < 0 or self.significance < 0 or self.confirm_s < 0 or \
                not self.noise_floor_a > 0:
            raise ValueError("noise_k, significance and confirm_s must be >= 0 and "
                             "noise_floor_a > 0")


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
class _Episode:
    started_at: float
    swings: int = 0
    severity: int = 0
    sizes: float = 0.0
    sized: int = 0
    periods: float = 0.0
    timed: int = 0
    last_counted: dict[bool, float] = field(default_factory=dict)

    def add_started(self, swing: Swing) -> None:
        self.swings += 1
        previous = self.last_counted.get(swing.rising)
        if previous is not None:
            self.periods += swing.counted_at - previous
            self.timed += 1
        self.last_counted[swing.rising] = swing.counted_at

    def add_completed(self, swing: Swing) -> None:
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
        config = self.config
        self._last: Optional[tuple[float, float]] = None
        self._glitches = GlitchFilter()
        self._lookahead: list[tuple[float, float]] = []
        self._processed: Optional[tuple[float, float]] = None
        self._zigzag = Zigzag(config.memory_s, config.confirm_s)
        self._swings: deque[Swing] = deque()
        self._samples: deque[tuple[float, float]] = deque()
        self._episode: Optional[_Episode] = None
        self._noise = NoiseEstimator(blocks=128, floor=config.noise_floor_a)

    @property
    def active(self) -> bool:
        """An episode is going on."""
        return self._episode is not None

    @property
    def swings(self) -> int:
        """Swings counted inside the window, as of the last sample processed."""
        return len(self._swings)

    @property
    def noise_a(self) -> float:
        """The estimated standard deviation of the noise on the current (from its calm
        stretches, at its upper confidence bound)."""
        return self._noise.sigma

    @property
    def threshold_a(self) -> float:
        """The smallest move that is a swing: ``min_swing_a``, or more on a noisier signal."""
        return max(self.config.min_swing_a, self.config.noise_k * self.noise_a)

    def update(self, t: float, amps: float) -> Optional[Detection]:
        """Feed one sample; out-of-order or non-finite samples are ignored. A decision comes two
        samples late: each sample is held back until the next two show whether it was a
        glitch."""
        if not (math.isfinite(t) and math.isfinite(amps)):
            return None
        last = self._last
        if last is not None:
            if t < last[0]:
                return None
            self._zigzag.interval(t - last[0])
        self._last = (t, amps)
        height = self.threshold_a / 2
        decided = self._glitches.push(t, amps, height,
                                      max(height, GLITCH_CALM_K * self.noise_a))
        if decided is None:
            return None
        self._lookahead = self._glitches.lookahead
        return self._process(*decided)

    def close(self, t: float) -> Optional[Detection]:
        """End an open episode (shutdown, or the session ended) and start afresh."""
        detection = None
        self._lookahead = []
        for held in self._glitches.flush():
            detection = self._process(*held) or detection
        if self._episode is not None:
            detection = self._end(t)
        self._reset()
        return detection

    def _observe_noise(self, amps: float) -> None:
        calm = self._episode is None and not self._swings and \
            self._zigzag.range_a < self.config.min_swing_a
        if calm and amps >= IDLE_A:
            self._noise.add(amps)
        else:  # during a fluctuation, or idle (a meter reads an idle 0 A exactly)
            self._noise.skip()

    def _process(self, t: float, amps: float) -> Optional[Detection]:
        self._processed = (t, amps)
        self._slide_window(t, amps)
        self._zigzag.remember(t, amps)
        self._observe_noise(amps)
        ended = None
        if self._episode is not None and not self._swings and self._quiet(t):
            ended = self._end(t)
        new_swing, completed = self._zigzag.track(t, amps, self.threshold_a)
        if ended is not None or new_swing is None:
            return ended
        self._swings.append(new_swing)
        if self._episode is None:
            if len(self._swings) >= self.config.min_swings and self._significant():
                return self._start(t)
            return None
        if completed is not None:
            self._episode.add_completed(completed)
        self._episode.add_started(new_swing)
        return self._escalate()

    def _slide_window(self, t: float, amps: float) -> None:
        horizon = t - self.config.window_s
        while self._swings and self._swings[0].counted_at < horizon:
            self._swings.popleft()
        samples = self._samples
        keep = t - 2 * self.config.window_s  # a swing counted in the window may start earlier
        while samples and samples[0][0] < keep:
            samples.popleft()
        samples.append((t, amps))

    def _significant(self) -> bool:
        """Do the samples of the swinging vary more than noise could, and by a fluctuation of
        ``min_swing_a`` once the noise is taken out? The samples are those from the turning
        point where the first of the last ``min_swings`` swings ended (the leg that led there
        may be a start's ramp, not a swing) to the newest, the two held back included. Their
        variance over the noise's is tested against the chi-square spread of n samples, and
        the peak-to-peak size of a sine of their variance less the noise's must reach
        ``min_swing_a`` (noise stretches a swing measured between two noisy turning points,
        not the variance of them all), the variance taken at its lower confidence bound
        (``AMPLITUDE_Z``): few samples picked at turning points overstate it."""
        begin = self._swings[-self.config.min_swings].end_t
        values = [amps for _, amps in self._lookahead]
        for t, amps in reversed(self._samples):
            if t < begin:
                break
            values.append(amps)
        n = len(values)
        if n < 3:
            return False
        variance = _variance(values)
        noise = self.noise_a ** 2
        if variance / noise < chi2_ratio(n - 1, self.config.significance):
            return False
        surely = variance / chi2_ratio(n - 1, AMPLITUDE_Z)
        return 2 * math.sqrt(2 * max(0.0, surely - noise)) >= self.config.min_swing_a

    def _quiet(self, t: float) -> bool:
        """Do the samples of the last window vary no more than noise may? (A fluctuation at the
        edge of the noise can go a window without a swing; its episode goes on.)"""
        values = [amps for at, amps in self._samples if at >= t - self.config.window_s]
        if len(values) < 3:
            return True
        return _variance(values) / self.noise_a ** 2 < chi2_ratio(len(values) - 1, QUIET_Z)

    def _start(self, t: float) -> Detection:
        episode = self._episode = _Episode(started_at=self._swings[0].start_t)
        for swing in self._swings:
            episode.add_started(swing)
            if swing is not self._zigzag.leg:
                episode.add_completed(swing)
        episode.severity = self._severity_level()
        return self._detection("started", t)

    def _escalate(self) -> Optional[Detection]:
        level = self._severity_level()
        if level <= self._episode.severity:
            return None
        self._episode.severity = level
        return self._detection("escalated", self._processed[0])

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
        horizon = (self._processed or (t, 0.0))[0] - self.config.window_s
        window = [a for at, a in self._samples if at >= horizon] or [0.0]
        expected = sum(window) / len(window)
        extremes = [a for swing in self._swings for a in (swing.start_a, swing.end_a)]
        current = (self._processed or (t, 0.0))[1]
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


def _variance(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return sum((a - mean) ** 2 for a in values) / (len(values) - 1)


def chi2_ratio(dof: int, z: float) -> float:
    """The variance ratio (chi-square over its degrees of freedom) that white noise exceeds
    as rarely as a normal variable exceeds ``z`` (Wilson-Hilferty), exact enough for few
    samples, where the normal approximation of the chi-square is far too lenient."""
    third = 2 / (9 * dof)
    return (1 - third + z * math.sqrt(third)) ** 3


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
