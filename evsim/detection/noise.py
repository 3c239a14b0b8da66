"""How noisy a signal is, estimated from the signal itself, so that a detector can ask "is this
more than noise?" instead of using a bar high enough for the worst meter.

The estimate is the median absolute *second* difference of consecutive samples, scaled to the
standard deviation of white noise (for N(0, sigma) noise, median |x[i+1] - 2 x[i] + x[i-1]| is
0.6745 x sqrt(6) x sigma). Second differences cancel a ramp, and the median ignores the few
large ones a step or a glitch makes. It is kept per block of samples and the median of the
recent blocks is used, so one sample costs O(1) and an oscillation that the caller does not
exclude moves the estimate only once it fills most of the blocks.

A median of m differences is only so sure (about 1.2 / sqrt(m) relative), and a detector must
err toward silence while it learns, so :attr:`NoiseEstimator.sigma` is an upper confidence
bound: the estimate times ``1 + UPPER_Z x 1.2 / sqrt(m)``, and a prior of 2 A (the noisiest
meter the detectors are meant for) until ``MIN_DIFFERENCES`` are known.
"""
from __future__ import annotations

import math
from collections import deque

WHITE_NOISE_SCALE = 0.6745 * math.sqrt(6)
MEDIAN_SPREAD = 1.2  # relative standard deviation of the estimate, times sqrt(m)
UPPER_Z = 1.0
MIN_DIFFERENCES = 16


class NoiseEstimator:
    """Standard deviation of the white noise on a signal, from its calm stretches."""

    def __init__(self, block: int = 16, blocks: int = 64, floor: float = 0.3,
                 prior: float = 2.0) -> None:
        self.block, self.floor, self.prior = block, floor, prior
        self._early: list[float] = []  # every difference, until the blocks take over
        self._current: list[float] = []
        self._medians: deque[float] = deque(maxlen=blocks)
        self._x1: float | None = None
        self._x2: float | None = None
        self._sigma = max(prior, floor)

    @property
    def sigma(self) -> float:
        """The estimate, at its upper confidence bound (``prior`` until a few are known)."""
        return self._sigma

    @property
    def differences(self) -> int:
        """How many differences the estimate rests on."""
        return len(self._medians) * self.block + len(self._current)

    def add(self, value: float) -> None:
        """A sample of a calm stretch (consecutive with the previous one)."""
        x1, x2 = self._x1, self._x2
        self._x2, self._x1 = x1, value
        if x2 is None:
            return
        difference = abs(value - 2 * x1 + x2)
        current = self._current
        current.append(difference)
        early = self._early is not None and len(self._medians) < 4
        if early:
            self._early.append(difference)
        if len(current) >= self.block:
            self._medians.append(median(current))
            current.clear()
            self._update(median(list(self._medians)))
        elif early and len(self._early) >= MIN_DIFFERENCES and len(self._early) % 4 == 0:
            self._update(median(self._early))

    def skip(self) -> None:
        """The stretch is interrupted: the next differences must not bridge the interruption."""
        self._x1 = self._x2 = None

    def _update(self, typical: float) -> None:
        m = self.differences
        bound = 1 + UPPER_Z * MEDIAN_SPREAD / math.sqrt(m)
        self._sigma = max(self.floor, typical / WHITE_NOISE_SCALE * bound)
        if len(self._medians) >= 4:
            self._early = []


def median(values: list[float]) -> float:
    """The median of a non-empty list."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
