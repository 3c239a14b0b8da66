"""One anomaly per episode: turns a condition judged sample by sample into ``started`` and
``ended`` findings, so that every detector opens and closes its episodes the same way."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from evsim.detection.observations import Finding


class Episode:
    """An episode of one anomaly type: it starts once the condition has held for ``hold_s``
    (0: on the first sample it holds) and ends once it has not held for ``clear_s``."""

    def __init__(self, anomaly_type: str, hold_s: float = 0.0, clear_s: float = 0.0,
                 severity: str = "MEDIUM") -> None:
        self.anomaly_type = anomaly_type
        self.hold_s, self.clear_s, self.severity = hold_s, clear_s, severity
        self.started_at: Optional[float] = None
        self._since: Optional[float] = None
        self._last_held: Optional[float] = None
        self._description = ""
        self._values: Mapping[str, Any] = {}

    @property
    def active(self) -> bool:
        return self.started_at is not None

    def step(self, t: float, holds: bool, description: str = "",
             values: Optional[Mapping[str, Any]] = None) -> Optional[Finding]:
        """Judge the condition at ``t``; returns the finding it makes, if any."""
        if holds:
            if self._since is None:
                self._since = t
            self._last_held = t
            self._description, self._values = description or self._description, values or {}
            if self.started_at is None and t - self._since >= self.hold_s:
                self.started_at = t
                return self._finding("started", t, self._description)
            return None
        self._since = None
        if self.started_at is not None and t - (self._last_held or t) >= self.clear_s:
            return self.close(t)
        return None

    def close(self, t: float, why: str = "") -> Optional[Finding]:
        """End the episode now (the session ended, or the analyser stops)."""
        self._since = None
        if self.started_at is None:
            return None
        lasted = t - self.started_at
        self.started_at = None
        reason = f" ({why})" if why else ""
        return self._finding("ended", t, f"{self._description}: ended after {lasted:.0f} s"
                                         f"{reason}")

    def _finding(self, kind: str, t: float, description: str) -> Finding:
        return Finding(self.anomaly_type, kind, self.severity, description, t, dict(self._values))
