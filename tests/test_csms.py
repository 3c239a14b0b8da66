"""csms.py end to end, on real WebSockets on loopback (free ports) and a real MemoryBank: a plain
ocpp-library charge point, raw WebSocket frames, a wrong subprotocol, and the command line.

The logic is tested in process in test_csms_units.py and test_csms_recording.py; these tests wait
for conditions with generous deadlines and assert no timings, for a loaded machine."""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import websockets
from conftest import ROOT, free_port, port_open, script, start, stop, wait_for, wait_for_async
from ocpp.v16 import call
from ocpp_helpers import PlainChargePoint, meter_value, now_iso
from websockets.asyncio.client import connect

from evsim import cli
from evsim.bank import MemoryBank
from evsim.bank.writer import BankWriter
from evsim.csms import main as csms
from evsim.csms.scenario import SCENARIOS
from evsim.ocpp16 import profiles as charging_profiles
from evsim.timefmt import ocpp_time


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
        self.port = await asyncio.wait_for(ready, 30)
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
        values[0]["timestamp"] = ocpp_time(sampled_at)
        await client.call(call.MeterValues(connector_id=1, transaction_id=started.transaction_id,
                                           meter_value=values))
    stopped_at = ocpp_time(sampled_at + timedelta(seconds=1))
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
        assert Counter(received) == Counter(
            ["BootNotification", "Heartbeat", "Authorize", "StatusNotification", "StartTransaction",
             "StartTransaction", "MeterValues", "MeterValues", "MeterValues", "StopTransaction",
             "DataTransfer"])
        sent = [e for e in messages if e["data"]["direction"] == "sent"]
        assert len(sent) == len(received)
        assert all(e["source"] == "csms" and e["charge_point_id"] == "PLAIN_1" for e in messages)
        assert {e["description"] for e in messages} >= {"cp->csms CALL BootNotification",
                                                        "csms->cp CALLRESULT BootNotification"}
        kinds = {e["event_type"] for e in bank.get_recent_events(500)}
        assert {"CONNECTED", "DISCONNECTED", "PROCESS_START", "PROCESS_STOP"} <= kinds


async def test_transaction_ids_go_on_after_a_restart_and_earlier_ones_still_close(central):
    with MemoryBank(central.db_path) as bank:
        bank.start_session("OTHER", 7)
        bank.start_session("OTHER", "TX-A")  # a text id, from another central system
    await central.start()
    client, connection, task = await plain_client(central.url("PLAIN_4"), "PLAIN_4")
    started = await client.call(call.StartTransaction(connector_id=1, id_tag="TAG", meter_start=0,
                                                      timestamp=now_iso()))
    assert started.transaction_id == 8
    await connection.close()
    task.cancel()
    await central.stop()

    await central.start()  # numbering goes on from the MemoryBank's highest id
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
    assert [(s["meter_stop_wh"], s["energy_wh"]) for s in ended] == [(6, 6)]


async def test_drives_one_fluctuation_cycle_on_a_plain_client(central):
    await central.start(scenario="fluctuation", cycles=1, speed=20.0)
    client, connection, task = await plain_client(central.url("PLAIN_2"), "PLAIN_2")
    await client.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
    await asyncio.wait_for(client.stopped.wait(), 60)

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
    described = await wait_for_async(lambda: len(steps()) == 5 and steps(), 30,
                                     message="scenario complete")
    assert described == ["SetChargingProfile limit 0 A -> Accepted",
                         "SetChargingProfile limit 100 A -> Accepted",
                         "RemoteStartTransaction -> Accepted",
                         f"RemoteStopTransaction {client.transaction_id} -> Accepted",
                         "scenario complete"]
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
            answer = json.loads(await asyncio.wait_for(raw.recv(), 30))
            assert answer[:3] == [4, json.loads(frame)[1], code], frame
            assert isinstance(answer[3], str) and isinstance(answer[4], dict)
        for number, frame in enumerate(IGNORED):
            await raw.send(frame)
            await raw.send(f'[2,"probe{number}","Heartbeat",{{}}]')
            answer = json.loads(await asyncio.wait_for(raw.recv(), 30))
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
            await asyncio.wait_for(connection.recv(), 30)
    assert closed.value.rcvd.code == 1002


def test_port_in_use_is_one_line_and_exit_1(db_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = start(script("csms.py", "--port", str(port), "--db", str(db_path)))
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"csms.py: error: port {port} on 127.0.0.1 is in use" in out
    assert "Traceback" not in out


def test_sigterm_is_a_clean_exit_and_bad_arguments_exit_2(db_path):
    port = free_port()
    proc = start(script("csms.py", "--port", str(port), "--db", str(db_path)))
    wait_for(lambda: port_open(port) or proc.poll() is not None, 60, message="csms listening")
    code, out = stop(proc, timeout=30)
    assert code == 0 and "Traceback" not in out
    with MemoryBank(db_path, readonly=True) as bank:
        assert bank.get_recent_events(5, {"event_type": "PROCESS_STOP"})
    proc = start(script("csms.py", "--scenario", "chaos"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "invalid choice" in out


def test_list_scenarios_prints_the_names_for_run_all(capsys):
    with pytest.raises(SystemExit) as done:
        csms.main(["--list-scenarios"])
    assert done.value.code == 0
    assert capsys.readouterr().out.splitlines() == list(SCENARIOS)


def test_run_all_rejects_an_unknown_scenario_in_one_line():
    result = subprocess.run([str(ROOT / "run_all.sh"), "--scenario", "chaos"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "run_all.sh: error: --scenario is one of " + ", ".join(SCENARIOS) +
        ", got 'chaos' (see ./run_all.sh --help)"]
