"""One-sample glitches: a sample that leaves a calm signal and comes straight back, taken out
before :mod:`evsim.detection.fluctuation` looks for swings.

Each sample is held back until the two after it are known. It is a glitch when it leaves its
neighbours by at least ``height`` the same way, they agree with each other (it came back to
where it was), and the signal is calm around it: its two predecessors, and its two successors,
within ``calm`` of each other. A square wave sampled once per half period is not a glitch (every
sample moves), and neither is the peak of a sine sampled four times a period (the samples around
it are moving). A glitch is replaced by its neighbours' mean.
"""
from __future__ import annotations

from collections import deque
from typing import Optional

Point = tuple[float, float]


def excursion(before: float, here: float, after: float, height: float) -> bool:
    """``here`` leaves ``before`` and ``after`` by at least ``height`` the same way, and they
    are within ``height`` of each other."""
    up, down = here - before, here - after
    away = min(up, down) >= height or max(up, down) <= -height
    return away and abs(before - after) < height


class GlitchFilter:
    """Raw samples in, samples two behind out (a glitch replaced)."""

    def __init__(self) -> None:
        self._raw: deque[Point] = deque(maxlen=5)

    @property
    def lookahead(self) -> list[Point]:
        """The raw samples after the one last given out."""
        return list(self._raw)[-2:] if len(self._raw) >= 3 else []

    def push(self, t: float, amps: float, height: float, calm: float) -> Optional[Point]:
        """Take a sample; returns the one decided now (two samples back), if any."""
        raw = self._raw
        raw.append((t, amps))
        if len(raw) < 3:
            return None
        if len(raw) < 5:  # the first two samples have too few neighbours to be glitches
            return raw[len(raw) - 3]
        (_, prior), (_, before), (here_t, here), (_, after), (_, next_after) = raw
        if abs(before - prior) < calm and abs(next_after - after) < calm and \
                excursion(before, here, after, height):
            return here_t, (before + after) / 2
        return here_t, here

    def flush(self) -> list[Point]:
        """The samples still held back, as they are (at the end of the signal)."""
        raw = list(self._raw)
        held = raw[-2:] if len(raw) >= 3 else raw
        self._raw.clear()
        return held
