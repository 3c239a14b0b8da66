"""STATUS_FLAPPING: the connector keeps changing between the states of a running session.

During a transaction, changes between Charging, SuspendedEV, SuspendedEVSE and Faulted are
counted; ``changes`` of them within ``window_s`` make an episode, which ends once a whole
window passes without one, or with the session. Preparing, Finishing and Available are how a
session begins and ends, not flapping, and an EV pausing now and then (SuspendedEV and back)
makes two changes a pause.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

from evsim.detection.episodes import Episode
from evsim.detection.observations import Finding

SESSION_STATES = ("Charging", "SuspendedEV", "SuspendedEVSE", "Faulted")


@dataclass(frozen=True)
class FlappingConfig:
    changes: int = 5
    window_s: float = 60.0


class FlappingDetector:
    def __init__(self, config: Optional[FlappingConfig] = None) -> None:
        self.config = config or FlappingConfig()
        self.episode = Episode("STATUS_FLAPPING")
        self._changes: deque[float] = deque()
        self._status: Optional[str] = None
        self._session = False

    def session(self, t: float, open_: bool) -> list[Finding]:
        self._session = open_
        self._changes.clear()
        found = None if open_ else self.episode.close(t, "session ended")
        return [found] if found else []

    def update(self, t: float, status: str) -> list[Finding]:
        """A StatusNotification at ``t``."""
        previous, self._status = self._status, status
        if not self._session or previous == status or previous not in SESSION_STATES \
                or status not in SESSION_STATES:
            return self.tick(t)
        changes = self._changes
        changes.append(t)
        self._slide(t)
        if len(changes) < self.config.changes:
            return self.tick(t)
        found = self.episode.step(t, True, f"connector status changed {len(changes)} times in "
                                  f"{self.config.window_s:.0f} s (now {status})",
                                  {"current_value": len(changes)})
        return [found] if found else []

    def tick(self, t: float) -> list[Finding]:
        """Time passes (any observation): an episode ends after a window without changes."""
        if not self.episode.active:
            return []
        self._slide(t)
        found = self.episode.step(t, bool(self._changes))
        return [found] if found else []

    def close(self, t: float) -> list[Finding]:
        found = self.episode.close(t)
        return [found] if found else []

    def _slide(self, t: float) -> None:
        while self._changes and self._changes[0] < t - self.config.window_s:
            self._changes.popleft()
