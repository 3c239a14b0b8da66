"""The labelled cases the detectors are scored on: one scenario per fault kind and seed, and the
normal sessions that must raise nothing, each varied by its seed (limit, noise, speed, onset,
parameters). Used by ``benchmarks/detection.py`` and the tests; :func:`replay` runs one through
:class:`~evsim.detection.site.SiteAnalyser`, the path the central system uses.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from evsim.detection.simulate import Ev, Run, Scenario, Session, simulate, wall
from evsim.detection.site import SiteAnalyser
from evsim.faults.kinds import KINDS, parse_inject
from evsim.faults.labels import Label

SPEEDS = (1.0, 10.0, 100.0)
NOISES = (0.0, 1.0, 2.0, 2.0)
LIMITS = (16.0, 24.0, 32.0)
SESSION_START_S = 5.0


def _base(name: str, seed: int, **changes: Any) -> Scenario:
    rng = random.Random(f"case:{name}:{seed}")
    limit = rng.choice(LIMITS)
    scenario = Scenario(name=name, duration_s=420.0,
                        sessions=[Session(SESSION_START_S, 400.0)], limits=[(0.0, limit)],
                        seed=seed, noise_a=rng.choice(NOISES), speed=rng.choice(SPEEDS),
                        offered=rng.random() < 0.3, charge_point_id=f"{name}#{seed}")
    return replace(scenario, **changes)


def fault_case(kind: str, seed: int) -> Scenario:
    """A session with the fault ``kind`` injected, onset and parameters varied by ``seed``."""
    rng = random.Random(f"fault:{kind}:{seed}")
    after = 20.0 + 10 * rng.randrange(5)
    params: dict[str, float] = {"after": after}
    scenario = _base(kind, seed)
    if kind == "oscillation":
        params.update(period=rng.choice((2.0, 4.0, 6.0, 8.0)),
                      amplitude=rng.choice((16.0, 20.0, 30.0)))
        scenario = replace(scenario, limits=[(0.0, 32.0)])
    elif kind == "over-current":
        params["factor"] = rng.choice((1.25, 1.25, 1.5))
    elif kind == "ignore-limit":
        params = {"after": 0.0}
        low = scenario.limits[0][1] if scenario.limits[0][1] < 32 else 16.0
        at = SESSION_START_S + after + 30
        scenario = replace(scenario, limits=[(0.0, 32.0), (at, low), (at + 120, 32.0)])
    elif kind == "energy-drift":
        params.update(percent=rng.choice((20.0, -20.0)))
        scenario = replace(scenario, duration_s=520.0, sessions=[Session(SESSION_START_S, 500.0)])
    elif kind == "clock-skew":
        params.update(minutes=rng.choice((5.0, -5.0, 2.0, -10.0)))
    elif kind == "meter-backwards":
        params.update(step=rng.choice((5.0, 50.0, 500.0)))
    spec = parse_inject(f"{kind}:" + ",".join(f"{k}={v:g}" for k, v in params.items()))
    return replace(scenario, injections=[spec])


def fluctuation_scenario_case(seed: int, cycles: int = 10) -> Scenario:
    """The central system's own ``fluctuation`` scenario (limit 0 A, 100 A, start, stop every
    8 s), labelled as csms.py labels it."""
    rng = random.Random(f"scenario:{seed}")
    speed = rng.choice(SPEEDS)
    sessions, limits = [], []
    for cycle in range(cycles):
        base = 10.0 + 8 * cycle
        limits += [(base, 0.0), (base + 2, 100.0)]
        sessions.append(Session(base + 3, base + 5))
    start_s, end_s = 13.0, 10.0 + 8 * cycles
    name = "scenario-fluctuation"
    label = Label(f"{name}#{seed}", "CURRENT_FLUCTUATION", start_s, end_s, wall(start_s, speed),
                  wall(end_s, speed), {"scenario": "fluctuation", "speed": speed}, seed, "csms")
    return Scenario(name=name, duration_s=end_s + 30, sessions=sessions, limits=limits,
                    seed=seed, noise_a=rng.choice(NOISES), speed=speed,
                    charge_point_id=f"{name}#{seed}", extra_labels=[label])


def _pauses(rng: random.Random) -> tuple[tuple[float, float], ...]:
    first = rng.uniform(40, 80)
    second = first + rng.uniform(90, 150)
    return ((first, rng.uniform(20, 60)), (second, rng.uniform(30, 90)))


def _glitches(rng: random.Random) -> list[tuple[float, float]]:
    """Isolated: 15 to 60 s apart, none within 10 s of the session's start or stop."""
    times, t = [], SESSION_START_S + 10
    while True:
        t += rng.uniform(15, 60)
        if t > 390:
            return times
        times.append((round(t), rng.choice((-1, 1)) * rng.uniform(10, 30)))


NEGATIVES: dict[str, Callable[[int], Scenario]] = {
    "noisy steady": lambda seed: _base("noisy steady", seed, noise_a=2.0),
    "CC-CV taper": lambda seed: _base("CC-CV taper", seed, duration_s=900.0,
                                      sessions=[Session(5.0, 880.0, Ev(taper_from_s=120.0,
                                                                       taper_tau_s=200.0))]),
    "limit steps followed": lambda seed: _base(
        "limit steps followed", seed,
        limits=[(0.0, 32.0), (80.0, 16.0), (160.0, 24.0), (240.0, 32.0), (300.0, 6.0)]),
    "SuspendedEV pauses": lambda seed: _base(
        "SuspendedEV pauses", seed,
        sessions=[Session(5.0, 400.0, Ev(pauses=_pauses(random.Random(seed))))]),
    "single start and stop": lambda seed: _base(
        "single start and stop", seed, sessions=[Session(5.0, 65.0), Session(150.0, 158.0)]),
    "one-sample glitches": lambda seed: _base("one-sample glitches", seed,
                                              glitches=_glitches(random.Random(seed))),
    "slow ramp": lambda seed: _base("slow ramp", seed,
                                    limits=[(0.0, 6.0)] + [(10.0 + 5 * k, 6.0 + k)
                                                           for k in range(27)]),
    "idle connector": lambda seed: _base("idle connector", seed, sessions=[]),
}


def replay(run: Run) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Feed a run to a :class:`SiteAnalyser` as the central system would; returns (labels,
    anomalies) as the MemoryBank holds them (an anomaly per episode, at its receive time)."""
    analyser = SiteAnalyser(run.scenario.charge_point_id, run.scenario.speed)
    anomalies: list[dict[str, Any]] = []
    for observation in run.observations:
        for finding in analyser.observe(observation):
            if finding.kind == "started":
                anomalies.append({"charge_point_id": analyser.charge_point_id,
                                  "anomaly_type": finding.anomaly_type,
                                  "timestamp": finding.received, "severity": finding.severity,
                                  "description": finding.description})
    analyser.close(run.observations[-1].received if run.observations else None)
    return [label.record() for label in run.labels], anomalies


def run_case(scenario: Scenario) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return replay(simulate(scenario))


FAULT_KINDS = tuple(KINDS)
