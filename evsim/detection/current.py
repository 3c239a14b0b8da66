"""ZERO_CURRENT_WHILE_CHARGING: the connector says Charging, the limit allows current, and none
flows.

Judged only during a transaction, while the last status is Charging (SuspendedEV and
SuspendedEVSE are the honest ways to say "no current"), once ``settle_s`` has passed since
charging (re)started (an EV takes a moment to draw), and while the limit in force, when known,
is at least ``min_limit_a``. It fires when at least ``low_share`` of the samples of the last
``hold_s`` (and their median) are at most ``zero_a``: one odd sample neither makes nor breaks
it, and a small current read by a noisy meter (2 A with sigma 2 A) does not look like none, as
a mean or a median alone would let it. It ends when that no longer holds.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional

from evsim.detection.episodes import Episode
from evsim.detection.noise import median
from evsim.detection.observations import Finding


@dataclass(frozen=True)
class ZeroCurrentConfig:
    zero_a: float = 1.0
    hold_s: float = 10.0
    settle_s: float = 10.0
    min_limit_a: float = 1.0
    low_share: float = 0.8
    every_s: float = 1.0


class ZeroCurrentDetector:
    def __init__(self, config: Optional[ZeroCurrentConfig] = None) -> None:
        self.config = config or ZeroCurrentConfig()
        self.episode = Episode("ZERO_CURRENT_WHILE_CHARGING", severity="HIGH")
        self._samples: deque[tuple[float, float]] = deque()
        self._session = False
        self._charging_since: Optional[float] = None
        self._judged = -math.inf

    def session(self, t: float, open_: bool) -> list[Finding]:
        self._session = open_
        self._samples.clear()
        if open_ and self._charging_since is not None:
            self._charging_since = t
        closed = None if open_ else self.episode.close(t, "session ended")
        return [closed] if closed else []

    def status(self, t: float, status: str) -> list[Finding]:
        if status == "Charging":
            if self._charging_since is None:
                self._charging_since = t
                self._samples.clear()
            return []
        self._charging_since = None
        closed = self.episode.close(t, f"status {status}")
        return [closed] if closed else []

    def update(self, t: float, amps: float, limit: Optional[float]) -> list[Finding]:
        config = self.config
        if not self._session or self._charging_since is None:
            return []
        samples = self._samples
        samples.append((t, amps))
        while samples and samples[0][0] < t - config.hold_s:
            samples.popleft()
        if t - self._judged < config.every_s:
            return []
        self._judged = t
        eligible = (t - self._charging_since >= max(config.settle_s, config.hold_s)
                    and (limit is None or limit >= config.min_limit_a))
        values = [a for _, a in samples]
        level = median(values)
        low = sum(a <= config.zero_a for a in values) / len(values)
        zero = eligible and len(values) >= 3 and low >= config.low_share and level <= config.zero_a
        found = self.episode.step(
            t, zero, f"no current ({level:.1f} A) for {config.hold_s:.0f} s while Charging"
            + (f" with a limit of {limit:.1f} A" if limit is not None else ""),
            {"current_value": round(level, 2), "expected_value": limit,
             "deviation": round(level - limit, 2) if limit is not None else None})
        return [found] if found else []

    def close(self, t: float) -> list[Finding]:
        closed = self.episode.close(t)
        return [closed] if closed else []
