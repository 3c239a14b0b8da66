"""What makes a fleet cheap keeps a charge point's promises: a grouped state store commits once
a turn of the event loop but before any frame leaves, and one task drives many schedules on
their own deadlines."""
from __future__ import annotations

import asyncio
import sqlite3

import pytest
from cp_fakes import FakeRecorder

from evsim.clock import FakeClock, run_schedules
from evsim.cp.endpoint import CpEndpoint
from evsim.cp.station import Station
from evsim.cp.store import StateStore


def committed(path) -> dict:
    """The settings another process would read now."""
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT key, value FROM settings"))


async def test_the_changes_of_one_turn_are_committed_at_its_end(tmp_path):
    path = tmp_path / "state.db"
    store = StateStore(path, grouped=True)
    store.put("CP_1", energy_wh=1.0)
    store.put("CP_2", energy_wh=2.0)
    assert committed(path) == {} and store.settings("CP_2") == {"energy_wh": 2.0}
    await asyncio.sleep(0)
    assert committed(path) == {"energy_wh": "2.0"} and store.settings("CP_1")["energy_wh"] == 1
    store.close()


async def test_a_failed_change_is_undone_alone(tmp_path):
    store = StateStore(tmp_path / "state.db", grouped=True)
    store.put("CP_1", energy_wh=1.0)
    queued = store.queue("CP_1", "MeterValues", {"connector_id": 1}, 7, energy_wh=2.0)
    with pytest.raises(ZeroDivisionError), store.transaction() as conn:
        conn.execute("DELETE FROM outbox")
        raise ZeroDivisionError
    await asyncio.sleep(0)
    assert committed(tmp_path / "state.db") == {"energy_wh": "2.0"}
    assert [m.id for m in StateStore(tmp_path / "state.db").messages("CP_1")] == [queued]


async def test_what_waits_for_the_commit_runs_after_it(tmp_path):
    path, seen = tmp_path / "state.db", []
    store = StateStore(path, grouped=True)
    store.after_commit(lambda: seen.append("nothing pending: at once"))
    store.put("CP_1", energy_wh=1.0)
    store.after_commit(lambda: seen.append(committed(path)))
    assert seen == ["nothing pending: at once"]
    store.commit()
    assert seen == ["nothing pending: at once", {"energy_wh": "1.0"}]


def test_without_an_event_loop_each_change_commits_alone(tmp_path):
    path = tmp_path / "state.db"
    StateStore(path, grouped=True).put("CP_1", energy_wh=3.0)
    assert committed(path) == {"energy_wh": "3.0"}


class Wire:
    """A connection that notes what another process could read when a frame left."""

    def __init__(self, path) -> None:
        self.path = path
        self.seen: list[dict] = []

    async def send(self, message: str) -> None:
        self.seen.append(committed(self.path))


async def test_nothing_is_sent_before_the_register_it_carries_is_stored(tmp_path):
    path = tmp_path / "state.db"
    station = Station("CP_1", StateStore(path, grouped=True), FakeClock(), writer=FakeRecorder())
    wire = Wire(path)
    endpoint = CpEndpoint("CP_1", wire, station)
    station.store.put("CP_1", energy_wh=5.0)
    await endpoint._send('[3,"1",{}]')
    assert wire.seen == [{"energy_wh": "5.0"}]


async def test_work_due_at_once_wakes_one_task_once_in_the_order_given():
    clock, ran = FakeClock(), []

    async def every(name: str, period: float, start: float):
        due = start
        while True:
            due += period
            yield due
            ran.append((name, clock.sim()))

    task = asyncio.create_task(run_schedules([every("a", 1.0, 0.0), every("b", 0.5, 0.0)],
                                             clock))
    await clock.advance(2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert ran == [("b", 0.5), ("a", 1.0), ("b", 1.0), ("b", 1.5), ("a", 2.0), ("b", 2.0)]
    assert clock.sleepers <= 1


async def test_frames_sent_in_one_turn_wait_for_one_commit(tmp_path):
    path = tmp_path / "state.db"
    store = StateStore(path, grouped=True)
    stations = [Station(f"CP_{n}", store, FakeClock(), writer=FakeRecorder()) for n in range(3)]
    wires = [Wire(path) for _ in stations]
    endpoints = [CpEndpoint(station.id, wire, station) for station, wire in zip(stations, wires)]
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    for station in stations:
        store.put(station.id, energy_wh=1.0)
    await asyncio.gather(*(endpoint._send('[3,"1",{}]') for endpoint in endpoints))
    assert statements.count("COMMIT") == 1
    assert [wire.seen for wire in wires] == [[{"energy_wh": "1.0"}]] * 3
