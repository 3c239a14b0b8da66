"""Fakes for in-process charge point tests: a central system that answers CALLs as scripted, a
CAN link that records frames, and a recorder that keeps what the MemoryBank would get."""
from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from ocpp.v16 import call_result

from evsim.canbus import frames


class FakeCentral:
    """Answers each CALL with ``answers[action](request)`` if given, else as a lenient central
    system does. A scripted answer may raise (TimeoutError, an OCPPError) to fail the CALL."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.answers: dict[str, Callable[[Any], Any]] = {}
        self._ids = itertools.count(100)

    async def call(self, request: Any, suppress: bool = True) -> Any:
        action = type(request).__name__
        self.calls.append((action, request))
        if action in self.answers:
            return self.answers[action](request)
        return self.default(action)

    def default(self, action: str) -> Any:
        now = "2026-01-01T00:00:00.000Z"
        if action == "BootNotification":
            return call_result.BootNotification(current_time=now, interval=60, status="Accepted")
        if action == "StartTransaction":
            return call_result.StartTransaction(transaction_id=next(self._ids),
                                                id_tag_info={"status": "Accepted"})
        if action == "Heartbeat":
            return call_result.Heartbeat(current_time=now)
        return getattr(call_result, action)()

    def of(self, action: str) -> list[Any]:
        return [request for name, request in self.calls if name == action]

    def statuses(self) -> list[str]:
        return [request.status for request in self.of("StatusNotification")]


class FakeLink:
    """A CAN link that is up (or not) and keeps what it was asked to send."""

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.frames: list[tuple[int, float | None]] = []

    async def send(self, msg) -> bool:
        if not self.up:
            return False
        frame = frames.decode(msg)
        self.frames.append((frame.arbitration_id, frame.amps))
        return True


class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.metrics: list[dict] = []

    def event(self, event_type: str, description: str, data: Any = None,
              charge_point_id: str | None = None) -> None:
        self.events.append((event_type, description, data))

    def metric(self, name: str, value: float, unit: str, charge_point_id: str | None = None,
               transaction_id: int | None = None, timestamp: Any = None) -> None:
        self.metrics.append({"name": name, "value": value, "transaction_id": transaction_id})
