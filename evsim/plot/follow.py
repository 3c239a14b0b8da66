"""``plot_current.py --cp ID``: any charge point's current, live, from the MemoryBank.

Only one charge point of a fleet is on the CAN bus; the central system records every one's
current from its MeterValues (metrics ``current``, source ``csms``). The rule is one line:
``--cp`` follows that charge point from the MemoryBank, without ``--cp`` the chart is the CAN
bus's 0x300; ``--source can`` keeps the bus with ``--cp`` (the bus's current, ID's anomalies).

Each refresh reads only the rows written since the one before (by id: a sample that arrives
late still has a newer id), and the chart places them by their own timestamps on its axis of
simulated seconds, as it places anomalies (:class:`~evsim.plot.live.Timeline`).
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional

from evsim.bank import MemoryBank, MemoryBankError
from evsim.constants import RECORDER
from evsim.plot.chart import Feed, LiveView

SOURCES = ("can", "db")


def source_of(args: argparse.Namespace) -> str:
    """``--source`` when given, else ``db`` with ``--cp`` and ``can`` without."""
    return args.source or ("db" if args.cp else "can")


def recorded_feed(charge_point_id: str) -> Feed:
    return Feed(f"Current of {charge_point_id} (MemoryBank, {RECORDER})",
                f"{charge_point_id} current", f"waiting for {charge_point_id}'s current")


def on_axis(rows: Iterable[Mapping[str, Any]], to_x: Callable[[str], float],
            after: float) -> list[tuple[float, float]]:
    """The rows' (t, amps) on the chart's axis, oldest first, only those after ``after``: a
    late sample (an outbox replayed after a reconnection, the transactionData of a
    StopTransaction repeating samples already sent) would take the line and the detector
    back in time."""
    samples = sorted((to_x(row["timestamp"]), float(row["value"])) for row in rows)
    return [(t, amps) for t, amps in samples if t > after]


class Follower:
    """Feeds ``view`` with the current of ``charge_point_id`` that ``source`` recorded, read
    from the MemoryBank at ``db_path`` (read-only) at each :meth:`poll`; the same face as the
    CAN :class:`~evsim.plot.live.Receiver`, so the drawing loop takes either."""

    failure: Optional[str] = None

    def __init__(self, db_path: Optional[str], charge_point_id: str, view: LiveView,
                 to_x: Callable[[str], float], source: str = RECORDER) -> None:
        self.db_path = db_path
        self.charge_point_id = charge_point_id
        self.view = view
        self.to_x = to_x
        self.source = source
        self.after_id: Optional[int] = None
        self.last_t = -math.inf
        self.late = 0
        self.problem: Optional[str] = None
        self._polled = False

    @property
    def what(self) -> str:
        return f"current samples of {self.charge_point_id}"

    @property
    def status(self) -> str:
        if self.problem:
            return f"MemoryBank: {self.problem}"
        return f"{self.view.received} samples from {self.source}" + (
            f", {self.late} late ones left out" if self.late else "")

    def start(self) -> None:
        """Start where the table ends: what was written before the plot has no place on its
        axis, which begins at 0."""
        self.poll()

    def poll(self) -> None:
        first, self._polled = not self._polled, True
        try:
            with MemoryBank(self.db_path, readonly=True) as bank:
                if self.after_id is None:  # a database made after the plot started: all new
                    self.after_id = bank.last_metric_id() if first else 0
                rows, self.after_id = bank.get_metrics_after(
                    self.after_id, "current", self.charge_point_id, self.source)
        except MemoryBankError as exc:
            self.problem = str(exc)
            return
        self.problem = None
        self.feed(rows)

    def feed(self, rows: list[dict]) -> None:
        samples = on_axis(rows, self.to_x, self.last_t)
        self.late += len(rows) - len(samples)
        for t, amps in samples:
            self.view.add(t, amps)
        if samples:
            self.last_t = samples[-1][0]

    def join(self, timeout: Optional[float] = None) -> bool:
        return True
