"""Ground truth: the :class:`Label` a fault makes while it shows, and the window that decides when
it is armed and when it shows.

A label covers one interval in which the fault was armed *and* could be seen (the charger
charging, a transaction running): a fault armed while nothing charges leaves no label, and one
interrupted by a stop leaves two. It is handed over when the interval closes (its end is known
then), or at shutdown by :meth:`Window.close`. Times are kept twice: simulated seconds for the
models and the score, wall-clock UTC from the injected clock for the MemoryBank.
"""
from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from evsim.faults.kinds import FaultSpec


@dataclass(frozen=True)
class Label:
    """What was injected into which charge point, and when."""

    charge_point_id: str
    anomaly_type: str
    start_s: float
    end_s: float
    start: datetime
    end: datetime
    parameters: dict[str, Any]
    seed: Optional[int]
    source: str

    def record(self) -> dict[str, Any]:
        """The keyword arguments of ``MemoryBank.record_label`` (wall-clock UTC times)."""
        return {"charge_point_id": self.charge_point_id, "anomaly_type": self.anomaly_type,
                "start": self.start, "end": self.end, "parameters": dict(self.parameters),
                "seed": self.seed, "source": self.source}


OnLabel = Callable[[Label], None]


@dataclass
class Window:
    """When one fault is armed (``after`` to ``after + for`` from its origin) and the labels of the
    intervals in which it shows. The origin is the first moment it could show."""

    spec: FaultSpec
    charge_point_id: str
    source: str
    seed: Optional[int]
    on_label: OnLabel
    speed: float = 1.0
    index: int = 0
    origin: Optional[float] = None
    _open: Optional[tuple[float, datetime]] = None
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        # A string seed is hashed the same way on every run and platform; with the id in it,
        # the charge points of a fleet do not all misbehave in step.
        self.rng = random.Random(
            f"{self.seed}:{self.charge_point_id}:{self.spec.kind}:{self.index}")

    @property
    def param(self) -> dict[str, float]:
        return dict(self.spec.params)

    def armed(self, t: float, possible: bool) -> bool:
        """Is the fault armed at ``t``? ``possible``: could it show now (starts the origin)."""
        if self.origin is None:
            if not possible:
                return False
            self.origin = t
        begin = self.origin + self.spec.after
        return begin <= t < begin + self.spec.duration

    @property
    def ends_at(self) -> float:
        """When the armed window closes (inf before the origin is known)."""
        if self.origin is None:
            return math.inf
        return self.origin + self.spec.after + self.spec.duration

    @property
    def showing(self) -> bool:
        return self._open is not None

    def show(self, t: float, now: datetime, showing: bool) -> bool:
        """Say whether the fault shows at ``t``; opens or closes its label. Returns ``showing``."""
        if showing and self._open is None:
            self._open = (t, now)
        elif not showing and self._open is not None:
            self._emit(t, now)
        return showing

    def close(self, t: float, now: datetime) -> None:
        """Shutdown: hand over the open label, if any, ending now."""
        if self._open is not None:
            self._emit(t, now)

    def _emit(self, t: float, now: datetime) -> None:
        start_s, start = self._open
        self._open = None
        parameters = {"kind": self.spec.kind, **self.spec.params, "speed": self.speed}
        if math.isinf(parameters["for"]):
            parameters["for"] = None  # JSON has no infinity
        self.on_label(Label(self.charge_point_id, self.spec.anomaly_type, start_s, t, start, now,
                            parameters, self.seed, self.source))


def bank_recorder(writer: Any, log: logging.Logger) -> OnLabel:
    """Hands each label to a BankWriter: ``writer.call(lambda bank: bank.record_label(...))``.
    A MemoryBank without ``record_label`` (older than the labels table) costs one warning, not
    the process."""
    warned: list[bool] = []

    def write(fields: dict[str, Any], bank: Any) -> None:
        record_label = getattr(bank, "record_label", None)
        if record_label is None:
            if not warned:
                warned.append(True)
                log.warning("this MemoryBank has no labels table (record_label): the ground "
                            "truth of the injected faults is logged, not stored")
            return
        record_label(**fields)

    def record(label: Label) -> None:
        cause = label.parameters.get("kind") or label.parameters.get("scenario") or label.source
        log.info("label %s %s: %.1f-%.1f s (%s)", label.charge_point_id, label.anomaly_type,
                 label.start_s, label.end_s, cause)
        fields = label.record()
        writer.call(lambda bank: write(fields, bank))

    return record
