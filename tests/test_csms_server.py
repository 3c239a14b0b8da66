"""The whole central system in process (endpoint, handlers, registry, scenario, recording) on a
FakeClock, against fake WebSocket connections the test speaks OCPP-J through, with a writer that
collects what would be recorded: no sockets, no real sleeps."""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
from types import SimpleNamespace
from typing import Any, Optional

import pytest
import websockets

from evsim import cli
from evsim.clock import FakeClock, settle
from evsim.csms.registry import Station
from evsim.csms.server import CentralSystem
from evsim.detection.site import Detectors

# -- fakes ----------------------------------------------------------------------------------------


class RecordingWriter:
    """Collects events and metrics; ``call`` runs the write at once against a bank that records
    the sessions it is asked to open and close."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.metrics: list[dict] = []
        self.bank = SessionBank()

    def event(self, event_type: str, description: str, data: Any = None,
              charge_point_id: Optional[str] = None) -> None:
        self.events.append({"event_type": event_type, "description": description, "data": data,
                            "charge_point_id": charge_point_id})

    def metric(self, name: str, value: float, unit: str, charge_point_id: Optional[str] = None,
               transaction_id: Optional[int] = None, timestamp: Any = None) -> None:
        self.metrics.append({"name": name, "value": value, "unit": unit,
                             "charge_point_id": charge_point_id,
                             "transaction_id": transaction_id, "timestamp": timestamp})

    def call(self, write) -> None:
        write(self.bank)

    def of_type(self, event_type: str) -> list[dict]:
        return [e for e in self.events if e["event_type"] == event_type]


class SessionBank:
    def __init__(self) -> None:
        self.started: list[tuple] = []
        self.ended: list[tuple] = []

    def start_session(self, charge_point_id, transaction_id, **fields) -> None:
        self.started.append((charge_point_id, transaction_id, fields))

    def end_session(self, charge_point_id, transaction_id, **fields) -> None:
        self.ended.append((charge_point_id, transaction_id, fields))


class FakeDetector:
    """Notes the (simulated time, amps) it is fed; never detects."""

    def __init__(self) -> None:
        self.fed: list[tuple[float, float]] = []

    def update(self, t: float, amps: float) -> None:
        self.fed.append((t, amps))

    def close(self, t: float) -> None:
        return None


CLOSE = object()


async def answered(condition, what: str, timeout: float = 30.0) -> Any:
    """Wait for ``condition()``: the ocpp library validates payloads in a worker thread, so an
    answer takes a moment of real time; the deadline is generous for a loaded machine."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        await settle()
        result = condition()
        if result:
            return result
        await asyncio.sleep(0.001)
    pytest.fail(f"timed out waiting for {what}")


class FakeConnection:
    """A server-side WebSocket connection: the test puts frames in, reads what was sent."""

    def __init__(self, path: str, subprotocol: Optional[str] = "ocpp1.6") -> None:
        self.request = SimpleNamespace(path=path)
        self.remote_address = ("127.0.0.1", 40000)
        self.subprotocol = subprotocol
        self.incoming: asyncio.Queue = asyncio.Queue()
        self.sent: list[list] = []
        self.closed: Optional[tuple[int, str]] = None

    async def recv(self) -> str:
        frame = await self.incoming.get()
        if frame is CLOSE:
            raise websockets.ConnectionClosed(None, None)
        return frame

    async def send(self, message: str) -> None:
        if self.closed:
            raise websockets.ConnectionClosed(None, None)
        self.sent.append(json.loads(message))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)
            self.incoming.put_nowait(CLOSE)


class FakeChargePoint:
    """The test's side of one FakeConnection, speaking OCPP-J frames."""

    _ids = itertools.count(1)

    def __init__(self, connection: FakeConnection, task: asyncio.Task) -> None:
        self.connection = connection
        self.task = task

    async def call(self, action: str, payload: dict) -> list:
        """Send a CALL; returns the CALLRESULT or CALLERROR frame."""
        unique_id = f"t{next(self._ids)}"
        self.connection.incoming.put_nowait(json.dumps([2, unique_id, action, payload]))
        return await answered(lambda: next((frame for frame in self.connection.sent
                                            if frame[0] in (3, 4) and frame[1] == unique_id),
                                           None), f"an answer to {action}")

    def requests(self) -> list[list]:
        """The CALLs the central system sent."""
        return [frame for frame in self.connection.sent if frame[0] == 2]

    async def requested(self, count: int) -> list[list]:
        """The CALLs the central system sent, once there are ``count``."""
        return await answered(lambda: len(self.requests()) >= count and self.requests(),
                              f"{count} CALLs from the central system")

    async def answer(self, request: list, payload: dict) -> None:
        self.connection.incoming.put_nowait(json.dumps([3, request[1], payload]))
        await settle()

    async def disconnect(self) -> None:
        await self.connection.close()
        await asyncio.wait_for(self.task, 5)


class Site:
    """A CentralSystem on a FakeClock with a RecordingWriter and FakeDetectors."""

    def __init__(self, scenario: str = "none", speed: float = 1.0, **options: Any) -> None:
        self.clock = FakeClock(speed)
        self.writer = RecordingWriter()
        self.supervisor = cli.Supervisor()
        self.system = CentralSystem(self.writer, self.supervisor, self.clock, scenario=scenario,
                                    detectors=lambda: Detectors(fluctuation=FakeDetector()),
                                    **options)

    async def connect(self, charge_point_id: str) -> FakeChargePoint:
        connection = FakeConnection(f"/ocpp/{charge_point_id}")
        task = asyncio.create_task(self.system.handle(connection))
        await settle()
        return FakeChargePoint(connection, task)

    def station(self, charge_point_id: str) -> Station:
        return self.system.registry.get(charge_point_id)

    async def close(self) -> None:
        await self.supervisor.cancel()
        assert self.supervisor.failure is None


@pytest.fixture
async def site():
    sites: list[Site] = []

    def make(**options: Any) -> Site:
        sites.append(Site(**options))
        return sites[-1]
    yield make
    for made in sites:
        await made.close()


BOOT = {"chargePointVendor": "V", "chargePointModel": "M"}


def start_payload(timestamp: str = "2026-01-01T00:00:01.000Z") -> dict:
    return {"connectorId": 1, "idTag": "TAG", "meterStart": 100, "timestamp": timestamp}


def stop_payload(transaction_id: int, meter_stop: int = 150) -> dict:
    return {"transactionId": transaction_id, "meterStop": meter_stop,
            "timestamp": "2026-01-01T00:01:00.000Z", "reason": "Remote"}


# -- the central system, over fake connections ----------------------------------------------------

async def test_boot_heartbeat_and_the_other_answers(site):
    central = site(heartbeat_interval=30)
    cp = await central.connect("CP_1")
    boot = (await cp.call("BootNotification", BOOT))[2]
    assert boot == {"currentTime": "2026-01-01T00:00:00.000Z", "interval": 30,
                    "status": "Accepted"}
    await central.clock.advance(90)
    assert (await cp.call("Heartbeat", {}))[2] == {"currentTime": "2026-01-01T00:01:30.000Z"}
    assert (await cp.call("Authorize", {"idTag": "X"}))[2] == {"idTagInfo": {"status": "Accepted"}}
    assert (await cp.call("DataTransfer", {"vendorId": "acme"}))[2] == \
        {"status": "UnknownVendorId"}
    assert (await cp.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                                 "status": "Available"}))[0] == 3
    assert (await cp.call("FooBar", {}))[2] == "NotImplemented"
    await cp.disconnect()
    messages = central.writer.of_type("OCPP_MESSAGE")
    assert {m["description"] for m in messages} >= {"cp->csms CALL BootNotification",
                                                    "csms->cp CALLRESULT BootNotification",
                                                    "csms->cp CALLERROR FooBar"}
    assert all(m["charge_point_id"] == "CP_1" for m in messages)
    assert [e["event_type"] for e in central.writer.events
            if e["event_type"] in ("CONNECTED", "DISCONNECTED")] == ["CONNECTED", "DISCONNECTED"]


async def test_a_frame_that_cannot_be_read_is_recorded_as_ignored(site):
    central = site()
    cp = await central.connect("CP_1")
    cp.connection.incoming.put_nowait("not json")
    assert (await cp.call("Heartbeat", {}))[0] == 3
    (ignored,) = central.writer.of_type("OCPP_FRAME_IGNORED")
    assert ignored["data"]["frame"] == "not json" and ignored["charge_point_id"] == "CP_1"


async def test_a_connection_without_ocpp16_or_an_id_is_closed(site):
    central = site()
    wrong = FakeConnection("/CP_1", subprotocol=None)
    await central.system.handle(wrong)
    assert wrong.closed[0] == 1002
    nameless = FakeConnection("/")
    await central.system.handle(nameless)
    assert nameless.closed[0] == 1008
    assert len(central.system.registry) == 0


async def test_a_charge_point_id_comes_from_the_last_segment_of_the_path(site):
    central = site()
    connection = FakeConnection("/ocpp/CP%201/")
    task = asyncio.create_task(central.system.handle(connection))
    await settle()
    assert central.station("CP 1") is not None
    await connection.close()
    await task


async def test_a_second_connection_closes_the_first_and_serves(site):
    central = site(scenario="fluctuation")
    old = await central.connect("CP_1")
    await old.call("BootNotification", BOOT)
    assert [r[2] for r in await old.requested(1)] == ["SetChargingProfile"]
    new = await central.connect("CP_1")
    await settle()
    assert old.connection.closed == (1000, "replaced by a new connection")
    await asyncio.wait_for(old.task, 5)
    assert not new.task.done() and new.connection.closed is None
    assert central.station("CP_1").link._connection is new.connection
    assert (await new.call("Heartbeat", {}))[0] == 3
    # the scenario left with the old connection and resumes on the new one
    assert [r[2] for r in await new.requested(1)] == ["SetChargingProfile"]
    assert [e["event_type"] for e in central.writer.events
            if e["event_type"] in ("CONNECTED", "DISCONNECTED")] == \
        ["CONNECTED", "CONNECTED", "DISCONNECTED"]
    await new.disconnect()
    assert central.station("CP_1").link is None


async def test_a_charge_point_reconnecting_without_boot_still_gets_its_scenario(site):
    central = site(scenario="fluctuation", speed=20.0)
    cp = await central.connect("CP_1")
    await cp.call("BootNotification", BOOT)
    (first,) = await cp.requested(1)
    await cp.answer(first, {"status": "Accepted"})
    runner = central.station("CP_1").runner
    await answered(lambda: runner.steps_done == 1, "the first step done")
    await cp.disconnect()  # during the 2 s wait after the 0 A limit

    cp = await central.connect("CP_1")
    await central.clock.advance(10)
    assert cp.requests() == []  # no scenario before the charge point says something
    await cp.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                         "status": "Available"})
    (resumed,) = await cp.requested(1)
    assert resumed[2] == "SetChargingProfile"
    assert resumed[3]["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0][
        "limit"] == 100.0  # the first step was done
    await cp.disconnect()


async def play_the_charge_point(central: Site, cp: FakeChargePoint) -> dict:
    """Accept every CALL; start a transaction on RemoteStart and stop it on RemoteStop; move the
    clock whenever the scenario waits. Returns the StartTransaction answer."""
    done: dict = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not any(e["description"] == "scenario complete"
                  for e in central.writer.of_type("SCENARIO_STEP")):
        assert loop.time() < deadline, "the scenario did not complete"
        requests = cp.requests()
        if len(requests) > done.get("answered", 0):
            request = requests[done.get("answered", 0)]
            done["answered"] = done.get("answered", 0) + 1
            await cp.answer(request, {"status": "Accepted"})
            if request[2] == "RemoteStartTransaction":
                done["started"] = (await cp.call("StartTransaction", start_payload()))[2]
            elif request[2] == "RemoteStopTransaction":
                await cp.call("StopTransaction", stop_payload(request[3]["transactionId"]))
        elif central.clock.sleepers:
            await central.clock.advance(0.5)
        else:
            await asyncio.sleep(0.001)
    return done["started"]


async def test_the_scenario_drives_a_transaction_and_stops_it(site):
    central = site(scenario="fluctuation", cycles=1, speed=20.0)
    cp = await central.connect("CP_1")
    await cp.call("BootNotification", BOOT)
    started = await play_the_charge_point(central, cp)
    assert [r[2] for r in cp.requests()] == ["SetChargingProfile", "SetChargingProfile",
                                             "RemoteStartTransaction", "RemoteStopTransaction"]
    assert cp.requests()[3][3] == {"transactionId": started["transactionId"]}
    steps = central.writer.of_type("SCENARIO_STEP")
    assert [s["description"] for s in steps] == [
        "SetChargingProfile limit 0 A -> Accepted", "SetChargingProfile limit 100 A -> Accepted",
        "RemoteStartTransaction -> Accepted",
        f"RemoteStopTransaction {started['transactionId']} -> Accepted", "scenario complete"]
    assert all(s["data"]["scenario"] == "fluctuation" and s["charge_point_id"] == "CP_1"
               for s in steps)
    assert [tid for _, tid, _ in central.writer.bank.ended] == [started["transactionId"]]


async def test_start_and_stop_transaction_open_and_close_one_session(site, caplog):
    central = site(first_transaction_id=8)
    cp = await central.connect("CP_1")
    other = await central.connect("CP_2")
    started = (await cp.call("StartTransaction", start_payload()))[2]
    assert started == {"transactionId": 8, "idTagInfo": {"status": "Accepted"}}
    bank = central.writer.bank
    assert bank.started == [("CP_1", 8, {"start_time": central.clock.now().replace(second=1),
                                         "meter_start_wh": 100, "id_tag": "TAG"})]
    with caplog.at_level(logging.INFO, logger="csms"):
        assert (await other.call("StopTransaction", stop_payload(8)))[2] == \
            {"idTagInfo": {"status": "Accepted"}}  # not its transaction: answered, not recorded
        await cp.call("StopTransaction", stop_payload(8))
        await cp.call("StopTransaction", stop_payload(8, meter_stop=999))  # answer was lost
        await cp.call("StopTransaction", stop_payload(12345))
    assert [(cp_id, tid, fields["meter_stop_wh"], fields["stop_reason"])
            for cp_id, tid, fields in bank.ended] == [("CP_1", 8, 150, "Remote")]
    assert "StopTransaction for transaction 12345" in caplog.text
    assert "transaction 8 stopped again" in caplog.text
    assert central.station("CP_1").transaction_id is None


async def test_a_transaction_without_a_readable_time_is_stamped_by_the_clock(site):
    central = site()
    cp = await central.connect("CP_1")
    await central.clock.advance(5)
    started = (await cp.call("StartTransaction", start_payload("yesterday")))[2]
    stop = {"transactionId": started["transactionId"], "meterStop": 150, "timestamp": "later"}
    await cp.call("StopTransaction", stop)
    (_, _, opened), = central.writer.bank.started
    (_, _, closed), = central.writer.bank.ended
    assert opened["start_time"] == closed["end_time"] == central.clock.now()
    assert closed["stop_reason"] == "Local"


async def test_meter_values_become_metrics_and_feed_the_detector_in_simulated_time(site):
    central = site(speed=10.0, first_transaction_id=3)
    cp = await central.connect("CP_1")
    await cp.call("MeterValues", {"connectorId": 1, "transactionId": 2, "meterValue": [
        {"timestamp": "2026-01-01T00:00:01.000Z", "sampledValue": [
            {"value": "16.0", "measurand": "Current.Import", "unit": "A"},
            {"value": "3.68", "measurand": "Power.Active.Import", "unit": "kW"},
            {"value": "1.5", "unit": "kWh"},  # the default measurand: energy
            {"value": "5.0", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
            {"value": "50", "measurand": "Frequency"}]},
        {"timestamp": "never", "sampledValue": [{"value": "1", "measurand": "Voltage"}]},
        {"timestamp": "2026-01-01T00:00:02.000Z", "sampledValue": [
            {"value": "NaN", "measurand": "Current.Import", "unit": "A"},
            {"value": "1e400", "measurand": "Voltage", "unit": "V"},
            {"value": "17.0", "measurand": "Current.Import", "unit": "A"}]}]})
    metrics = [(m["name"], m["value"], m["unit"], m["transaction_id"])
               for m in central.writer.metrics]
    assert metrics == [("current", 16.0, "A", 2), ("power", 3680.0, "W", 2),
                       ("energy", 1500.0, "Wh", 2), ("current", 17.0, "A", 2)]
    assert central.writer.metrics[0]["timestamp"].isoformat() == "2026-01-01T00:00:01+00:00"
    station = central.station("CP_1")
    start = central.writer.metrics[0]["timestamp"].timestamp()
    assert station.analyser.site.detectors.fluctuation.fed == [(start * 10, 16.0),
                                                                ((start + 1) * 10, 17.0)]
    assert station.transaction_id == 2  # from before a restart: the scenario may stop it


async def test_shutdown_stops_the_scenarios_and_ends_open_episodes(site):
    central = site(scenario="normal")
    cp = await central.connect("CP_1")
    await cp.call("BootNotification", BOOT)
    station = central.station("CP_1")
    assert station.scenario_task is not None
    closed = []
    station.analyser.close = lambda: closed.append(station.id)
    central.system.shutdown()
    assert station.scenario_task is None and closed == ["CP_1"]
