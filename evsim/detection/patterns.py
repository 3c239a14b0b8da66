"""Learned fluctuation patterns: what the episodes of :mod:`evsim.detection.fluctuation` have
in common, kept in the MemoryBank so the same fluctuation is recognised across sessions and
restarts.

Pure: the recorder (csms.py) reads the patterns, asks :func:`match_pattern` which one an episode
is an instance of, and stores what :func:`merge_pattern` returns.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Optional

from evsim.detection.fluctuation import ANOMALY_TYPE, Detection

PATTERN_PREFIX = "current_fluctuation"


def _mean(pattern: dict, key: str) -> Optional[float]:
    stats = (pattern.get("parameters") or {}).get(key)
    mean = stats.get("mean") if isinstance(stats, dict) else None
    return float(mean) if isinstance(mean, (int, float)) else None


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-9)


def pattern_name(detection: Detection) -> str:
    """The name a new pattern gets from the episode that first showed it."""
    period = f"{detection.period_s:.0f}s_" if detection.period_s is not None else ""
    return f"{PATTERN_PREFIX}_{period}{detection.amplitude_a:.0f}A"


def match_pattern(patterns: Iterable[dict], detection: Detection,
                  tolerance: float = 0.3) -> Optional[dict]:
    """The known fluctuation pattern this episode is an instance of, or None.

    The closest one whose mean period and amplitude are both within ``tolerance`` (relative);
    failing that, the one that already has the name this episode would get, so that its
    running statistics are merged rather than overwritten.
    """
    best, best_distance, namesake = None, tolerance, None
    for pattern in patterns:
        name = str(pattern.get("name", ""))
        if not name.startswith(PATTERN_PREFIX):
            continue
        if name == pattern_name(detection):
            namesake = pattern
        amplitude, period = _mean(pattern, "amplitude_a"), _mean(pattern, "period_s")
        if amplitude is None or (period is None) != (detection.period_s is None):
            continue
        distance = _relative(amplitude, detection.amplitude_a)
        if period is not None:
            distance = max(distance, _relative(period, detection.period_s))
        if distance <= best_distance:
            best, best_distance = pattern, distance
    return best or namesake


def _merged_stats(stats: Any, value: Optional[float]) -> Optional[dict]:
    """Welford's running mean and (population) standard deviation, with min and max."""
    if not isinstance(stats, dict) or not stats.get("n"):
        return None if value is None else {"n": 1, "mean": value, "std": 0.0,
                                           "min": value, "max": value}
    if value is None:
        return stats
    n, mean, std = int(stats["n"]), float(stats["mean"]), float(stats.get("std", 0.0))
    m2 = std * std * n + (value - mean) * (value - mean) * n / (n + 1)
    mean += (value - mean) / (n + 1)
    n += 1
    return {"n": n, "mean": round(mean, 3), "std": round(math.sqrt(m2 / n), 3),
            "min": min(float(stats.get("min", value)), value),
            "max": max(float(stats.get("max", value)), value)}


def merge_pattern(pattern: Optional[dict], detection: Detection) -> tuple[str, dict, float]:
    """(name, parameters, confidence) for ``MemoryBank.learn_pattern``.

    Parameters hold running statistics of the period, amplitude and swing count over the
    episodes seen. Confidence grows with the episodes seen and falls with their spread:
    n / (n + 1) / (1 + cv(period) + cv(amplitude)), cv being the coefficient of variation.
    """
    previous = (pattern or {}).get("parameters") or {}
    parameters: dict[str, Any] = {"anomaly_type": ANOMALY_TYPE}
    for key, value in detection.pattern_parameters().items():
        stats = _merged_stats(previous.get(key), value)
        if stats is not None:
            parameters[key] = stats
    name = pattern["name"] if pattern else pattern_name(detection)
    episodes = parameters["amplitude_a"]["n"]
    spread = sum(parameters[key]["std"] / parameters[key]["mean"]
                 for key in ("period_s", "amplitude_a")
                 if key in parameters and parameters[key]["mean"])
    confidence = round(episodes / (episodes + 1) / (1 + spread), 3)
    return name, parameters, confidence
