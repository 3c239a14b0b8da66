"""The central system's registry: transaction ids, connections, and state that stays bounded."""
from __future__ import annotations

from evsim.clock import FakeClock
from evsim.csms import registry as registry_module
from evsim.csms.analysis import ChargePointAnalysis
from evsim.csms.registry import (
    STOP_RECORD,
    STOP_REPEATED,
    STOP_UNKNOWN,
    RecentIds,
    Registry,
    Station,
)


def new_station(charge_point_id: str) -> Station:
    return Station(charge_point_id, ChargePointAnalysis(charge_point_id, None, FakeClock()))


def test_transactions_are_numbered_on_from_the_first_id_and_stopped_once():
    registry = Registry(new_station, first_transaction_id=41)
    one, two = registry.station("CP_1"), registry.station("CP_2")
    assert registry.start_transaction(one) == 41 and one.transaction_id == 41
    assert registry.start_transaction(two) == 42
    assert registry.stop_transaction(two, 41) == STOP_UNKNOWN  # issued to another charge point
    assert registry.stop_transaction(one, 41) == STOP_RECORD and one.transaction_id is None
    assert registry.stop_transaction(one, 41) == STOP_REPEATED
    assert registry.stop_transaction(one, 99) == STOP_UNKNOWN
    assert registry.stop_transaction(one, 40) == STOP_RECORD  # issued before the restart
    assert registry.stop_transaction(one, 0) == STOP_UNKNOWN


def test_meter_values_adopt_a_transaction_from_before_a_restart_but_not_a_finished_one():
    registry = Registry(new_station, first_transaction_id=10)
    station = registry.station("CP_1")
    registry.adopt_transaction(station, 5)
    assert station.transaction_id == 5
    assert registry.stop_transaction(station, 5) == STOP_RECORD
    registry.adopt_transaction(station, 5)
    assert station.transaction_id is None


def test_state_stays_bounded_however_long_it_runs():
    registry = Registry(new_station, first_transaction_id=1, max_stations=3)
    station = registry.station("CP_1")
    for _ in range(1000):
        transaction_id = registry.start_transaction(station)
        assert registry.stop_transaction(station, transaction_id) == STOP_RECORD
    assert len(station.finished) == registry_module.FINISHED_KEPT
    for _ in range(1000):  # started and never stopped
        registry.start_transaction(station)
    assert len(station.open) == registry_module.OPEN_KEPT
    assert not hasattr(station.analyser, "detections")

    for number in range(2, 10):  # charge points seen once and gone
        other = registry.station(f"CP_{number}")
        registry.connect(other, object())
        registry.disconnect(other, other.link)
    assert len(registry) == 3


def test_the_station_dropped_is_the_one_idle_longest_and_never_a_connected_one():
    registry = Registry(new_station, max_stations=2)
    connected, idle = registry.station("ON"), registry.station("OFF")
    registry.connect(connected, "link")
    registry.station("NEW")
    assert [s.id for s in registry] == ["ON", "NEW"] and idle.id not in {s.id for s in registry}


def test_recent_ids_keep_the_last_ones_added():
    recent = RecentIds(3)
    for member in (1, 2, 3, 2, 4):
        recent.add(member)
    assert [m in recent for m in (1, 2, 3, 4)] == [False, True, True, True]
    recent.discard(3)
    recent.add(5)
    assert len(recent) == 3 and 2 in recent


def test_a_replaced_connection_does_not_disconnect_its_successor():
    registry = Registry(new_station)
    station = registry.station("CP_1")
    assert registry.connect(station, "old") is None
    assert registry.connect(station, "new") == "old"
    assert registry.disconnect(station, "old") is False and station.link == "new"
    assert registry.disconnect(station, "new") is True and station.link is None
