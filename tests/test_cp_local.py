"""A person at the charge point and the rules behind it, in process on a FakeClock with a
scripted central system (no sockets): cable, idTag, the EV's limit, faults; the authorization
decisions; the statuses they lead to; the meter data a transaction carries."""
from __future__ import annotations

import asyncio

import pytest
from cp_fakes import FakeCentral, FakeLink, FakeRecorder
from ocpp.v16 import call_result

from evsim.canbus import frames
from evsim.clock import FakeClock
from evsim.cp.connection import online
from evsim.cp.connector import Connector
from evsim.cp.local import Conflict
from evsim.cp.station import Station
from evsim.cp.store import StateStore
from evsim.ocpp16 import profiles


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def station(clock) -> Station:
    return Station("CP_L", StateStore(":memory:"), clock, writer=FakeRecorder(), link=FakeLink())


class Online:
    def __init__(self, station: Station, central: FakeCentral) -> None:
        self.task = asyncio.create_task(online(station, central))

    async def __aenter__(self) -> Online:
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def test_the_status_follows_from_the_connectors_facts():
    c = Connector()
    assert c.status == "Available"
    c.reserved = True
    assert c.status == "Reserved"
    c.plugged = True
    assert c.status == "Preparing"
    c.charging = True
    assert c.status == "Charging"
    c.suspended_ev = True
    assert c.status == "SuspendedEV"
    c.suspended_evse = True
    assert c.status == "SuspendedEVSE"
    c.inoperative = True
    assert c.status == "SuspendedEVSE"  # Unavailable waits for the transaction
    c.charging, c.finishing = False, True
    assert c.status == "Unavailable"
    c.inoperative = False
    assert c.status == "Finishing"
    c.fault = ("GroundFailure", None)
    assert (c.status, c.error) == ("Faulted", ("GroundFailure", None))


async def test_plug_in_present_a_tag_charge_and_unplug(station, clock):
    central = FakeCentral()
    async with Online(station, central):
        await clock.advance(0)
        with pytest.raises(Conflict):
            await station.local.unplug()
        await station.local.plug_in()
        with pytest.raises(Conflict):
            await station.local.plug_in()
        outcome = await station.local.present_id_tag("CARD")
        await clock.advance(0)
        assert outcome["outcome"] == "started"
        assert [r.id_tag for r in central.of("Authorize")] == ["CARD"]
        assert central.of("StartTransaction")[0].id_tag == "CARD"
        with pytest.raises(Conflict, match="another idTag"):
            await station.local.present_id_tag("OTHER")
        await station.local.unplug()
        await clock.advance(0)
    assert [r.reason for r in central.of("StopTransaction")] == ["EVDisconnected"]
    assert central.statuses() == ["Available", "Preparing", "Charging", "Finishing", "Available"]


async def test_a_tag_first_then_the_cable_within_the_connection_timeout(station, clock):
    central = FakeCentral()
    async with Online(station, central):
        await clock.advance(0)
        assert (await station.local.present_id_tag("CARD"))["outcome"] == "authorized"
        await clock.advance(59)
        await station.local.plug_in()
        await clock.advance(0)
        assert central.of("StartTransaction") and station.transaction is not None
        assert (await station.local.present_id_tag("CARD"))["outcome"] == "stopped"
        await clock.advance(0)
        await station.local.unplug()
        assert (await station.local.present_id_tag("CARD"))["outcome"] == "authorized"
        await clock.advance(61)  # ConnectionTimeOut 60 s
        assert station.connector.status == "Available" and station.local.pending_tag is None
    assert [r.reason for r in central.of("StopTransaction")] == ["Local"]
    assert central.statuses()[-2:] == ["Preparing", "Available"]


async def test_an_ev_side_disconnect_can_suspend_instead_of_stopping(station, clock):
    central = FakeCentral()
    station.change_configuration("StopTransactionOnEVSideDisconnect", "false")
    async with Online(station, central):
        await clock.advance(0)
        await station.local.plug_in()
        await station.local.present_id_tag("CARD")
        await station.local.unplug()
        assert station.connector.status == "SuspendedEV" and station.transaction is not None
        await station.local.plug_in()
        assert station.connector.status == "Charging"
        await station.local.set_ev_limit(0)
        assert station.connector.status == "SuspendedEV" and station.limit_in_force() == 0
        await station.local.set_ev_limit(10)
        assert station.charger.link.frames[-1] == (frames.SET_LIMIT, 10.0)
        with pytest.raises(ValueError):
            await station.local.set_ev_limit("lots")
        await station.smart.set_profile(1, profiles.build(1, 0, start=clock.now()))
        assert station.connector.status == "SuspendedEVSE"
        await clock.advance(0)
    assert central.statuses() == ["Available", "Preparing", "Charging", "SuspendedEV",
                                  "Charging", "SuspendedEV", "Charging", "SuspendedEVSE"]


async def test_a_fault_stops_the_transaction_and_clears(station, clock):
    central = FakeCentral()
    async with Online(station, central):
        await clock.advance(0)
        assert station.remote_start("TAG", 1, None) == "Accepted"
        await clock.advance(0)
        with pytest.raises(ValueError):
            await station.local.fault("NoError")
        await station.local.fault("GroundFailure", "earth leak")
        with pytest.raises(Conflict):
            await station.local.fault("OverVoltage")
        assert station.remote_start("TAG", 1, None) == "Rejected"
        await station.local.clear_fault()
        with pytest.raises(Conflict):
            await station.local.clear_fault()
        await clock.advance(0)
    faulted = [r for r in central.of("StatusNotification") if r.status == "Faulted"]
    assert [(r.error_code, r.info) for r in faulted] == [("GroundFailure", "earth leak")]
    assert [r.reason for r in central.of("StopTransaction")] == ["Other"]
    assert central.statuses()[-1] == "Available"


async def test_an_invalid_tag_suspends_when_stop_on_invalid_id_is_off(station, clock):
    central = FakeCentral()
    central.answers["StartTransaction"] = lambda request: call_result.StartTransaction(
        transaction_id=5, id_tag_info={"status": "Blocked"})
    station.change_configuration("StopTransactionOnInvalidId", "false")
    async with Online(station, central):
        await clock.advance(0)
        station.remote_start("TAG", 1, None)
        await clock.advance(0)
        assert station.connector.status == "SuspendedEVSE" and station.limit_in_force() == 0
        assert station.charger.link.frames[-1] == (frames.SET_LIMIT, 0.0)
    assert central.of("StopTransaction") == []
    assert station.auth.cache["TAG"]["status"] == "Blocked"


@pytest.mark.parametrize("settings, known, online, expected", [
    ({}, None, False, "Invalid"),
    ({"AllowOfflineTxForUnknownId": "true"}, None, False, "Accepted"),
    ({}, "Accepted", False, "Accepted"),
    ({"LocalAuthorizeOffline": "false"}, "Accepted", False, "Invalid"),
    ({}, "Blocked", False, "Blocked"),
    ({"LocalPreAuthorize": "true"}, "Accepted", True, "Accepted"),  # no Authorize sent
    ({}, "Accepted", True, "Invalid"),  # online, the central system decides
])
async def test_authorization_decisions(station, clock, settings, known, online, expected):
    for key, value in settings.items():
        assert station.change_configuration(key, value) == "Accepted"
    if known:
        station.auth.remember("TAG", {"status": known})
    central = FakeCentral()
    central.answers["Authorize"] = lambda r: call_result.Authorize(id_tag_info={"status":
                                                                                "Invalid"})
    station.connected = station.booted = online
    deliver = asyncio.create_task(station.outbox.deliver(central))
    try:
        info = await station.auth.authorize("TAG")
    finally:
        deliver.cancel()
    assert info["status"] == expected
    assert bool(central.of("Authorize")) == (online and not settings.get("LocalPreAuthorize"))


async def test_an_expired_entry_is_not_accepted(station, clock):
    station.auth.remember("TAG", {"status": "Accepted", "expiry_date": "2025-01-01T00:00:00Z"})
    assert (await station.auth.authorize("TAG"))["status"] == "Expired"


async def test_stop_txn_sampled_data_rides_on_the_stop_transaction(station, clock):
    central = FakeCentral()
    station.change_configuration("StopTxnSampledData", "Energy.Active.Import.Register")
    station.change_configuration("ClockAlignedDataInterval", "5")
    from evsim.cp import metering
    tasks = [asyncio.create_task(metering.run_meter(station)),
             asyncio.create_task(metering.run_aligned(station))]
    async with Online(station, central):
        await clock.advance(0)
        station.remote_start("TAG", 1, None)
        for _ in range(10):
            station.on_can_frame(frames.Frame(frames.MEASURED_CURRENT, "MeasuredCurrent", 16.0))
            await clock.advance(1)
        station.local_stop()
        await clock.advance(0)
    for task in tasks:
        task.cancel()
    stop = central.of("StopTransaction")[0]
    contexts = [value[0]["sampledValue"][0]["context"] for value in
                [[v] if isinstance(v, dict) else v for v in stop.transaction_data]]
    assert 9 <= len(stop.transaction_data) <= 11 and set(contexts) == {"Sample.Periodic"}
    clock_aligned = [m for m in central.of("MeterValues")
                     if m.meter_value[0]["sampledValue"][0]["context"] == "Sample.Clock"]
    assert len(clock_aligned) == 2
    assert [v["measurand"] for v in clock_aligned[0].meter_value[0]["sampledValue"]] == \
        ["Energy.Active.Import.Register"]
