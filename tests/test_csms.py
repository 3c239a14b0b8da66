"""csms.py against clients written in the test: a plain ocpp-library charge point, raw
WebSocket frames, a wrong subprotocol, and the command line."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import websockets
from conftest import free_port, port_open, script, start, stop, wait_for
from ocpp.v16 import call
from ocpp_helpers import PlainChargePoint, meter_value, now_iso
from websockets.asyncio.client import connect

from evsim import cli
from evsim.bank import MemoryBank
from evsim.bank.writer import BankWriter
from evsim.csms import main as csms
from evsim.detection import fluctuation as detector
from evsim.ocpp16 import profiles as charging_profiles


class CentralSystemUnderTest:
    """csms.serve_forever in the test's event loop, on a free port, with a real MemoryBank."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.port = 0
        self._running = None

    async def start(self, **options) -> int:
        args = argparse.Namespace(host="127.0.0.1", port=0, scenario="none", cycles=0,
                                  speed=20.0, heartbeat_interval=60, db=str(self.db_path))
        vars(args).update(options)
        writer = BankWriter(args.db, "csms")
        supervisor = cli.Supervisor()
        ready = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(csms.serve_forever(args, writer, supervisor, ready.set_result))
        self.port = await asyncio.wait_for(ready, 5)
        self._running = (supervisor, task, writer)
        return self.port

    async def stop(self) -> None:
        if self._running:
            supervisor, task, writer = self._running
            self._running = None
            failure = supervisor.failure
            supervisor.stop.set()
            await task
            await supervisor.cancel()
            writer.close()
            assert failure is None

    def url(self, charge_point_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{charge_point_id}"

    def bank(self) -> MemoryBank:
        return MemoryBank(self.db_path, readonly=True)


@pytest.fixture
async def central(db_path):
    system = CentralSystemUnderTest(db_path)
    yield system
    await system.stop()


async def plain_client(url: str, charge_point_id: str):
    connection = await connect(url, subprotocols=["ocpp1.6"])
    client = PlainChargePoint(charge_point_id, connection)
    task = asyncio.create_task(client.start())
    return client, connection, task


async def test_answers_every_charge_point_message_of_a_plain_ocpp_client(central):
    await central.start()
    client, connection, task = await plain_client(central.url("PLAIN_1"), "PLAIN_1")
    boot = await client.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
    assert boot.status == "Accepted" and boot.interval == 60
    assert (await client.call(call.Heartbeat())).current_time
    assert (await client.call(call.Authorize(id_tag="TAG"))).id_tag_info["status"] == "Accepted"
    await client.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                              status="Charging"))
    started = await client.call(call.StartTransaction(connector_id=1, id_tag="TAG",
                                                      meter_start=1000, timestamp=now_iso()))
    assert started.id_tag_info["status"] == "Accepted" and isinstance(started.transaction_id, int)
    again = await client.call(call.StartTransaction(connector_id=1, id_tag="TAG", meter_start=0,
                                                    timestamp=now_iso()))
    assert again.transaction_id != started.transaction_id
    sampled_at = datetime.now(UTC)
    for amps, energy in ((10.0, 1000), (20.0, 1001), (30.0, 1002)):
        sampled_at += timedelta(seconds=1)
        values = meter_value(amps, energy)
        values[0]["timestamp"] = charging_profiles.iso(sampled_at)
        await client.call(call.MeterValues(connector_id=1, transaction_id=started.transaction_id,
                                           meter_value=values))
    stopped_at = charging_profiles.iso(sampled_at + timedelta(seconds=1))
    stopped = await client.call(call.StopTransaction(meter_stop=1250, timestamp=stopped_at,
                                                     transaction_id=started.transaction_id,
                                                     reason="EVDisconnected"))
    assert stopped.id_tag_info["status"] == "Accepted"
    transfer = await client.call(call.DataTransfer(vendor_id="acme", message_id="x"))
    assert transfer.status == "UnknownVendorId"
    await connection.close()
    task.cancel()
    await central.stop()

    with central.bank() as bank:
        session = next(s for s in bank.get_sessions() if s["transaction_id"] == started.transaction_id)
        assert (session["energy_wh"], session["stop_reason"], session["id_tag"]) == \
            (250, "EVDisconnected", "TAG")
        assert (session["min_current"], session["avg_current"], session["max_current"],
                session["sample_count"]) == (10.0, 20.0, 30.0, 3)
        assert [m["value"] for m in bank.get_metrics("power", charge_point_id="PLAIN_1")] == \
            [2300.0, 4600.0, 6900.0]
        messages = bank.get_recent_events(200, {"event_type": "OCPP_MESSAGE"})
        received = [e["data"]["action"] for e in reversed(messages)
                    if e["data"]["direction"] == "received"]
        assert received == ["BootNotification", "Heartbeat", "Authorize", "StatusNotification",
                            "StartTransaction", "StartTransaction", "MeterValues", "MeterValues",
                            "MeterValues", "StopTransaction", "DataTransfer"]
        sent = [e for e in messages if e["data"]["direction"] == "sent"]
        assert len(sent) == len(received)
        assert all(e["source"] == "csms" and e["charge_point_id"] == "PLAIN_1" for e in messages)
        assert {e["description"] for e in messages} >= {"cp->csms CALL BootNotification",
                                                        "csms->cp CALLRESULT BootNotification"}
        kinds = {e["event_type"] for e in bank.get_recent_events(500)}
        assert {"CONNECTED", "DISCONNECTED", "PROCESS_START", "PROCESS_STOP"} <= kinds


async def test_a_stop_for_a_transaction_it_never_started_records_no_session(central, caplog):
    with MemoryBank(central.db_path) as bank:
        bank.start_session("OTHER", 7)
        bank.start_session("OTHER", "TX-A")  # a text id, from another central system
    await central.start()
    client, connection, task = await plain_client(central.url("PLAIN_4"), "PLAIN_4")
    with caplog.at_level(logging.WARNING, logger="csms"):
        stranger = await client.call(call.StopTransaction(meter_stop=10, timestamp=now_iso(),
                                                          transaction_id=99999), suppress=False)
    assert stranger.id_tag_info["status"] == "Accepted"
    assert "StopTransaction for transaction 99999" in caplog.text
    started = await client.call(call.StartTransaction(connector_id=1, id_tag="TAG", meter_start=0,
                                                      timestamp=now_iso()))
    assert started.transaction_id == 8
    for _ in range(2):  # the second time, as a charge point that missed the answer would
        await client.call(call.StopTransaction(meter_stop=5, timestamp=now_iso(),
                                               transaction_id=8), suppress=False)
    await connection.close()
    task.cancel()
    await central.stop()
    with central.bank() as bank:
        mine = [(s["transaction_id"], s["energy_wh"]) for s in bank.get_sessions()
                if s["charge_point_id"] == "PLAIN_4"]
    assert mine == [(8, 5)]

    await central.start()  # numbering goes on from the highest id, not from 99999
    client, connection, task = await plain_client(central.url("PLAIN_4"), "PLAIN_4")
    again = await client.call(call.StartTransaction(connector_id=1, id_tag="TAG", meter_start=5,
                                                    timestamp=now_iso()))
    assert again.transaction_id == 9
    await client.call(call.StopTransaction(meter_stop=6, timestamp=now_iso(), transaction_id=8),
                      suppress=False)  # issued before the restart: still closes its session
    await connection.close()
    task.cancel()
    await central.stop()
    with central.bank() as bank:
        ended = [s for s in bank.get_sessions() if s["transaction_id"] == 8]
    assert [s["meter_stop_wh"] for s in ended] == [6]


async def test_meter_values_that_are_not_finite_numbers_are_skipped_alone(central, caplog):
    await central.start()
    client, connection, task = await plain_client(central.url("PLAIN_5"), "PLAIN_5")
    odd = [{"timestamp": now_iso(), "sampledValue": [
        {"value": "NaN", "measurand": "Current.Import", "unit": "A"},
        {"value": "1e400", "measurand": "Voltage", "unit": "V"},
        {"value": "1e306", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": "12.5", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]
    with caplog.at_level(logging.WARNING, logger="csms"):
        await client.call(call.MeterValues(connector_id=1, meter_value=odd), suppress=False)
        await client.call(call.MeterValues(connector_id=1, meter_value=meter_value(16.0, 13.0)),
                          suppress=False)
    await connection.close()
    task.cancel()
    await central.stop()
    skipped = [r.getMessage() for r in caplog.records if "not finite" in r.getMessage()]
    assert len(skipped) == 1
    assert all(text in skipped[0] for text in ("'NaN'", "'1e400'", "'1e306'"))
    with central.bank() as bank:
        recorded = {name: [m["value"] for m in bank.get_metrics(name, charge_point_id="PLAIN_5")]
                    for name in ("current", "voltage", "power", "energy")}
        messages = bank.get_recent_events(50, {"event_type": "OCPP_MESSAGE",
                                               "charge_point_id": "PLAIN_5"})
    assert recorded == {"current": [16.0], "voltage": [230.0], "power": [3680.0],
                        "energy": [12.5, 13.0]}
    assert len(messages) == 4


async def test_drives_one_fluctuation_cycle_on_a_plain_client(central):
    await central.start(scenario="fluctuation", cycles=1, speed=20.0)
    client, connection, task = await plain_client(central.url("PLAIN_2"), "PLAIN_2")
    await client.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
    await asyncio.wait_for(client.stopped.wait(), 10)

    actions = [action for action, _ in client.requests]
    assert actions == ["SetChargingProfile", "SetChargingProfile", "RemoteStartTransaction",
                       "RemoteStopTransaction"]
    profiles = [charging_profiles.parse(payload) for _, payload in client.requests[:2]]
    assert [(p.purpose, p.kind, p.unit, p.periods[0].limit) for p in profiles] == \
        [("TxDefaultProfile", "Absolute", "A", 0.0), ("TxDefaultProfile", "Absolute", "A", 100.0)]
    assert client.requests[3][1]["transaction_id"] == client.transaction_id

    def steps():
        with central.bank() as bank:
            return [e["description"] for e in bank.get_recent_events(
                50, {"event_type": "SCENARIO_STEP", "charge_point_id": "PLAIN_2"})][::-1]
    described = await asyncio.to_thread(wait_for, lambda: len(steps()) == 5 and steps(),
                                        5, 0.02, "scenario complete")
    assert described == ["SetChargingProfile limit 0 A -> Accepted",
                         "SetChargingProfile limit 100 A -> Accepted",
                         "RemoteStartTransaction -> Accepted",
                         f"RemoteStopTransaction {client.transaction_id} -> Accepted",
                         "scenario complete"]
    await connection.close()
    task.cancel()


async def test_a_charge_point_reconnecting_without_boot_gets_the_scenario(central):
    await central.start(scenario="fluctuation", cycles=1, speed=1.0)
    client, connection, task = await plain_client(central.url("PLAIN_3"), "PLAIN_3")
    await client.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
    await asyncio.wait_for(client.first_request.wait(), 5)
    await connection.close()
    task.cancel()

    client, connection, task = await plain_client(central.url("PLAIN_3"), "PLAIN_3")
    await client.call(call.Heartbeat())
    await asyncio.wait_for(client.first_request.wait(), 5)
    assert client.requests[0][0] == "SetChargingProfile"
    await connection.close()
    task.cancel()


BAD_CALLS = [
    ('[2,"m1","BootNotification",{"chargePointVendor":"V"}]', "ProtocolError"),
    ('[2,"m2","BootNotification",{"chargePointVendor":"V","chargePointModel":"M","x":1}]',
     "FormationViolation"),
    ('[2,"m3","BootNotification",{"chargePointVendor":5,"chargePointModel":"M"}]',
     "TypeConstraintViolation"),
    ('[2,"m4","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Dancing"}]',
     "PropertyConstraintViolation"),
    ('[2,"m4b","MeterValues",{"connectorId":1,"meterValue":[]}]', "OccurenceConstraintViolation"),
    ('[2,"m5","FooBar",{}]', "NotImplemented"),
    ('[2,"m6","UpdateFirmware",{"location":"x","retrieveDate":"2025-01-01T00:00:00Z"}]',
     "NotSupported"),
    ('[2,"m7","Heartbeat"]', "FormationViolation"),
    ('[2,"m8","Heartbeat",[1]]', "FormationViolation"),
]
IGNORED = ['[2,"x1","Heartbeat",{}', "not json at all", '[5,"x2","Heartbeat",{}]', "[]",
           '{"a":1}', '[2,{},"Heartbeat",{}]', '[3,"no-such-call",{}]',
           '[2,"x3","DataTransfer",{"vendorId":"v","data":NaN}]',
           '[2,"x4","DataTransfer",{"vendorId":"v","data":1e400}]']


async def test_malformed_frames_get_1_6_answers_and_the_server_carries_on(central):
    await central.start()
    bystander, bystander_connection, bystander_task = await plain_client(central.url("GOOD"),
                                                                         "GOOD")
    async with connect(central.url("BAD"), subprotocols=["ocpp1.6"]) as raw:
        for frame, code in BAD_CALLS:
            await raw.send(frame)
            answer = json.loads(await asyncio.wait_for(raw.recv(), 5))
            assert answer[:3] == [4, json.loads(frame)[1], code], frame
            assert isinstance(answer[3], str) and isinstance(answer[4], dict)
        for number, frame in enumerate(IGNORED):
            await raw.send(frame)
            await raw.send(f'[2,"probe{number}","Heartbeat",{{}}]')
            answer = json.loads(await asyncio.wait_for(raw.recv(), 5))
            assert answer[:2] == [3, f"probe{number}"], frame
    assert (await bystander.call(call.Heartbeat())).current_time
    await bystander_connection.close()
    bystander_task.cancel()
    await central.stop()
    with central.bank() as bank:
        ignored = bank.get_recent_events(50, {"event_type": "OCPP_FRAME_IGNORED"})
        assert len(ignored) == len(IGNORED)
        errors = [e for e in bank.get_recent_events(200, {"event_type": "OCPP_MESSAGE"})
                  if e["data"]["message_type"] == "CALLERROR"]
        assert sorted(e["data"]["payload"]["errorCode"] for e in errors) == \
            sorted(code for _, code in BAD_CALLS)


@pytest.mark.parametrize("subprotocols", [["ocpp2.0.1"], None])
async def test_a_client_without_ocpp16_is_closed_after_the_handshake(central, subprotocols):
    await central.start()
    async with connect(central.url("WRONG"), subprotocols=subprotocols) as connection:
        assert connection.subprotocol is None
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 5)
    assert closed.value.rcvd.code == 1002


def test_scenario_steps():
    cycle = ["set_limit", "set_limit", "remote_start", "remote_stop"]
    assert [s.action for s in csms.scenario_steps("fluctuation", 2)] == cycle * 2
    assert [s.amps for s in csms.scenario_steps("fluctuation", 1)] == [0.0, 100.0, None, None]
    assert sum(s.wait_s for s in csms.scenario_steps("fluctuation", 1)) == 8
    assert list(csms.scenario_steps("normal", 2)) == [csms.Step("remote_start", 32.0, 16),
                                                      csms.Step("remote_stop", None, 0)]
    forever = list(csms.scenario_steps("normal", 0))
    assert forever == [csms.Step("remote_start", 32.0, None)]
    assert list(csms.scenario_steps("none", 3)) == []
    endless = csms.scenario_steps("fluctuation", 0)
    assert len([next(endless) for _ in range(40)]) == 40


def fluctuate(analyser: csms.CurrentAnalyser, start: int, end: int, **kwargs) -> None:
    """The seed's shape, one sample a second: 36 A for 2 s of every 8."""
    for t in range(start, end):
        analyser.update(float(t), 36.0 if t % 8 in (4, 5) else 0.0, **kwargs)


def written(writer: BankWriter) -> None:
    """Wait until the writer has stored everything queued so far."""
    done = threading.Event()
    writer.call(lambda bank: done.set())
    assert done.wait(10)


def test_an_episode_is_learned_when_it_ends_with_its_final_figures(db_path):
    writer = BankWriter(str(db_path), "csms")
    analyser = csms.CurrentAnalyser("CP_X", writer, detector.FluctuationDetector())
    fluctuate(analyser, 0, 64)
    analyser.update(64.0, 0.0)
    calm = [analyser.update(float(t), 0.0) for t in range(65, 90)]
    first = [d for d in calm if d is not None]
    assert [d.kind for d in first] == ["ended"] and first[0].swings > 3
    fluctuate(analyser, 90, 130)
    written(writer)
    with MemoryBank(db_path, readonly=True) as bank:
        (pattern,) = bank.get_patterns()
        second_started = bank.get_anomalies()[0]
    assert pattern["occurrences"] == 1 and pattern["parameters"]["swings"]["mean"] == \
        first[0].swings
    assert second_started["pattern"]["name"] == pattern["name"]  # recognised, not yet learned
    analyser.close()  # shutdown: the open episode ends and is learned
    writer.close()
    second_end = analyser.detections[-1]
    with MemoryBank(db_path, readonly=True) as bank:
        (pattern,) = bank.get_patterns()
        anomalies = bank.get_anomalies()
    assert pattern["occurrences"] == 2
    assert pattern["parameters"]["swings"]["n"] == 2
    assert pattern["parameters"]["swings"]["max"] == max(first[0].swings, second_end.swings)
    for anomaly, ended in zip(anomalies, (second_end, first[0])):
        assert anomaly["pattern"] == {"name": pattern["name"], **ended.pattern_parameters()}
        assert anomaly["description"] == ended.description
        assert anomaly["description"].startswith("current fluctuation ended")
        assert anomaly["deviation"] > 10  # from the episode, not the calm window it ended in


def test_current_analyser_records_an_anomaly_and_learns_the_pattern(db_path):
    writer = BankWriter(str(db_path), "csms")
    analyser = csms.CurrentAnalyser("CP_X", writer, detector.FluctuationDetector())
    steady = csms.CurrentAnalyser("CP_Y", writer, detector.FluctuationDetector())
    detections = []
    for t in range(60):
        amps = 36.0 if t % 8 in (4, 5) else 0.0
        detections.append(analyser.update(float(t), amps, transaction_id=7))
        steady.update(float(t), 32.0)
    analyser.close()
    writer.close()
    kinds = [d.kind for d in analyser.detections]
    assert kinds[0] == "started" and kinds[-1] == "ended" and steady.detections == []
    assert analyser.update(1.0, 0.0) is None  # out of order
    with MemoryBank(db_path, readonly=True) as bank:
        anomalies = bank.get_anomalies()
        assert [(a["anomaly_type"], a["charge_point_id"], a["transaction_id"]) for a in anomalies] \
            == [("CURRENT_FLUCTUATION", "CP_X", 7)]
        patterns = bank.get_patterns()
        assert len(patterns) == 1 and patterns[0]["occurrences"] == 1


def test_analyser_without_a_detector_only_counts():
    analyser = csms.CurrentAnalyser("CP", None, None)
    assert analyser.update(0.0, 1.0) is None and analyser.samples == 1
    assert analyser.close() is None


def test_port_in_use_is_one_line_and_exit_1(db_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = start(script("csms.py", "--port", str(port), "--db", str(db_path)))
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert f"csms.py: error: port {port} on 127.0.0.1 is in use" in out
    assert "Traceback" not in out


def test_sigterm_is_a_clean_exit_and_bad_arguments_exit_2(db_path):
    port = free_port()
    proc = start(script("csms.py", "--port", str(port), "--db", str(db_path)))
    wait_for(lambda: port_open(port) or proc.poll() is not None, message="csms listening")
    code, out = stop(proc)
    assert code == 0 and "Traceback" not in out
    with MemoryBank(db_path, readonly=True) as bank:
        assert bank.get_recent_events(5, {"event_type": "PROCESS_STOP"})
    proc = start(script("csms.py", "--scenario", "chaos"))
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "invalid choice" in out
