"""cp.py (a real subprocess) against a central system written in the test with the ocpp library
only, and a CAN charger played by the test on a real python-can-remote bus. The branches of its
logic are tested in process, on a fake clock, in test_cp_units.py."""
from __future__ import annotations

import argparse
import asyncio
import threading
import time
from dataclasses import dataclass

import can
import pytest
from conftest import free_port, script, start, stop
from conftest import wait_for_async as until
from cp_fakes import command_changes
from ocpp.exceptions import InternalError, OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from ocpp_helpers import now_iso
from websockets.asyncio.server import serve

from evsim import cli
from evsim.bank import MemoryBank
from evsim.canbus import frames
from evsim.cp.config import Configuration
from evsim.cp.connection import Backoff, endpoint_url
from evsim.ocpp16 import profiles as charging_profiles
from evsim.timefmt import parse_ocpp_time

SPEED = 20.0


class PlayedCharger:
    """Plays the charger on the bus: publishes 0x300 every period, records the frames the
    charge point sends."""

    def __init__(self, channel: str, period: float = 1.0 / SPEED) -> None:
        self.bus = can.Bus(interface="remote", channel=channel)
        self.period = period
        self.amps = 0.0
        self.received: list[frames.Frame] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            msg = self.bus.recv(max(0.0, next_tick - time.monotonic()))
            if msg is not None:
                frame = frames.decode(msg)
                if frame is not None and frame.arbitration_id != frames.MEASURED_CURRENT:
                    self.received.append(frame)
            if time.monotonic() >= next_tick:
                self.bus.send(frames.measured_current(self.amps))
                next_tick += self.period

    def sent(self) -> list[tuple[int, float | None]]:
        return [(f.arbitration_id, f.amps) for f in self.received]

    def changes(self) -> list[tuple[int, float | None]]:
        return command_changes(self.sent())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.bus.shutdown()


class PlainCentral(ChargePoint):
    """A central system that only uses the ocpp library; fails the first StopTransaction."""

    def __init__(self, id, connection, log, heartbeat_interval=60):
        super().__init__(id, connection, response_timeout=5)
        self.log = log
        self.heartbeat_interval = heartbeat_interval
        self.stop_attempts = 0

    @on(Action.boot_notification)
    def on_boot(self, **payload):
        self.log.append(("BootNotification", payload))
        return call_result.BootNotification(current_time=now_iso(),
                                            interval=self.heartbeat_interval, status="Accepted")

    @on(Action.heartbeat)
    def on_heartbeat(self):
        self.log.append(("Heartbeat", {}))
        return call_result.Heartbeat(current_time=now_iso())

    @on(Action.status_notification)
    def on_status(self, **payload):
        self.log.append(("StatusNotification", payload))
        return call_result.StatusNotification()

    @on(Action.start_transaction)
    def on_start(self, **payload):
        self.log.append(("StartTransaction", payload))
        return call_result.StartTransaction(transaction_id=42, id_tag_info={"status": "Accepted"})

    @on(Action.stop_transaction)
    def on_stop(self, **payload):
        self.log.append(("StopTransaction", payload))
        self.stop_attempts += 1
        if self.stop_attempts == 1:
            raise InternalError(description="database hiccup")
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, **payload):
        self.log.append(("MeterValues", payload))
        return call_result.MeterValues()


@dataclass
class ChangeConfiguration:  # the real action's name, with a field 1.6 does not have
    key: str
    value: str
    colour: str


@dataclass
class FooBar:
    pass


def central_handler(log: list, centrals: list, fail_first_stop: bool = True):
    """A websockets handler that serves every connection with a PlainCentral."""
    async def handler(connection):
        central = PlainCentral(connection.request.path.strip("/"), connection, log)
        if not fail_first_stop:
            central.stop_attempts = 1
        centrals.append(central)
        await central.start()
    return handler


def statuses(log):
    return [p["status"] for action, p in log if action == "StatusNotification"]


def in_order(seen: list, *expected) -> bool:
    """``expected`` occurs in ``seen`` in this order (a loaded machine may add statuses)."""
    rest = iter(seen)
    return all(any(item == wanted for item in rest) for wanted in expected)


def of(log, action):
    return [p for a, p in log if a == action]


async def test_cp_against_a_plain_central_system_and_a_can_charger(bus_server, db_path):
    log: list = []
    centrals: list[PlainCentral] = []

    handler = central_handler(log, centrals)
    charger = await asyncio.to_thread(PlayedCharger, bus_server)
    proc = None
    try:
        async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:
            port = server.sockets[0].getsockname()[1]
            proc = start(script("cp.py", "--url", f"ws://127.0.0.1:{port}", "--id", "CP_T",
                                "--speed", str(SPEED), "--db", str(db_path),
                                "--can-interface", "remote", "--can-channel", bus_server))
            await until(lambda: "Available" in statuses(log), message="boot and Available")
            central = centrals[0]
            assert of(log, "BootNotification")[0]["charge_point_model"]
            await until(lambda: (frames.SET_LIMIT, 32.0) in charger.sent(),
                        message="default limit")

            config = await central.call(call.GetConfiguration(key=["MeterValueSampleInterval",
                                                                   "Foo"]))
            assert config.configuration_key == [{"key": "MeterValueSampleInterval",
                                                 "readonly": False, "value": "1"}]
            assert config.unknown_key == ["Foo"]
            changes = [("TransactionMessageRetryInterval", "2", "Accepted"),
                       ("NumberOfConnectors", "2", "Rejected"), ("Foo", "1", "NotSupported"),
                       ("MeterValueSampleInterval", "abc", "Rejected"),
                       ("MeterValueSampleInterval", "1" + "0" * 400, "Rejected")]
            for key, value, expected in changes:
                result = await central.call(call.ChangeConfiguration(key=key, value=value))
                assert result.status == expected, key

            tx_profile = charging_profiles.build(5, 20, purpose="TxProfile")
            result = await central.call(call.SetChargingProfile(connector_id=1,
                                                                cs_charging_profiles=tx_profile))
            assert result.status == "Rejected"
            watts = charging_profiles.build(1, 3680, unit="W", start=parse_ocpp_time(
                now_iso()))
            result = await central.call(call.SetChargingProfile(connector_id=1,
                                                                cs_charging_profiles=watts))
            assert result.status == "Accepted"
            await until(lambda: (frames.SET_LIMIT, 16.0) in charger.sent(), message="0x210 16 A")

            result = await central.call(call.RemoteStartTransaction(id_tag="T", connector_id=2))
            assert result.status == "Rejected"
            result = await central.call(call.RemoteStartTransaction(id_tag="T", connector_id=1))
            assert result.status == "Accepted"
            start_req = (await until(lambda: of(log, "StartTransaction"), message="Start"))[0]
            assert (start_req["id_tag"], start_req["connector_id"]) == ("T", 1)
            assert isinstance(start_req["meter_start"], int)
            await until(lambda: (frames.START, None) in charger.sent(), message="0x200")
            assert (await central.call(call.RemoteStartTransaction(id_tag="T"))).status == \
                "Rejected"
            charger.amps = 16.0

            def charging_sample():
                for payload in of(log, "MeterValues"):
                    values = {v["measurand"]: v for v in payload["meter_value"][0]["sampled_value"]}
                    if payload.get("transaction_id") == 42 and \
                            values["Current.Import"]["value"] == "16.0":
                        return values
            values = await until(charging_sample, message="MeterValues while charging")
            assert values["Voltage"]["value"] == "230.0" and values["Current.Import"]["unit"] == "A"
            assert values["Power.Active.Import"]["value"] == "3680.0"
            assert values["Energy.Active.Import.Register"]["unit"] == "Wh"

            def energy_wh():
                registers = [float(v["value"]) for p in of(log, "MeterValues")
                             for v in p["meter_value"][0]["sampled_value"]
                             if v["measurand"] == "Energy.Active.Import.Register"]
                return registers[-1] if registers else 0.0
            await until(lambda: energy_wh() >= start_req["meter_start"] + 5,
                        message="5 Wh charged")

            assert (await central.call(call.RemoteStopTransaction(transaction_id=41))).status == \
                "Rejected"
            assert (await central.call(call.RemoteStopTransaction(transaction_id=42))).status == \
                "Accepted"
            await until(lambda: (frames.STOP, None) in charger.sent(), message="0x201")
            charger.amps = 0.0
            stops = await until(lambda: len(of(log, "StopTransaction")) == 2 and
                                of(log, "StopTransaction"), message="StopTransaction retried")
            assert stops[0] == stops[1]
            assert (stops[0]["transaction_id"], stops[0]["reason"]) == (42, "Remote")
            assert stops[0]["meter_stop"] > start_req["meter_start"]
            await until(lambda: in_order(statuses(log), "Available", "Preparing", "Charging",
                                         "Finishing", "Available"), message="a whole cycle")

            assert (await central.call(call.ClearChargingProfile())).status == "Accepted"
            await until(lambda: charger.changes()[-1] == (frames.SET_LIMIT, 32.0),
                        message="default limit restored")
            assert (await central.call(call.ClearChargingProfile(id=99))).status == "Unknown"
            assert [f for f in charger.changes() if f[0] != frames.SET_LIMIT] == \
                [(frames.STOP, None), (frames.START, None), (frames.STOP, None)]
            assert charger.sent().count((frames.STOP, None)) > 2  # repeated every cycle

            bogus = {**charging_profiles.build(7, 10), "chargingProfilePurpose": "Bogus"}
            for request, code in ((FooBar(), "NotImplemented"), (call.Heartbeat(),
                                                                 "NotSupported"),
                                  (ChangeConfiguration("a", "b", "red"), "FormationViolation"),
                                  (call.SetChargingProfile(connector_id=1,
                                                           cs_charging_profiles=bogus),
                                   "PropertyConstraintViolation")):
                with pytest.raises(OCPPError) as error:
                    await central.call(request, suppress=False, skip_schema_validation=True)
                assert error.value.code == code
        code, out = stop(proc)
        assert code == 0, out
        assert "Traceback" not in out
    finally:
        if proc is not None and proc.poll() is None:
            stop(proc)
        await asyncio.to_thread(charger.close)

    with MemoryBank(db_path, readonly=True) as bank:
        can_events = bank.get_recent_events(50, {"event_type": "CAN_FRAME", "source": "cp"})
        assert {e["data"]["id"] for e in can_events} == {"0x200", "0x201", "0x210"}
        messages = bank.get_recent_events(500, {"event_type": "OCPP_MESSAGE", "source": "cp"})
        assert {e["data"]["direction"] for e in messages} == {"sent", "received"}
        assert any(e["description"] == "cp->csms CALL StartTransaction" for e in messages)
        currents = bank.get_metrics("current", charge_point_id="CP_T", transaction_id=42)
        assert currents and all(m["source"] == "cp" for m in currents)
        assert 16.0 in [m["value"] for m in currents]


def test_configuration_keys():
    config = Configuration()
    known, unknown = config.get()
    assert {k["key"] for k in known} >= {"HeartbeatInterval", "TransactionMessageAttempts",
                                         "NumberOfConnectors"}
    assert unknown == []
    assert config.change("TransactionMessageAttempts", "0") == "Rejected"
    assert config.change("HeartbeatInterval", "5") == "Accepted" and config["HeartbeatInterval"] == 5


@pytest.mark.parametrize("key, value, status", [
    ("MeterValueSampleInterval", "1" + "0" * 400, "Rejected"),  # asyncio could not sleep that long
    ("HeartbeatInterval", "86401", "Rejected"),
    ("HeartbeatInterval", "86400", "Accepted"),
    ("TransactionMessageRetryInterval", "86401", "Rejected"),
    ("TransactionMessageAttempts", "101", "Rejected"),
    ("TransactionMessageAttempts", "100", "Accepted"),
    ("MeterValueSampleInterval", "0", "Accepted"),  # OCPP 1.6: no sampled data
    ("MeterValueSampleInterval", "-1", "Rejected"),
])
def test_configuration_values_have_a_range(key, value, status):
    config = Configuration()
    assert config.change(key, value) == status
    assert config[key] == (int(value) if status == "Accepted" else Configuration.WRITABLE[key])


def test_backoff_grows_is_capped_and_jittered():
    backoff = Backoff(base=1.0, cap=8.0, rng=lambda: 1.0)
    assert [backoff.next() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    backoff.reset()
    assert backoff.next() == 1
    low = Backoff(base=1.0, cap=8.0, rng=lambda: 0.0)
    assert [low.next() for _ in range(3)] == [0.5, 1, 2]


def test_endpoint_url_appends_the_id_as_one_path_segment():
    assert endpoint_url("ws://127.0.0.1:9000/", "CP_1") == "ws://127.0.0.1:9000/CP_1"
    assert endpoint_url("wss://h/ocpp", "a/b c") == "wss://h/ocpp/a%2Fb%20c"


@pytest.mark.parametrize("args, message", [
    (["--url", "http://x"], "--url must be a ws:// or wss:// URL"),
    (["--url", "ws://[::1"], "Invalid IPv6 URL"),
    (["--url", "ws://127.0.0.1:99999"], "Port out of range"),
    (["--id", ""], "--id must not be empty"),
])
def test_a_url_it_cannot_connect_to_is_a_usage_error(db_path, args, message):
    proc = start(script("cp.py", *args, "--db", str(db_path)))
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1 and message in out


def test_a_supervised_task_that_dies_ends_the_run_as_a_failure():
    """The supervision cp.py and csms.py share: cli.run_async raises the SimError that cli.run
    prints as one line with exit code 1."""
    idle: list[asyncio.Task] = []

    async def amain(args, supervisor: cli.Supervisor) -> None:
        async def meter() -> None:
            raise OverflowError("integer division result too large for a float")
        idle.append(supervisor.start(asyncio.Event().wait(), "watchdog"))
        supervisor.start(meter(), "meter")
        await supervisor.stop.wait()

    with pytest.raises(cli.SimError) as failure:
        cli.run_async(amain, argparse.Namespace())
    assert str(failure.value) == \
        "meter failed: OverflowError: integer division result too large for a float"
    assert idle[0].cancelled()


async def test_stopping_the_charge_point_ends_its_transaction_first(bus_server, db_path):
    log: list = []
    centrals: list[PlainCentral] = []

    handler = central_handler(log, centrals, fail_first_stop=False)
    charger = await asyncio.to_thread(PlayedCharger, bus_server)
    proc = None
    try:
        async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:
            port = server.sockets[0].getsockname()[1]
            proc = start(script("cp.py", "--url", f"ws://127.0.0.1:{port}", "--speed", str(SPEED),
                                "--db", str(db_path), "--can-channel", bus_server))
            await until(lambda: "Available" in statuses(log), message="boot")
            result = await centrals[0].call(call.RemoteStartTransaction(id_tag="T"))
            assert result.status == "Accepted"
            await until(lambda: of(log, "StartTransaction"), message="StartTransaction")
            code, out = await asyncio.to_thread(stop, proc)
            assert code == 0, out
            (stopped,) = of(log, "StopTransaction")
            assert (stopped["transaction_id"], stopped["reason"]) == (42, "Other")
            assert (frames.STOP, None) in charger.sent()
    finally:
        if proc is not None and proc.poll() is None:
            stop(proc)
        await asyncio.to_thread(charger.close)


async def run_cp_with_fast_heartbeats(db_path, can_channel):
    """cp.py against a plain central system that asks for a heartbeat every second (every
    1/SPEED s of wall time): heartbeats count the time that goes by."""
    log: list = []
    centrals: list[PlainCentral] = []

    async def handler(connection):
        central = PlainCentral(connection.request.path.strip("/"), connection, log,
                               heartbeat_interval=1)
        centrals.append(central)
        await central.start()

    server = await serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"])
    port = server.sockets[0].getsockname()[1]
    proc = start(script("cp.py", "--url", f"ws://127.0.0.1:{port}", "--speed", str(SPEED),
                        "--db", str(db_path), "--can-channel", can_channel))
    return server, proc, log, centrals


async def heartbeats(log, count):
    seen = len(of(log, "Heartbeat"))
    await until(lambda: len(of(log, "Heartbeat")) >= seen + count, message=f"{count} heartbeats")


async def test_no_limit_is_sent_while_the_bus_is_down(db_path):
    no_bus = f"ws://127.0.0.1:{free_port()}/"
    server, proc, log, _ = await run_cp_with_fast_heartbeats(db_path, no_bus)
    try:
        await heartbeats(log, 20)  # 20 samples and 40 watchdog rounds
        code, out = await asyncio.to_thread(stop, proc)
    finally:
        if proc.poll() is None:
            stop(proc)
        server.close()
    assert code == 0, out
    assert out.count("not reachable") == 1 and "can_remote" in out  # the one-line hint
    assert "not sent" not in out
