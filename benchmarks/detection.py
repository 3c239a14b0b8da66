#!/usr/bin/env python3
"""How well the central system's detectors find every injected fault, and stay quiet otherwise.

Every fault kind of ``--inject`` (and the central system's own fluctuation scenario) is run over
``--seeds`` seeds, each a charging session whose limit, meter noise, speed, onset and fault
parameters vary with the seed (:mod:`evsim.detection.cases`), on a simulated site (the charger
model with its faults, an EV, the charge point's sampling with its faults, delivery delays:
:mod:`evsim.detection.simulate`), and analysed by :class:`~evsim.detection.site.SiteAnalyser`,
the path csms.py takes. The labels the faults made are scored against the anomalies
(:mod:`evsim.detection.score`): one row per kind. The normal sessions (noise, CC-CV taper,
limit steps, SuspendedEV pauses, single starts and stops, one-sample glitches, slow ramps, idle
connectors) must raise nothing; then long runs of a steady current with Gaussian noise of
sigma 2 A count false episodes: the fluctuation detector alone at one and ten samples a second,
and every detector through the SiteAnalyser.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Optional

import numpy as np  # matplotlib's dependency, always installed
from tabulate import tabulate

from evsim.detection import observations as obs
from evsim.detection.cases import (
    FAULT_KINDS,
    NEGATIVES,
    fault_case,
    fluctuation_scenario_case,
    run_case,
)
from evsim.detection.fluctuation import FluctuationDetector
from evsim.detection.score import score
from evsim.detection.simulate import START
from evsim.detection.site import SiteAnalyser
from evsim.faults.kinds import KINDS, SCENARIO_FLUCTUATION

CHUNK = 1_000_000


def show(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def kind_row(kind: str, anomaly_type: str, runs: list[tuple[list, list]]) -> list[Any]:
    """One kind over its runs: every anomaly that is not a label's first match is false."""
    labels = [label for run_labels, _ in runs for label in run_labels]
    anomalies = [anomaly for _, run_anomalies in runs for anomaly in run_anomalies]
    scores = score(labels, anomalies)
    own = scores.get(anomaly_type)
    tp = own.true_positives if own else 0
    fp = sum(s.false_positives for s in scores.values())
    missed = own.misses if own else 0
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / len(labels) if labels else None
    others = sorted({a["anomaly_type"] for a in anomalies} - {anomaly_type})
    return [kind, anomaly_type, len(runs), len(labels), tp, fp, missed, show(precision),
            show(recall), show(own.median_latency_s if own else None, 1),
            show(own.worst_latency_s if own else None, 1), ", ".join(others) or ""]


def fault_table(seeds: int) -> tuple[list[list[Any]], int, int]:
    rows, perfect, total = [], 0, 0
    cases = [(name, KINDS[name].anomaly_type, lambda seed, name=name: fault_case(name, seed))
             for name in FAULT_KINDS]
    cases.insert(0, (f"(scenario {SCENARIO_FLUCTUATION[0]})", SCENARIO_FLUCTUATION[2],
                     fluctuation_scenario_case))
    for name, anomaly_type, make in cases:
        row = kind_row(name, anomaly_type, [run_case(make(seed)) for seed in range(seeds)])
        rows.append(row)
        total += 1
        perfect += row[7] == row[8] == "1.00"
    return rows, perfect, total


def negative_table(seeds: int) -> tuple[list[list[Any]], int]:
    rows, false = [], 0
    for name, make in NEGATIVES.items():
        anomalies = [a for seed in range(seeds) for a in run_case(make(seed))[1]]
        false += len(anomalies)
        kinds = sorted({a["anomaly_type"] for a in anomalies})
        rows.append([name, seeds, len(anomalies), ", ".join(kinds)])
    return rows, false


def noise_fluctuation(hours: float, rate: float, seed: int) -> tuple[int, float]:
    """False episodes of the fluctuation detector on a steady 32 A with sigma 2 A noise."""
    rng = np.random.default_rng(seed)
    detector, step = FluctuationDetector(), 1 / rate
    total, done, episodes = int(hours * 3600 * rate), 0, 0
    while done < total:
        size = min(CHUNK, total - done)
        update = detector.update
        for i, amps in enumerate((32 + rng.normal(0, 2, size)).tolist()):
            found = update((done + i) * step, amps)
            if found is not None and found.kind == "started":
                episodes += 1
        done += size
    return episodes, detector.noise_a


def noise_site(hours: float, rate: float, seed: int) -> dict[str, int]:
    """False anomalies of every detector on one long transaction: 32 A with sigma 2 A noise on
    the samples, the register counting the true 32 A, Current.Offered 32 A."""
    rng = np.random.default_rng(seed)
    analyser, step = SiteAnalyser("noise", 1.0), 1 / rate
    observe = analyser.observe
    for observation in (obs.LimitSet(32.0, START), obs.TransactionStarted(1, START),
                        obs.StatusChange("Charging", START)):
        observe(observation)
    counts: dict[str, int] = {}
    total, done = int(hours * 3600 * rate), 0
    delay = timedelta(milliseconds=5)
    while done < total:
        size = min(CHUNK, total - done)
        for i, amps in enumerate((32 + rng.normal(0, 2, size)).tolist()):
            t = (done + i + 1) * step
            moment = START + timedelta(seconds=t)
            values = {obs.CURRENT: round(amps, 1), obs.VOLTAGE: 230.0, obs.OFFERED: 32.0,
                      obs.ENERGY: round(32 * 230 * t / 3600, 1)}
            for found in observe(obs.MeterSample(moment, moment + delay, values, 1)):
                if found.kind == "started":
                    counts[found.anomaly_type] = counts.get(found.anomaly_type, 0) + 1
        done += size
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds per kind (default: 20)")
    parser.add_argument("--noise-hours", type=float, default=1000.0,
                        help="simulated hours of each fluctuation noise run (default: 1000; "
                             "0 skips them)")
    parser.add_argument("--site-hours", type=float, default=1000.0,
                        help="simulated hours of the all-detector noise run at 1 Hz "
                             "(default: 1000; 0 skips it)")
    parser.add_argument("--site-hours-10hz", type=float, default=100.0,
                        help="simulated hours of the all-detector noise run at 10 Hz "
                             "(default: 100; 0 skips it)")
    args = parser.parse_args(argv)

    begin = time.perf_counter()
    rows, perfect, total = fault_table(args.seeds)
    print(f"Fault kinds, {args.seeds} seeds each (precision and recall 1.0: {perfect} of {total})")
    print(tabulate(rows, ["kind", "anomaly_type", "runs", "labels", "TP", "FP", "missed",
                          "precision", "recall", "median latency s", "worst latency s",
                          "other anomalies"]))
    negatives, false = negative_table(args.seeds)
    print(f"\nNormal sessions, {args.seeds} seeds each: {false} anomalies")
    print(tabulate(negatives, ["case", "runs", "anomalies", "types"]))
    print(f"({time.perf_counter() - begin:.0f} s)")

    if args.noise_hours:
        print("\nSteady 32 A, Gaussian noise sigma 2 A, fluctuation detector alone:")
        for rate, seed in ((1.0, 1), (10.0, 2)):
            begin = time.perf_counter()
            episodes, sigma = noise_fluctuation(args.noise_hours, rate, seed)
            print(f"  {args.noise_hours:g} h at {rate:g} Hz: {episodes} false episodes "
                  f"(noise estimated {sigma:.2f} A; {time.perf_counter() - begin:.0f} s)")
    runs = [(hours, rate, seed) for hours, rate, seed in
            ((args.site_hours, 1.0, 3), (args.site_hours_10hz, 10.0, 4)) if hours]
    if runs:
        print("\nSteady 32 A session, Gaussian noise sigma 2 A, every detector (SiteAnalyser):")
    for hours, rate, seed in runs:
        begin = time.perf_counter()
        counts = noise_site(hours, rate, seed)
        found = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "none"
        print(f"  {hours:g} h at {rate:g} Hz: {sum(counts.values())} false anomalies ({found}; "
              f"{time.perf_counter() - begin:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
