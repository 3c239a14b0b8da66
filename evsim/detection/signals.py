"""Synthetic charging-current signals for trying the detector: the seed's fluctuation scenario
driven through the real charger ramp, plain waveforms, and the detections a detector makes on
them.

The generators drive :class:`~evsim.charger.model.Charger` with timed commands and sample it the
way the charge point reports Current.Import, so a test sees the shape the site produces, not a
square wave. Times are simulated seconds; nothing here reads a clock.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Optional

from evsim.charger.model import Charger
from evsim.detection.fluctuation import Detection, FluctuationDetector

Sample = tuple[float, float]
Command = tuple[float, str, Optional[float]]

#: The seed scenario's cycle, and when its first swing (the first start) begins.
SEED_CYCLE_S = 8.0
SEED_FIRST_SWING_S = 3.0


def seed_commands(cycles: int, peak: float = 100.0, start: float = 0.0) -> list[Command]:
    """The seed's fluctuation scenario: limit 0 (2 s), limit peak (1 s), start (2 s), stop (3 s)."""
    commands: list[Command] = []
    for cycle in range(cycles):
        base = start + cycle * SEED_CYCLE_S
        commands += [(base, "limit", 0.0), (base + 2, "limit", peak), (base + 3, "start", None),
                     (base + 5, "stop", None)]
    return commands


def charger_signal(commands: Iterable[Command], duration: float, *, period: float = 1.0,
                   ramp_per_s: float = 0.2, ramp_per_tick: Optional[float] = None,
                   sample_every: Optional[float] = 1.0, offset: float = 0.0, noise: float = 0.0,
                   seed: int = 0, limit: float = 125.0) -> list[Sample]:
    """The current a charger obeying ``commands`` publishes, as the charge point samples it.

    The charger ticks every ``period`` s and closes ``ramp_per_tick`` of its gap each tick (by
    default the fraction that makes ``ramp_per_s`` per second); the charge point reports the
    latest published value every ``sample_every`` s from ``offset`` (None: every tick), plus
    uniform noise of +/- ``noise`` A.
    """
    ramp = ramp_per_tick if ramp_per_tick is not None else 1 - (1 - ramp_per_s) ** period
    charger = Charger(ramp=ramp)
    charger.set_limit(limit)
    events = [(t, 0, action, amps) for t, action, amps in commands]
    events += [(k * period, 1, "tick", None) for k in range(1, int(duration / period) + 1)]
    if sample_every is not None:
        events += [(offset + k * sample_every, 2, "sample", None)
                   for k in range(int((duration - offset) / sample_every) + 1)]
    rng = random.Random(seed)
    published, samples = 0.0, []
    for t, _, action, amps in sorted(events, key=lambda event: event[:2]):
        if action == "limit":
            charger.set_limit(amps)
        elif action in ("start", "stop"):
            getattr(charger, action)()
        elif action == "tick":
            published = charger.tick()
            if sample_every is None:
                samples.append((t, published))
        else:
            samples.append((t, published))
    return [(t, max(0.0, a + rng.uniform(-noise, noise))) for t, a in samples]


def waveform(shape: Callable[[float], float], duration: float, *, sample_every: float = 1.0,
             noise: float = 0.0, seed: int = 0) -> list[Sample]:
    """``shape(t)`` sampled every ``sample_every`` s, plus uniform noise of +/- ``noise`` A."""
    rng = random.Random(seed)
    return [(k * sample_every, max(0.0, shape(k * sample_every) + rng.uniform(-noise, noise)))
            for k in range(int(duration / sample_every) + 1)]


def steady(level: float, duration: float = 600.0, **kwargs) -> list[Sample]:
    """A charger started at once at ``level`` A (``charger_signal``'s keywords apply)."""
    return charger_signal([(0.0, "limit", level), (0.0, "start", None)], duration, **kwargs)


def sine(mean: float, peak_to_peak: float, period: float) -> Callable[[float], float]:
    return lambda t: mean + peak_to_peak / 2 * math.sin(2 * math.pi * t / period)


def detections(samples: Iterable[Sample],
               detector: Optional[FluctuationDetector] = None) -> list[tuple[float, Detection]]:
    """Every (time, detection) the detector makes on ``samples``."""
    detector = detector or FluctuationDetector()
    found = []
    for t, amps in samples:
        detection = detector.update(t, amps)
        if detection is not None:
            found.append((t, detection))
    return found
