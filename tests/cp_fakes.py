"""Fakes for in-process charge point tests: a central system that answers CALLs as scripted, a
CAN link that records frames, a recorder that keeps what the MemoryBank would get, and a central
system written with the ocpp library alone that a station reaches over a real loopback WebSocket."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action

from evsim.canbus import frames

NOW = "2026-01-01T00:00:00.000Z"


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
        if action in ("Authorize", "StopTransaction"):
            return getattr(call_result, action)(id_tag_info={"status": "Accepted"})
        if action == "SignCertificate":
            return call_result.SignCertificate(status="Accepted")
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


# -- a central system written with the ocpp library, over a real WebSocket on loopback ----------

class LibraryCentral(ChargePoint):
    """A central system that uses only the ocpp library: answers every message a charge point
    sends and keeps them. ``id_tags`` gives the idTagInfo status of a tag (default Accepted)."""

    def __init__(self, id: str, connection: Any) -> None:
        super().__init__(id, connection, response_timeout=5)
        self.received: list[tuple[str, dict]] = []
        self.id_tags: dict[str, str] = {}
        self.csr: str | None = None
        self._ids = itertools.count(1)

    def _note(self, action: str, payload: dict) -> None:
        self.received.append((action, payload))

    def of(self, action: str) -> list[dict]:
        return [payload for name, payload in self.received if name == action]

    def statuses(self, connector_id: int = 1) -> list[str]:
        return [p["status"] for p in self.of("StatusNotification")
                if p["connector_id"] == connector_id]

    def _info(self, id_tag: str) -> dict:
        return {"status": self.id_tags.get(id_tag, "Accepted")}

    @on(Action.boot_notification)
    def on_boot(self, **payload):
        self._note("BootNotification", payload)
        return call_result.BootNotification(current_time=NOW, interval=60, status="Accepted")

    @on(Action.heartbeat)
    def on_heartbeat(self):
        self._note("Heartbeat", {})
        return call_result.Heartbeat(current_time=NOW)

    @on(Action.authorize)
    def on_authorize(self, id_tag):
        self._note("Authorize", {"id_tag": id_tag})
        return call_result.Authorize(id_tag_info=self._info(id_tag))

    @on(Action.start_transaction)
    def on_start(self, **payload):
        self._note("StartTransaction", payload)
        return call_result.StartTransaction(transaction_id=next(self._ids),
                                            id_tag_info=self._info(payload["id_tag"]))

    @on(Action.sign_certificate)
    def on_sign_certificate(self, csr):
        self._note("SignCertificate", {"csr": csr})
        self.csr = csr
        return call_result.SignCertificate(status="Accepted")


def _plain_handler(action: str, answer: Callable[[], Any]) -> Callable:
    def handler(self, **payload):
        self._note(action, payload)
        return answer()
    handler.__name__ = f"on_{action}"  # the library routes by the function's name
    return on(action)(handler)


for _action in ("StatusNotification", "StopTransaction", "MeterValues",
                "DiagnosticsStatusNotification", "FirmwareStatusNotification",
                "SecurityEventNotification", "LogStatusNotification",
                "SignedFirmwareStatusNotification"):
    setattr(LibraryCentral, f"on_{_action}",
            _plain_handler(_action, getattr(call_result, _action)))


class Site:
    """A station connected to a :class:`LibraryCentral` over ws://127.0.0.1:<free port>; every
    connection the station makes gets a new central (``centrals``, the last one ``central``)."""

    def __init__(self, station: Any, centrals: list[LibraryCentral]) -> None:
        self.station = station
        self.centrals = centrals

    @property
    def central(self) -> LibraryCentral:
        return self.centrals[-1]

    async def call(self, request: Any) -> Any:
        return await self.central.call(request, suppress=False)


@asynccontextmanager
async def site(station: Any) -> AsyncIterator[Site]:
    """Serve a central system on a free loopback port and keep ``station`` connected to it."""
    from conftest import wait_for_async
    from websockets.asyncio.server import serve

    from evsim.cp.connection import keep_connected

    centrals: list[LibraryCentral] = []

    async def handler(connection: Any) -> None:
        central = LibraryCentral(connection.request.path.strip("/"), connection)
        centrals.append(central)
        with contextlib.suppress(websockets.ConnectionClosed):
            await central.start()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:
        port = server.sockets[0].getsockname()[1]
        task = asyncio.create_task(keep_connected(station, f"ws://127.0.0.1:{port}"
                                                           f"/{station.id}"))
        try:
            await wait_for_async(lambda: centrals and station.connected
                                 and centrals[-1].statuses(), message="boot and status")
            yield Site(station, centrals)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class QueuedWrites:
    """A BankWriter that keeps what it was asked to run, for a test to run on :class:`LabelBank`."""

    def __init__(self) -> None:
        self.writes: list = []

    def call(self, write) -> None:
        self.writes.append(write)


class LabelBank:
    """The MemoryBank as a label recorder sees it."""

    def __init__(self) -> None:
        self.labels: list[dict] = []

    def record_label(self, **fields) -> None:
        self.labels.append(fields)


def command_changes(sent: list[tuple[int, float | None]]) -> list[tuple[int, float | None]]:
    """The command frames that changed what was asked: cp.py repeats its intent every cycle,
    so a frame counts when it differs from the one before it of its kind, limit or run."""
    last: dict[bool, tuple[int, float | None]] = {}
    changed = []
    for frame in sent:
        kind = frame[0] == frames.SET_LIMIT
        if last.get(kind) != frame:
            changed.append(frame)
            last[kind] = frame
    return changed
