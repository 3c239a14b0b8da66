"""cp.py --count N: many charge points in one process, each with its own charger in process."""
from __future__ import annotations

import asyncio
import subprocess

import pytest
from conftest import script
from cp_fakes import FakeCentral, FakeRecorder

from evsim.clock import FakeClock
from evsim.cp import fleet
from evsim.cp.connection import online
from evsim.cp.main import build_parser, charge_point_ids
from evsim.cp.station import Station
from evsim.cp.store import StateStore


def test_fleet_ids_are_numbered_from_one_and_sort_as_numbers():
    assert fleet.fleet_ids("CP_", 3) == ["CP_0001", "CP_0002", "CP_0003"]
    ids = fleet.fleet_ids("X-", 12_000)
    assert (ids[0], ids[-1]) == ("X-00001", "X-12000") and ids == sorted(ids)


def test_one_charge_point_is_the_default_and_a_fleet_takes_its_options():
    assert charge_point_ids(build_parser().parse_args([])) == ["CP_1"]
    args = build_parser().parse_args(["--count", "3", "--id-prefix", "F", "--can-id", "F0002"])
    assert charge_point_ids(args) == ["F0001", "F0002", "F0003"]
    assert charge_point_ids(build_parser().parse_args(["--count", "2"])) == ["CP_0001",
                                                                           "CP_0002"]


@pytest.mark.parametrize("args, error", [
    (["--count", "3", "--can-id", "CP_0009"], "--can-id CP_0009 is not in the fleet"),
    (["--count", "3", "--api-port", "0"], "--api-port serves one charge point"),
    (["--count", "0"], "--count: must be at least 1"),
    (["--stagger", "0", "--can-id", "X"], "--stagger, --can-id: only with --count above 1"),
])
def test_a_fleet_that_cannot_be_is_one_line_and_exit_2(args, error):
    done = subprocess.run(script("cp.py", *args), capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    last = output.strip().splitlines()[-1]
    assert done.returncode == 2 and last.startswith("cp.py: error:") and error in last
    assert "Traceback" not in output


async def test_a_charge_point_drives_its_own_charger_in_process():
    clock = FakeClock()
    station = Station("CP_0001", StateStore(":memory:"), clock, writer=FakeRecorder())
    charger = fleet.attach_charger(station, clock, period_s=1.0, ramp=1.0)
    central = FakeCentral()
    tasks = [asyncio.create_task(online(station, central))]
    tasks += [asyncio.create_task(coroutine) for coroutine, _ in
              fleet.station_tasks(station, charger)]
    try:
        await clock.advance(1)
        station.remote_start("TAG", 1, None)
        await clock.advance(5)
        assert charger.charger.charging and station.meter.amps == 32.0
        assert central.of("MeterValues")  # metered from the in-process 0x300 frames
        await station.stop_transaction("Remote")
        await clock.advance(2)
        assert not charger.charger.charging and station.meter.amps == 0.0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_boots_are_staggered_in_simulated_seconds():
    clock, started = FakeClock(speed=10), []
    stations = [Station(f"CP_{n}", StateStore(":memory:"), clock) for n in range(4)]
    boot = asyncio.create_task(fleet.boot_in_turn(
        stations, lambda station: started.append((station.id, clock.sim())), clock, 0.5))
    await clock.advance(2)
    await boot
    assert started == [("CP_0", 0.0), ("CP_1", 0.5), ("CP_2", 1.0),
                       ("CP_3", pytest.approx(1.5))]


def test_the_summary_counts_connections_and_statuses():
    clock = FakeClock()
    stations = [Station(f"CP_{n}", StateStore(":memory:"), clock) for n in range(3)]
    stations[0].connected = True
    stations[1].connector.plugged = True
    assert fleet.summary(stations) == "fleet: 1/3 connected; 2 Available, 1 Preparing"


async def test_a_charger_in_process_is_not_silent_before_its_charge_point_starts():
    clock = FakeClock()
    station = Station("CP_0009", StateStore(":memory:"), clock, writer=FakeRecorder())
    charger = fleet.attach_charger(station, clock, period_s=1.0)
    await clock.advance(20)  # the boots before it, staggered
    tasks = [asyncio.create_task(coroutine) for coroutine, _ in
             fleet.station_tasks(station, charger)]
    try:
        await clock.advance(3)
        assert not station.charger.silent and station.connector.status == "Available"
        assert station.meter.amps == 0.0  # metered from the first 0x300 frames
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_one_task_keeps_a_charge_point_and_its_charger_on_their_deadlines():
    clock = FakeClock()
    station = Station("CP_0001", StateStore(":memory:"), clock, writer=FakeRecorder())
    charger = fleet.attach_charger(station, clock, period_s=1.0, ramp=1.0)
    station.connected = True
    tasks = fleet.station_tasks(station, charger)
    running = [asyncio.create_task(coroutine) for coroutine, _ in tasks]
    try:
        await clock.advance(0.25)
        ticks = []
        for _ in range(6):
            await clock.advance(0.5)
            ticks.append((charger.ticks, sum(m.action == "MeterValues"
                                             for m in station.outbox.queue)))
        assert len(tasks) == 1 and clock.sleepers == 1
        # 0x300 at 1.5 s and 2.5 s; MeterValues at 2 s and 3 s (none at 1 s: nothing metered)
        assert ticks == [(0, 0), (0, 0), (1, 0), (1, 1), (2, 1), (2, 2)]
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def test_record_state_passes_on_what_changes_and_leaves_the_traffic_to_the_central_system():
    from evsim.cp.recording import StateRecorder, recorder, records_traffic
    kept = FakeRecorder()
    assert recorder(kept, "all") is kept
    state = recorder(kept, "state")
    assert isinstance(state, StateRecorder)
    state.event("OCPP_MESSAGE", "cp->csms CALL MeterValues", {"payload": {}}, "CP_0001")
    state.metric("current", 16.0, "A", "CP_0001", 7)
    state.event("STATUS", "connector 1 Charging", {"error_code": "NoError"}, "CP_0001")
    assert kept.events == [("STATUS", "connector 1 Charging", {"error_code": "NoError"})]
    assert kept.metrics == []
    assert (records_traffic(kept), records_traffic(state), records_traffic(None)) == \
        (True, False, False)
