#!/usr/bin/env python3
"""How fast and how well the fluctuation detector decides, on generated signals.

Prints the samples per second it processes, its latency in simulated seconds from the first
swing of the seed's scenario (under several charger periods and sampling rates), and its
precision and recall over a labelled mix of fluctuating and calm signals.

The signals come from :mod:`evsim.detection.signals`: the real charger ramp driven by the seed's
commands, sampled the way the charge point reports Current.Import.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Sequence
from typing import Optional

from evsim.detection.fluctuation import DetectorConfig, FluctuationDetector
from evsim.detection.signals import (
    SEED_FIRST_SWING_S,
    Command,
    Sample,
    charger_signal,
    detections,
    seed_commands,
    sine,
    steady,
    waveform,
)


def labelled_mix() -> list[tuple[str, bool, list[Sample]]]:
    """(name, fluctuates, samples): realistic fluctuations and the calm shapes they must not be."""
    mix: list[tuple[str, bool, list[Sample]]] = []
    seed = 0

    def add(name: str, label: bool, samples: list[Sample]) -> None:
        mix.append((name, label, samples))

    for peak in (50, 75, 100, 125):
        for ramp in (0.2, 0.35, 0.5):
            for period, sample_every in ((1.0, 1.0), (0.5, 1.0), (0.1, 1.0), (0.1, None)):
                for noise in (0.0, 2.0):
                    seed += 1
                    add(f"seed peak {peak} A ramp {ramp}/s period {period} s", True,
                        charger_signal(seed_commands(4, peak), 32, period=period,
                                       ramp_per_s=ramp, sample_every=sample_every,
                                       offset=(seed % 10) / 10, noise=noise, seed=seed))
    for low, high in ((8, 32), (16, 32), (32, 63)):
        for every in (2.0, 3.0, 5.0):
            commands: list[Command] = [(0.0, "limit", high), (0.0, "start", None)]
            commands += [(30 + k * every, "limit", low if k % 2 == 0 else high) for k in range(8)]
            seed += 1
            add(f"limit toggling {low}<->{high} A every {every} s", True,
                charger_signal(commands, 90, ramp_per_s=0.5, noise=2.0, seed=seed))
    for peak in (40, 60):
        seed += 1
        add(f"seed peak {peak} A, charger period 1 s", True,
            charger_signal(seed_commands(4, peak), 32, noise=2.0, seed=seed))
    for peak_to_peak in (14, 20, 40, 60):
        for period in (4.0, 8.0, 16.0):
            seed += 1
            add(f"sine {peak_to_peak} A p-p period {period} s", True,
                waveform(sine(40, peak_to_peak, period), 120, noise=2.0, seed=seed))

    for level in (6, 16, 32, 63, 80):
        for noise in (0.0, 1.0, 2.0):
            for period, sample_every in ((1.0, 1.0), (0.1, None)):
                seed += 1
                add(f"steady {level} A +/-{noise} A", False,
                    steady(level, 300, period=period, sample_every=sample_every, noise=noise,
                           seed=seed))
    for level in (16, 32, 63, 100):
        for hold in (5.0, 15.0, 60.0):
            seed += 1
            add(f"start then stop after {hold} s at {level} A", False,
                charger_signal([(0.0, "limit", level), (2.0, "start", None),
                                (2.0 + hold, "stop", None)], hold + 60, noise=2.0, seed=seed))
        seed += 1
        add(f"two sessions at {level} A, 20 s apart", False,
            charger_signal([(0.0, "limit", level), (2.0, "start", None), (32.0, "stop", None),
                            (52.0, "start", None), (120.0, "stop", None)], 180, noise=2.0,
                           seed=seed))
        seed += 1
        add(f"one limit step {level} -> {level / 2} A", False,
            charger_signal([(0.0, "limit", level), (0.0, "start", None),
                            (60.0, "limit", level / 2)], 180, noise=2.0, seed=seed))
    for top in (32, 80):
        for ramp_s in (30.0, 60.0, 300.0):
            seed += 1
            add(f"slow ramp 0 -> {top} A over {ramp_s} s", False,
                waveform(lambda t, top=top, ramp_s=ramp_s: top * min(1.0, t / ramp_s),
                         ramp_s + 60, noise=2.0, seed=seed))
    for period in (60.0, 120.0):
        seed += 1
        add(f"slow sine 30 A p-p period {period} s", False,
            waveform(sine(32, 30, period), 4 * period, noise=2.0, seed=seed))
    for peak_to_peak in (3.0, 5.0, 8.0):
        for period in (2.0, 4.0, 8.0):
            seed += 1
            add(f"ripple {peak_to_peak} A p-p period {period} s", False,
                waveform(sine(32, peak_to_peak, period), 300, noise=2.0, seed=seed))
    return mix


def throughput(samples: Sequence[Sample], repeat: int = 3) -> float:
    best = math.inf
    for _ in range(repeat):
        detector = FluctuationDetector()
        update = detector.update
        begin = time.perf_counter()
        for t, amps in samples:
            update(t, amps)
        best = min(best, time.perf_counter() - begin)
    return len(samples) / best


def latency(samples: Sequence[Sample]) -> Optional[float]:
    """Simulated seconds from the seed's first swing to the first detection."""
    found = detections(samples)
    return found[0][0] - SEED_FIRST_SWING_S if found else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300_000,
                        help="samples fed for the throughput figure (default: 300000)")
    args = parser.parse_args(argv)
    config = DetectorConfig()
    print(f"detector defaults: min swing {config.min_swing_a} A, {config.min_swings} swings "
          f"in {config.window_s} s")

    mix = labelled_mix()
    stream: list[Sample] = []
    for _, _, samples in mix:
        shift = stream[-1][0] + 1.0 if stream else 0.0
        stream += [(t + shift, a) for t, a in samples]
    stream = (stream * (args.samples // len(stream) + 1))[:args.samples]
    stream = [(k * 0.1, a) for k, (_, a) in enumerate(stream)]
    print(f"throughput: {throughput(stream):,.0f} samples/s ({len(stream):,} samples)")

    print("latency from the seed's first swing (t = 3 s; cycle two ends at t = 16 s), "
          "offsets of the 1 s sampling 0.0-0.9 s:")
    setups = (("charger period 1 s, sampled every 1 s", dict(period=1.0)),
              ("charger period 0.1 s (20 %/s), sampled every 1 s", dict(period=0.1)),
              ("charger period 0.1 s (20 %/s), every 0x300 frame",
               dict(period=0.1, sample_every=None)),
              ("charger period 0.1 s, ramp 20 % per tick, sampled every 1 s",
               dict(period=0.1, ramp_per_tick=0.2)))
    for name, options in setups:
        offsets = [k / 10 for k in range(10)] if options.get("sample_every", 1) else [0.0]
        found = [latency(charger_signal(seed_commands(4), 32, offset=offset, **options))
                 for offset in offsets]
        missed = sum(value is None for value in found)
        values = [value for value in found if value is not None]
        figures = (f"min {min(values):.1f} s, median {statistics.median(values):.1f} s, "
                   f"max {max(values):.1f} s" if values else "never")
        print(f"  {name}: {figures}" + (f", missed {missed}" if missed else ""))

    outcomes = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    wrong = []
    for name, label, samples in mix:
        fired = bool(detections(samples))
        outcomes[(label, fired)] += 1
        if fired != label:
            wrong.append(f"{'missed' if label else 'false alarm'}: {name}")
    tp, fn, fp = outcomes[(True, True)], outcomes[(True, False)], outcomes[(False, True)]
    positives = tp + fn
    print(f"labelled mix: {len(mix)} signals ({positives} fluctuating, "
          f"{len(mix) - positives} calm)")
    print(f"  precision {tp / (tp + fp) if tp + fp else 0:.3f}, recall {tp / positives:.3f} "
          f"(true positives {tp}, false positives {fp}, false negatives {fn})")
    for line in wrong:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
