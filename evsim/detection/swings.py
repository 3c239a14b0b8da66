"""Swings of a signal: a zigzag (turning point) tracker for :mod:`evsim.detection.fluctuation`.

A swing is a move between two turning points at least ``threshold`` apart. It counts once the
samples of the last ``confirm_s`` (at least one) have all moved past the threshold the same way:
at one sample a second a single sample is a swing, at ten a second it takes three in a row. A
turning point older than ``memory_s`` gives way to the extreme of the samples since, because on
a steady noisy signal the extreme of an ever longer stretch keeps growing until noise alone makes
a swing from it.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional

Point = tuple[float, float]


@dataclass
class Swing:
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
class _Pending:
    """A move past the threshold from ``start`` waiting for confirmation."""

    start: Point
    rising: bool
    count: int
    extreme: Point


class Zigzag:
    """Turns samples into swings; :attr:`leg` is the swing still extending."""

    INTERVALS = 15  # sample intervals kept for the confirmation's sample count

    def __init__(self, memory_s: float, confirm_s: float) -> None:
        self.memory_s, self.confirm_s = memory_s, confirm_s
        self.leg: Optional[Swing] = None
        self._pending: Optional[_Pending] = None
        self._lows: deque[Point] = deque()  # monotonic: the lowest of the last memory_s first
        self._highs: deque[Point] = deque()
        self._intervals: deque[float] = deque(maxlen=self.INTERVALS)
        self._need = 1

    @property
    def range_a(self) -> float:
        """How far apart the samples of the last ``memory_s`` are."""
        return self._highs[0][1] - self._lows[0][1] if self._lows else 0.0

    def interval(self, dt: float) -> None:
        """A sampling interval (the confirmation counts the samples of ``confirm_s``)."""
        intervals = self._intervals
        intervals.append(dt)
        if len(intervals) % 5 == 0 or len(intervals) < 5:
            typical = sorted(intervals)[len(intervals) // 2]
            self._need = max(1, math.ceil(self.confirm_s / typical - 1e-9)) if typical > 0 else 1

    def remember(self, t: float, amps: float) -> None:
        """Every sample, before :meth:`track`: keeps the extremes of the last ``memory_s``."""
        lows, highs, horizon = self._lows, self._highs, t - self.memory_s
        while lows and lows[-1][1] >= amps:
            lows.pop()
        lows.append((t, amps))
        while highs and highs[-1][1] <= amps:
            highs.pop()
        highs.append((t, amps))
        while lows[0][0] < horizon:
            lows.popleft()
        while highs[0][0] < horizon:
            highs.popleft()

    def track(self, t: float, amps: float, threshold: float
              ) -> tuple[Optional[Swing], Optional[Swing]]:
        """Advance by one sample; returns (the swing it confirmed, the leg that swing completed),
        either None."""
        leg = self.leg
        if leg is None:
            lows, highs = self._lows, self._highs
            start = lows[0] if lows[0][0] < highs[0][0] else highs[0]
        else:
            if (amps >= leg.end_a) if leg.rising else (amps <= leg.end_a):
                leg.end_t, leg.end_a = t, amps
                self._pending = None
                return None, None
            if leg.end_t < t - self.memory_s:
                leg.end_t, leg.end_a = self._highs[0] if leg.rising else self._lows[0]
            start = (leg.end_t, leg.end_a)
        if abs(amps - start[1]) < threshold:
            self._pending = None
            return None, None
        return self._confirm(start, t, amps)

    def _confirm(self, start: Point, t: float, amps: float
                 ) -> tuple[Optional[Swing], Optional[Swing]]:
        rising = amps > start[1]
        pending = self._pending
        if pending is None or pending.start != start or pending.rising != rising:
            pending = self._pending = _Pending(start, rising, 0, (t, amps))
        pending.count += 1
        if (amps > pending.extreme[1]) if rising else (amps < pending.extreme[1]):
            pending.extreme = (t, amps)
        if pending.count < self._need:
            return None, None
        self._pending = None
        completed, self.leg = self.leg, Swing(start[0], start[1], *pending.extreme, counted_at=t)
        return self.leg, completed
