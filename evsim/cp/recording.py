"""What cp.py records in the MemoryBank, its own view beside the central system's.

``all``: every OCPP message it sends and receives and every meter sample it takes. ``state``: what
only the charge point knows (its connection, status, transactions, CAN frames, injected faults and
their ground truth), without the traffic the central system records anyway as the recorder of
record. A fleet of thousands beside its central system needs ``state``: at 2,000 on two cores,
the rows of both sides (26,000 a second) are more than one SQLite file takes, and the schedule
slips while the recording falls behind.
"""
from __future__ import annotations

from typing import Any, Protocol

RECORD_CHOICES = ("all", "state")
#: The events that are traffic: one per OCPP message.
TRAFFIC_EVENTS = frozenset({"OCPP_MESSAGE"})


class Recorder(Protocol):
    def event(self, event_type: str, description: str, data: Any = None,
              charge_point_id: str | None = None) -> None: ...

    def metric(self, name: str, value: float, unit: str, charge_point_id: str | None = None,
               transaction_id: int | None = None, timestamp: Any = None) -> None: ...


class StateRecorder:
    """``record=state``: passes on to ``writer`` all but the traffic (OCPP messages, samples)."""

    records_traffic = False  # the charge point need not make the rows it would drop

    def __init__(self, writer: Recorder) -> None:
        self.writer = writer

    def event(self, event_type: str, description: str, data: Any = None,
              charge_point_id: str | None = None) -> None:
        if event_type not in TRAFFIC_EVENTS:
            self.writer.event(event_type, description, data, charge_point_id)

    def metric(self, name: str, value: float, unit: str, charge_point_id: str | None = None,
               transaction_id: int | None = None, timestamp: Any = None) -> None:
        """A meter sample: the central system's to record."""


def records_traffic(writer: Recorder | None) -> bool:
    """Does ``writer`` keep each OCPP message and sample (None: there is no writer)?"""
    return writer is not None and getattr(writer, "records_traffic", True)


def recorder(writer: Recorder, record: str) -> Recorder:
    """What the charge points of ``--record`` write through."""
    return writer if record == "all" else StateRecorder(writer)
