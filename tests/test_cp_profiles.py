"""Reservation, Local Auth List Management, Smart Charging and Remote Trigger, message by
message, against a central system written with the ocpp library (cp_fakes.LibraryCentral) over
a real loopback WebSocket; the station's clock is a FakeClock."""
from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import wait_for_async as until
from cp_fakes import FakeLink, FakeRecorder, site
from ocpp.v16 import call

from evsim.canbus import frames
from evsim.clock import FakeClock
from evsim.cp.station import Station
from evsim.cp.store import StateStore
from evsim.ocpp16 import profiles
from evsim.timefmt import ocpp_time


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def new_station(path, clock) -> Station:
    return Station("CP_W", StateStore(path), clock, writer=FakeRecorder(), link=FakeLink())


def later(clock: FakeClock, seconds: float) -> str:
    return ocpp_time(clock.now() + timedelta(seconds=seconds))


async def test_reserve_now_holds_the_connector_for_its_id_tag_or_parent(tmp_path, clock):
    path = tmp_path / "state.db"
    async with site(new_station(path, clock)) as s:
        reserve = call.ReserveNow
        assert (await s.call(reserve(connector_id=2, expiry_date=later(clock, 60), id_tag="A",
                                     reservation_id=1))).status == "Rejected"
        assert (await s.call(reserve(connector_id=1, expiry_date=later(clock, -1), id_tag="A",
                                     reservation_id=1))).status == "Rejected"
        assert (await s.call(reserve(connector_id=1, expiry_date=later(clock, 600), id_tag="A",
                                     reservation_id=1, parent_id_tag="GROUP"))).status == \
            "Accepted"
        await until(lambda: s.central.statuses()[-1] == "Reserved", message="Reserved")
        assert (await s.call(reserve(connector_id=0, expiry_date=later(clock, 60), id_tag="B",
                                     reservation_id=2))).status == "Occupied"
        assert (await s.call(call.RemoteStartTransaction(id_tag="B"))).status == "Rejected"
        assert (await s.call(call.CancelReservation(reservation_id=9))).status == "Rejected"
        assert new_station(path, clock).reservations.current.id_tag == "A"  # kept
        # a child of GROUP may use it: the local list says so
        await s.call(call.SendLocalList(list_version=1, update_type="Full",
                                        local_authorization_list=[
                                            {"idTag": "CHILD", "idTagInfo": {
                                                "status": "Accepted", "parentIdTag": "GROUP"}}]))
        assert (await s.call(call.RemoteStartTransaction(id_tag="CHILD"))).status == "Accepted"
        await until(lambda: s.central.of("StartTransaction"), message="StartTransaction")
        assert s.central.of("StartTransaction")[0]["reservation_id"] == 1
        assert s.station.reservations.current is None
        assert (await s.call(reserve(connector_id=1, expiry_date=later(clock, 60), id_tag="A",
                                     reservation_id=3))).status == "Occupied"
        await s.call(call.RemoteStopTransaction(transaction_id=1))
        await until(lambda: s.central.statuses()[-1] == "Available", message="Available")
        # a reservation expires at its date, and a cancelled one frees the connector at once
        assert (await s.call(reserve(connector_id=1, expiry_date=later(clock, 30), id_tag="A",
                                     reservation_id=4))).status == "Accepted"
        await until(lambda: s.central.statuses()[-1] == "Reserved", message="Reserved again")
        await clock.advance(31)
        await until(lambda: s.central.statuses()[-1] == "Available", message="expired")
        assert (await s.call(reserve(connector_id=1, expiry_date=later(clock, 30), id_tag="A",
                                     reservation_id=5))).status == "Accepted"
        assert (await s.call(call.CancelReservation(reservation_id=5))).status == "Accepted"
        await until(lambda: s.central.statuses()[-2:] == ["Reserved", "Available"],
                    message="cancelled")
        await s.call(call.ChangeAvailability(connector_id=1, type="Inoperative"))
        assert (await s.call(reserve(connector_id=1, expiry_date=later(clock, 60), id_tag="A",
                                     reservation_id=6))).status == "Unavailable"


async def test_send_local_list_full_differential_versions_and_limits(tmp_path, clock):
    path = tmp_path / "state.db"
    send = call.SendLocalList
    entry = lambda tag, status="Accepted": {"idTag": tag, "idTagInfo": {"status": status}}
    async with site(new_station(path, clock)) as s:
        assert (await s.call(call.GetLocalListVersion())).list_version == 0
        assert (await s.call(send(list_version=3, update_type="Full", local_authorization_list=[
            entry("A"), entry("B", "Blocked")]))).status == "Accepted"
        assert (await s.call(call.GetLocalListVersion())).list_version == 3
        assert (await s.call(send(list_version=3, update_type="Differential",
                                  local_authorization_list=[entry("C")]))).status == \
            "VersionMismatch"
        assert (await s.call(send(list_version=4, update_type="Differential",
                                  local_authorization_list=[entry("C"), {"idTag": "A"}]))
                ).status == "Accepted"
        assert set(s.station.auth.local.entries) == {"B", "C"}
        too_many = [entry(f"T{i}") for i in range(101)]
        assert (await s.call(send(list_version=5, update_type="Full",
                                  local_authorization_list=too_many))).status == "Failed"
        assert (await s.call(call.GetLocalListVersion())).list_version == 4
    again = new_station(path, clock)
    assert again.auth.local.version == 4 and set(again.auth.local.entries) == {"B", "C"}


async def test_get_composite_schedule_and_the_can_limit_follow_the_stack(tmp_path, clock):
    async with site(new_station(tmp_path / "state.db", clock)) as s:
        start = clock.now()
        tx_default = profiles.build(1, 20, start=start)
        tx_default["chargingSchedule"]["chargingSchedulePeriod"].append(
            {"startPeriod": 600, "limit": 10})
        cap = profiles.build(2, 3680, purpose="ChargePointMaxProfile", unit="W", start=start)
        cap["chargingSchedule"]["duration"] = 900
        for connector, profile in ((1, tx_default), (0, cap)):
            result = await s.call(call.SetChargingProfile(connector_id=connector,
                                                          cs_charging_profiles=profile))
            assert result.status == "Accepted"
        assert s.station.charger.link.frames[-1] == (frames.SET_LIMIT, 16.0)
        result = await s.call(call.GetCompositeSchedule(connector_id=1, duration=1200))
        assert result.status == "Accepted" and result.schedule_start == ocpp_time(start)
        schedule = result.charging_schedule
        assert (schedule["charging_rate_unit"], schedule["duration"]) == ("A", 1200)
        assert [(p["start_period"], p["limit"]) for p in schedule["charging_schedule_period"]] \
            == [(0, 16.0), (600, 10.0)]
        result = await s.call(call.GetCompositeSchedule(connector_id=0, duration=1200,
                                                        charging_rate_unit="W"))
        assert [(p["start_period"], p["limit"]) for p in
                result.charging_schedule["charging_schedule_period"]] == [(0, 3680.0),
                                                                          (600, 2300.0)]
        assert (await s.call(call.GetCompositeSchedule(connector_id=4, duration=60))).status \
            == "Rejected"
        await clock.advance(600)
        await s.station.watch_charger()  # what the watchdog does twice a charger period
        await until(lambda: s.station.charger.link.frames[-1] == (frames.SET_LIMIT, 10.0),
                    message="the next period's limit on CAN")
        assert (await s.call(call.ClearChargingProfile(id=1))).status == "Accepted"
        assert s.station.charger.link.frames[-1] == (frames.SET_LIMIT, 16.0)  # still capped


async def test_trigger_message_sends_each_message_it_names(tmp_path, clock):
    station = new_station(tmp_path / "state.db", clock)
    station.on_can_frame(frames.Frame(frames.MEASURED_CURRENT, "MeasuredCurrent", 12.0))
    async with site(station) as s:
        trigger = call.TriggerMessage
        expected = {"BootNotification": "BootNotification", "Heartbeat": "Heartbeat",
                    "MeterValues": "MeterValues",
                    "DiagnosticsStatusNotification": "DiagnosticsStatusNotification",
                    "FirmwareStatusNotification": "FirmwareStatusNotification"}
        for requested, action in expected.items():
            before = len(s.central.of(action))
            assert (await s.call(trigger(requested_message=requested))).status == "Accepted"
            await until(lambda a=action, b=before: len(s.central.of(a)) > b, message=requested)
        meter = s.central.of("MeterValues")[-1]["meter_value"][0]["sampled_value"]
        assert {v["context"] for v in meter} == {"Trigger"}
        assert s.central.of("DiagnosticsStatusNotification")[-1]["status"] == "Idle"
        assert s.central.of("FirmwareStatusNotification")[-1]["status"] == "Idle"
        before = len(s.central.statuses(0)), len(s.central.statuses(1))
        assert (await s.call(trigger(requested_message="StatusNotification"))).status == \
            "Accepted"
        await until(lambda: (len(s.central.statuses(0)), len(s.central.statuses(1))) ==
                    (before[0] + 1, before[1] + 1), message="both connectors")
        assert (await s.call(trigger(requested_message="StatusNotification", connector_id=1))
                ).status == "Accepted"
        assert (await s.call(trigger(requested_message="MeterValues", connector_id=5))
                ).status == "Rejected"
        extended = call.ExtendedTriggerMessage
        assert (await s.call(extended(requested_message="LogStatusNotification"))).status == \
            "Accepted"
        await until(lambda: s.central.of("LogStatusNotification"), message="LogStatus")
        assert s.central.of("LogStatusNotification")[0]["status"] == "Idle"
