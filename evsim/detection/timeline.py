"""The charge point's sample timeline: simulated seconds from the samples' own timestamps, kept
continuous when the charge point's clock jumps, and where the central system's receive times
fall on it.

Detectors decide on this timeline (ARCHITECTURE.md, "Time"): a loaded central system decides
late but not differently, and ``--speed 100`` decides as ``--speed 1``. A clock that jumps (set
minutes ahead or back) would otherwise look like a long gap, or make every later sample look
out of order: when consecutive timestamps move back, or forward by ``jump_s`` more than their
receive times did, the timeline advances by the receive interval instead, and the difference
is carried on. A real gap moves both clocks alike and stays a gap; a backlog delivered after a
reconnection moves the receive clock, not the timestamps, and stays in order.
"""
from __future__ import annotations

from datetime import datetime
from typing import NamedTuple, Optional


class Placed(NamedTuple):
    """A sample on the timeline: ``t`` (simulated s), its timestamp's offset from the receive
    time (simulated s, positive: ahead), and whether the charge point's clock jumped."""

    t: float
    offset: float
    jumped: bool


class Timeline:
    """Maps one charge point's timestamps and the central system's receive times to simulated
    seconds on its sample timeline."""

    def __init__(self, speed: float = 1.0, jump_s: float = 60.0) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed, self.jump_s = speed, jump_s
        self._correction = 0.0
        self._last: Optional[tuple[float, float, float]] = None  # stamped, received, t

    def sim(self, moment: datetime) -> float:
        return moment.timestamp() * self.speed

    def sample(self, timestamp: datetime, received: datetime) -> Placed:
        """Place a sample stamped ``timestamp`` and received at ``received``."""
        stamped, arrived = self.sim(timestamp), self.sim(received)
        jumped = False
        if self._last is None:
            t = stamped
        else:
            last_stamped, last_arrived, last_t = self._last
            t = stamped + self._correction
            waited = max(0.0, arrived - last_arrived)
            if t < last_t or (stamped - last_stamped) - waited > self.jump_s:
                t, jumped = last_t + waited, True
                self._correction = t - stamped
        self._last = (stamped, arrived, t)
        return Placed(t, stamped - arrived, jumped)

    def at_received(self, received: datetime) -> float:
        """A receive time on the timeline (at the offset of the latest sample)."""
        arrived = self.sim(received)
        if self._last is None:
            return arrived
        _, last_arrived, last_t = self._last
        return max(last_t, arrived + (last_t - last_arrived))

    def stamped(self, timestamp: Optional[datetime], received: datetime) -> float:
        """A message with its own timestamp (a StatusNotification, a transaction): the timestamp
        as the samples' is corrected, unless it is absent or far from the receive time."""
        by_receipt = self.at_received(received)
        if timestamp is None:
            return by_receipt
        t = self.sim(timestamp) + self._correction
        return t if abs(t - by_receipt) <= self.jump_s else by_receipt
