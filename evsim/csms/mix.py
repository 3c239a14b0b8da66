"""``csms.py --scenario-mix fluctuation=0.1,normal=0.9 --seed N``: each charge point gets one
scenario of the mix, chosen from its id and the seed alone, so that the same fleet and seed give
the same assignment in every run, whatever order the charge points connect in.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from evsim.csms.scenario import SCENARIOS


@dataclass(frozen=True)
class ScenarioMix:
    """Scenario names with their shares (summing to 1), in the order given, and the seed."""

    shares: tuple[tuple[str, float], ...]
    seed: int = 0

    def scenario_of(self, charge_point_id: str) -> str:
        """The scenario of ``charge_point_id``: a uniform draw from a hash of the seed and the
        id, placed among the shares' cumulative bounds."""
        digest = hashlib.sha256(f"{self.seed}:{charge_point_id}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2 ** 64
        bound = 0.0
        for name, share in self.shares:
            bound += share
            if draw < bound:
                return name
        return self.shares[-1][0]

    def __str__(self) -> str:
        return ",".join(f"{name}={share:g}" for name, share in self.shares)


def parse_mix(text: str, seed: int = 0) -> ScenarioMix:
    """``name=weight,...``: weights are non-negative numbers, at least one above 0, scaled to
    sum to 1. ValueError in one line, naming the valid scenarios."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r} in the mix; valid: "
                             f"{', '.join(SCENARIOS)}")
        if name in weights:
            raise ValueError(f"{name} is twice in the mix")
        try:
            weights[name] = float(weight)
        except ValueError:
            raise ValueError(f"{name}={weight}: the weight must be a number, "
                             "as in fluctuation=0.1,normal=0.9") from None
        if not 0 <= weights[name] < float("inf"):
            raise ValueError(f"{name}={weight}: the weight must be 0 or more")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("the mix needs a weight above 0")
    return ScenarioMix(tuple((name, weight / total) for name, weight in weights.items()), seed)
