"""OVER_CURRENT and PROFILE_IGNORED: the current against the limit in force.

The limit is told by the caller (the composite of the profiles the central system set, or the
charge point's own ``Current.Offered``). After each change, and after a session starts, the
current has ``settle_s`` to follow; then the median of the samples since (at most the last
``window_s``) is compared with the limit. It is *above* when it exceeds the limit by more than
``margin_a`` (or ``margin_frac`` of the limit) plus ``z`` standard errors of a median of n
samples of the estimated noise, so a noisy current sitting at its limit never is, however long;
an episode goes on while it exceeds it by the margin alone.

Above the limit after a *binding decrease* (the limit fell below the current, which was not
already in an over-current episode) and still in the upper half of the gap between the old
current and the new limit, the charger did not follow: PROFILE_IGNORED. Above it otherwise: OVER_CURRENT. One episode of
each at a time; an episode ends once the current has not been above for ``clear_s``, or with the
session. Judged at most once per simulated second, which keeps ten samples a second cheap.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional

from evsim.detection.episodes import Episode
from evsim.detection.noise import NoiseEstimator, median
from evsim.detection.observations import Finding

MEDIAN_EFFICIENCY = math.sqrt(math.pi / 2)  # standard error of a median / of a mean
BEFORE_S = 10.0  # the current "before" a change: the median of this long before it
CHANGE_A = 0.1  # a smaller move of the limit is no change


@dataclass(frozen=True)
class LimitConfig:
    settle_s: float = 5.0
    window_s: float = 20.0
    margin_a: float = 1.0
    margin_frac: float = 0.05
    z: float = 5.0
    clear_s: float = 10.0
    min_samples: int = 3
    every_s: float = 1.0


class LimitDetector:
    """The current of one connector against its limit in force."""

    def __init__(self, config: Optional[LimitConfig] = None) -> None:
        self.config = config or LimitConfig()
        self.over = Episode("OVER_CURRENT", clear_s=self.config.clear_s)
        self.ignored = Episode("PROFILE_IGNORED", clear_s=self.config.clear_s)
        self._noise = NoiseEstimator(blocks=32)
        self._samples: deque[tuple[float, float]] = deque()
        self._limit: Optional[float] = None
        self._since = -math.inf
        self._session: Optional[float] = None
        self._decrease: Optional[tuple[float, float]] = None  # (current before, new limit)
        self._judged = -math.inf

    @property
    def limit(self) -> Optional[float]:
        return self._limit

    def set_limit(self, t: float, amps: Optional[float]) -> None:
        """The limit in force from ``t`` on (None: none known)."""
        old = self._limit
        if amps is not None and old is not None and abs(amps - old) < CHANGE_A:
            return
        if amps is None and old is None:
            return
        self._limit, self._since = amps, t
        before = [a for at, a in self._samples if at >= t - BEFORE_S]
        level = median(before) if before else None
        self._decrease = None
        if amps is not None and old is not None and level is not None and amps < old - CHANGE_A \
                and level > amps + self._margin(amps) and not self.over.active:
            self._decrease = (level, amps)

    def session(self, t: float, open_: bool) -> list[Finding]:
        """A transaction started (``open_``) or stopped at ``t``."""
        self._samples.clear()
        self._noise.skip()
        self._decrease = None
        self._session = t if open_ else None
        if open_:
            return []
        return [f for f in (self.over.close(t, "session ended"),
                            self.ignored.close(t, "session ended")) if f]

    def update(self, t: float, amps: float) -> list[Finding]:
        """A current sample at ``t`` while a transaction runs."""
        if self._session is None:
            return []
        config = self.config
        self._noise.add(amps)
        samples = self._samples
        samples.append((t, amps))
        while samples and samples[0][0] < t - max(config.window_s, BEFORE_S):
            samples.popleft()
        if t - self._judged < config.every_s:
            return []
        self._judged = t
        limit = self._limit
        begin = max(self._since, self._session) + config.settle_s
        if limit is None or t < begin:
            return []
        window = [a for at, a in samples if at >= max(begin, t - config.window_s)]
        if len(window) < config.min_samples:
            return []
        level = median(window)
        error = config.z * MEDIAN_EFFICIENCY * self._noise.sigma / math.sqrt(len(window))
        # to start, surely above; to go on, above by the margin (a current hovering at the
        # bar makes one episode, not many)
        bar = limit + self._margin(limit)
        surely, still = level > bar + error, level > bar
        decrease = self._decrease
        upper_half = decrease is not None and level >= (decrease[0] + limit) / 2
        ignoring = (still if self.ignored.active else surely) and upper_half
        values = {"current_value": round(level, 2), "expected_value": round(limit, 2),
                  "deviation": round(level - limit, 2)}
        found = [self.ignored.step(t, ignoring, f"limit lowered to {limit:.1f} A not followed: "
                                   f"current {level:.1f} A (was {decrease[0]:.1f} A)"
                                   if ignoring else "", values)]
        over = (still if self.over.active else surely) and not ignoring and \
            not self.ignored.active
        found.append(self.over.step(t, over, f"current {level:.1f} A above the limit "
                                    f"{limit:.1f} A" if over else "", values))
        return [f for f in found if f]

    def close(self, t: float) -> list[Finding]:
        return [f for f in (self.over.close(t), self.ignored.close(t)) if f]

    def _margin(self, limit: float) -> float:
        return max(self.config.margin_a, self.config.margin_frac * limit)

