"""The charge point in process: a fake clock, a fake CAN link and a scripted central system, so
every branch runs without sockets or sleeps, and the same way on a loaded machine."""
from __future__ import annotations

import asyncio
import logging

import pytest
from cp_fakes import FakeCentral, FakeLink, FakeRecorder
from ocpp.exceptions import InternalError
from ocpp.v16 import call_result

from evsim.canbus import frames
from evsim.clock import FakeClock
from evsim.constants import security_event_level
from evsim.cp import metering, outbox
from evsim.cp.connection import online
from evsim.cp.station import Station
from evsim.cp.store import StateStore

CURRENT = frames.Frame(frames.MEASURED_CURRENT, "MeasuredCurrent", 16.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> StateStore:
    return StateStore(":memory:")


def station_on(store: StateStore, clock: FakeClock, link: FakeLink | None = None) -> Station:
    return Station("CP_T", store, clock, writer=FakeRecorder(), link=link or FakeLink())


class Running:
    """The station's connection and periodic tasks, cancelled at the end of a test."""

    def __init__(self, station: Station, central: FakeCentral | None = None,
                 watchdog: bool = True) -> None:
        self.tasks = [asyncio.create_task(metering.run_meter(station))]
        if watchdog:
            self.tasks.append(asyncio.create_task(metering.run_watchdog(station)))
        if central is not None:
            self.tasks.append(asyncio.create_task(online(station, central)))

    async def __aenter__(self) -> Running:
        return self

    async def __aexit__(self, *exc_info) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def charge(station: Station, clock: FakeClock, seconds: int, amps: float = 16.0) -> None:
    """The charger publishing ``amps`` once a second for ``seconds``."""
    for _ in range(seconds):
        station.on_can_frame(frames.Frame(frames.MEASURED_CURRENT, "MeasuredCurrent", amps))
        await clock.advance(1)


def transaction_ids(central: FakeCentral, action: str) -> list:
    return [request.transaction_id for request in central.of(action)]


async def test_boot_rejected_is_sent_again_after_the_interval(store, clock):
    station, central = station_on(store, clock), FakeCentral()
    central.answers["BootNotification"] = lambda request: call_result.BootNotification(
        current_time="2026-01-01T00:00:00Z", interval=30,
        status="Rejected" if len(central.of("BootNotification")) == 1 else "Accepted")
    async with Running(station, central, watchdog=False):
        await clock.advance(0)
        assert len(central.of("BootNotification")) == 1 and not station.booted
        await clock.advance(29)
        assert len(central.of("BootNotification")) == 1
        await clock.advance(1)
        assert station.booted and station.config["HeartbeatInterval"] == 30
        assert central.statuses() == ["Available"]
        await clock.advance(30)
        assert len(central.of("Heartbeat")) == 1


async def test_remote_start_charges_and_meter_values_name_the_transaction(store, clock):
    link = FakeLink()
    station, central = station_on(store, clock, link), FakeCentral()
    async with Running(station, central):
        await clock.advance(0)
        assert station.remote_start("TAG", 2, None) == "Rejected"
        assert station.remote_start("TAG", 1, None) == "Accepted"
        await clock.advance(0)
        assert station.remote_start("TAG", 1, None) == "Rejected"
        assert central.statuses() == ["Available", "Preparing", "Charging"]
        assert link.frames == [(frames.SET_LIMIT, 32.0), (frames.START, None)]
        start = central.of("StartTransaction")[0]
        assert (start.id_tag, start.connector_id, start.meter_start) == ("TAG", 1, 0)
        await charge(station, clock, 10)
        assert set(transaction_ids(central, "MeterValues")) == {100}
        assert station.remote_stop(99) == "Rejected"
        assert station.remote_stop(100) == "Accepted"
        await clock.advance(0)
    stop = central.of("StopTransaction")[0]
    assert (stop.transaction_id, stop.reason, stop.id_tag) == (100, "Remote", "TAG")
    assert stop.meter_stop == int(16 * 230 * 9 / 3600)  # 9 intervals of 1 s at 16 A
    assert central.statuses()[-2:] == ["Finishing", "Available"]
    assert link.frames == [(frames.SET_LIMIT, 32.0), (frames.START, None), (frames.STOP, None)]
    assert store.messages("CP_T") == [] and store.transactions("CP_T") == []


async def test_an_id_tag_not_accepted_stops_the_transaction_deauthorized(store, clock):
    station, central = station_on(store, clock), FakeCentral()
    central.answers["StartTransaction"] = lambda request: call_result.StartTransaction(
        transaction_id=7, id_tag_info={"status": "Invalid"})
    async with Running(station, central):
        await clock.advance(0)
        station.remote_start("BAD", None, None)
        await clock.advance(0)
    assert [(r.transaction_id, r.reason) for r in central.of("StopTransaction")] == \
        [(7, "DeAuthorized")]
    assert station.transaction is None and central.statuses()[-1] == "Available"


async def test_a_failing_transaction_message_is_retried_then_dropped(store, clock):
    station, central = station_on(store, clock), FakeCentral()
    attempts: list[float] = []

    def fail(request):
        attempts.append(clock.sim())
        raise InternalError(description="down for maintenance")
    central.answers["StopTransaction"] = fail
    async with Running(station, central, watchdog=False):
        await clock.advance(0)
        station.remote_start("TAG", 1, None)
        await clock.advance(0)
        station.local_stop()
        await clock.advance(0)
        start = attempts[0]
        await clock.advance(100)
    # TransactionMessageRetryInterval 10 x attempt, TransactionMessageAttempts 3
    assert [t - start for t in attempts] == [0, 10, 30]
    assert store.messages("CP_T") == [] and station.transactions == {}
    assert central.statuses()[-1] == "Available"


async def test_going_offline_keeps_only_transaction_messages(store, clock):
    station, central = station_on(store, clock), FakeCentral()
    station.connected = True
    station.report_status(always=True)
    station.remote_start("TAG", 1, None)
    await clock.advance(0)
    station.outbox.went_offline()
    assert [m.action for m in station.outbox.queue] == ["StartTransaction"]
    station.connected = False
    await charge(station, clock, 3)
    station.sample()
    assert [m.action for m in station.outbox.queue] == ["StartTransaction", "MeterValues"]
    async with Running(station, central):
        await clock.advance(0)
    assert transaction_ids(central, "MeterValues") == [100]  # given after it was queued


async def test_a_restart_delivers_what_was_queued_and_closes_the_open_transaction(tmp_path,
                                                                                   clock):
    path = tmp_path / "state.db"
    first = station_on(StateStore(path), clock)
    first.remote_start("TAG", 1, None)
    await clock.advance(0)
    await charge(first, clock, 5)
    first.sample()
    register = first.meter.energy_wh
    del first  # kill -9: nothing more happens

    station, central = station_on(StateStore(path), clock), FakeCentral()
    assert station.meter.energy_wh == register
    station.recover()
    assert [m.action for m in station.outbox.queue] == \
        ["StartTransaction", "MeterValues", "StopTransaction"]
    async with Running(station, central):
        await clock.advance(0)
    stop = central.of("StopTransaction")[0]
    assert (stop.transaction_id, stop.reason, stop.meter_stop) == (100, "PowerLoss", int(register))
    assert transaction_ids(central, "MeterValues")[0] == 100
    assert station.store.messages("CP_T") == [] and station.store.transactions("CP_T") == []
    assert station.transaction is None and central.statuses() == ["Available"]


async def test_configuration_and_register_survive_a_restart(tmp_path, clock):
    path = tmp_path / "state.db"
    first = station_on(StateStore(path), clock)
    assert first.change_configuration("MeterValueSampleInterval", "5") == "Accepted"
    assert first.change_configuration("HeartbeatInterval", "-1") == "Rejected"
    await charge(first, clock, 3)
    first.connected = True
    first.sample()
    again = station_on(StateStore(path), clock)
    assert again.config["MeterValueSampleInterval"] == 5
    assert again.meter.energy_wh == first.meter.energy_wh > 0


async def test_a_silent_charger_faults_the_connector_until_it_publishes_again(store, clock):
    station, central = station_on(store, clock), FakeCentral()
    async with Running(station, central):
        await clock.advance(0)
        station.remote_start("TAG", 1, None)
        await charge(station, clock, 2)
        await clock.advance(4)  # three 1 s periods and a little
        faulted = central.of("StatusNotification")[-1]
        assert (faulted.status, faulted.error_code) == ("Faulted", "OtherError")
        samples = len(central.of("MeterValues"))
        await clock.advance(5)
        assert len(central.of("MeterValues")) == samples  # nothing measured, nothing sent
        await charge(station, clock, 1)
    assert central.statuses()[-2:] == ["Faulted", "Charging"]


async def test_a_reopened_bus_gets_the_whole_desired_state(store, clock):
    link = FakeLink()
    station = station_on(store, clock, link)
    station.remote_start("TAG", 1, None)
    await clock.advance(0)
    link.frames.clear()
    station.on_bus_up()
    await clock.advance(0)
    assert link.frames == [(frames.SET_LIMIT, 32.0), (frames.START, None)]


async def test_no_limit_is_sent_while_the_bus_is_down_and_one_is_sent_once_it_is_up(store,
                                                                                     clock):
    link = FakeLink(up=False)
    station = station_on(store, clock, link)
    await station.watch_charger()
    assert link.frames == []
    link.up = True
    await station.watch_charger()
    await station.watch_charger()
    assert link.frames == [(frames.SET_LIMIT, 32.0)]


async def keeping_alive(station: Station, clock: FakeClock, seconds: float) -> None:
    task = asyncio.create_task(station.charger.keep_alive())
    await clock.advance(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def can_events(station: Station) -> list[str]:
    return [description for kind, description, _ in station.writer.events if kind == "CAN_FRAME"]


async def test_the_intent_is_repeated_every_cycle_and_only_its_changes_are_recorded(store,
                                                                                    clock):
    link = FakeLink()
    station = station_on(store, clock, link)
    station.remote_start("TAG", 1, None)
    await clock.advance(0)
    link.frames.clear()
    await keeping_alive(station, clock, 3.5)
    assert link.frames == [(frames.SET_LIMIT, 32.0), (frames.START, None)] * 4
    assert can_events(station) == ["cp->charger 0x210 SetCurrentLimit 32.0 A",
                                   "cp->charger 0x200 ChargerStart"]


async def test_a_stop_that_could_not_be_sent_goes_out_with_the_next_cycle(store, clock):
    link = FakeLink()
    station = station_on(store, clock, link)
    station.remote_start("TAG", 1, None)
    await clock.advance(0)
    link.up = False
    await station.stop_transaction("Remote")
    assert (frames.STOP, None) not in link.frames
    link.up = True
    await keeping_alive(station, clock, 0.5)
    assert link.frames[-2:] == [(frames.SET_LIMIT, 32.0), (frames.STOP, None)]
    assert can_events(station)[-1] == "cp->charger 0x201 ChargerStop"
    await keeping_alive(station, clock, 1.5)
    assert can_events(station).count("cp->charger 0x201 ChargerStop") == 1


class SlowLink(FakeLink):
    """A link whose send yields first, as CanLink's does (it sends from a thread)."""

    async def send(self, msg) -> bool:
        await asyncio.sleep(0)
        return await super().send(msg)


async def test_a_stop_that_overtakes_a_repeat_in_flight_is_what_is_recorded(store, clock):
    link = SlowLink()
    station = station_on(store, clock, link)
    station.remote_start("TAG", 1, None)
    await clock.advance(0)
    repeat = asyncio.create_task(station.charger.repeat())  # made while charging
    await asyncio.sleep(0)
    await station.stop_transaction("Remote")
    await repeat
    assert link.frames[-1] == (frames.STOP, None)
    assert can_events(station)[-1] == "cp->charger 0x201 ChargerStop"
    assert can_events(station).count("cp->charger 0x200 ChargerStart") == 1


async def test_a_stop_while_the_start_is_going_out_is_not_undone_by_it(store, clock):
    link = SlowLink()
    station = station_on(store, clock, link)
    station.remote_start("TAG", 1, None)
    await asyncio.sleep(0)  # the start is on its way: its limit frame yields
    assert station.transaction is not None and not station.charger.charging
    await station.stop_transaction("Local")
    await clock.advance(0)
    assert station.transaction is None and not station.charger.charging
    assert not station.connector.charging
    assert (frames.START, None) not in link.frames[link.frames.index((frames.STOP, None)):]


async def test_sample_interval_0_stops_sampled_meter_values(store, clock):
    station, central = station_on(store, clock), FakeCentral()
    async with Running(station, central):
        await clock.advance(0)
        station.change_configuration("MeterValueSampleInterval", "0")
        await charge(station, clock, 5)
        assert central.of("MeterValues") == []
        station.change_configuration("MeterValueSampleInterval", "2")
        await charge(station, clock, 6)
    assert 2 <= len(central.of("MeterValues")) <= 3


async def test_shutting_down_stops_the_transaction_and_delivers_it(store, clock):
    station, central = station_on(store, clock), FakeCentral()
    async with Running(station, central):
        await clock.advance(0)
        station.remote_start("TAG", 1, None)
        await clock.advance(0)
        await station.shut_down(timeout=5)
    assert [r.reason for r in central.of("StopTransaction")] == ["Other"]
    assert store.messages("CP_T") == []


def test_an_older_state_file_is_made_private_when_opened(tmp_path):
    """A cp_state.db made before it held the AuthorizationKey stayed 0644."""
    path = tmp_path / "cp_state.db"
    older = StateStore(path)  # open: its -wal and -shm files exist
    older.put("CP_T", configuration={"AuthorizationKey": "secret"})
    files = [path, tmp_path / "cp_state.db-wal", tmp_path / "cp_state.db-shm"]
    for name in files:
        name.chmod(0o644)
    StateStore(path).close()
    assert [oct(name.stat().st_mode & 0o777) for name in files] == ["0o600"] * 3
    older.close()


async def test_a_long_outage_keeps_the_newest_meter_values_and_every_start_and_stop(
        store, clock, monkeypatch, caplog):
    """Offline, a MeterValues was stored every sample without end."""
    monkeypatch.setattr(outbox, "MAX_KEPT", 5)
    station, central = station_on(store, clock), FakeCentral()
    await station.start_transaction("TAG")
    for _ in range(10):
        await charge(station, clock, 1)
        station.sample()
    await station.stop_transaction("Local")
    assert [(m.action, m.payload["meter_value"][0]["timestamp"][11:19]
             if m.action == "MeterValues" else None) for m in station.outbox.queue] == \
        [("StartTransaction", None), ("MeterValues", "00:00:08"), ("MeterValues", "00:00:09"),
         ("MeterValues", "00:00:10"), ("StopTransaction", None)]
    assert [m.action for m in store.messages("CP_T")] == [m.action for m in station.outbox.queue]
    assert station.outbox.dropped == 7
    assert len([r for r in caplog.records if "outbox full" in r.getMessage()]) == 1
    assert [e[0] for e in station.writer.events].count("OUTBOX_FULL") == 1
    async with Running(station, central, watchdog=False):
        await clock.advance(0)
    assert len(central.of("MeterValues")) == 3 and len(central.of("StopTransaction")) == 1
    assert [e[2] for e in station.writer.events if e[0] == "OUTBOX_DROPPED"] == \
        [{"dropped": 7, "limit": 5}]
    assert store.messages("CP_T") == [] and station.outbox.kept == 0


async def test_a_charger_back_after_silence_gets_its_orders_again(store, clock):
    """It may have restarted while it was silent, and a restarted charger knows nothing."""
    link = FakeLink()
    station = station_on(store, clock, link)
    async with Running(station):
        await charge(station, clock, 1)
        station.remote_start("TAG", 1, None)
        await charge(station, clock, 2)
        await clock.advance(4)  # silent for more than three periods
        link.frames.clear()
        await charge(station, clock, 1)
    assert link.frames[:2] == [(frames.SET_LIMIT, 32.0), (frames.START, None)]


def test_a_boot_is_not_a_warning_but_other_security_events_are(store, clock, caplog):
    station = station_on(store, clock)
    with caplog.at_level("INFO", logger="cp"):
        station.security_event("StartupOfTheDevice", "cp.py CP_T started")
        station.security_event("InvalidMessages", "a frame that is not JSON")
    levels = {record.getMessage().split(":")[0]: record.levelname for record in caplog.records
              if "security event" in record.getMessage()}
    assert levels == {"security event StartupOfTheDevice": "INFO",
                      "security event InvalidMessages": "WARNING"}
    assert [m.action for m in station.outbox.queue] == ["SecurityEventNotification"] * 2
    # the central system logs what it is told by the same rule
    assert [security_event_level(kind) for kind in
            ("StartupOfTheDevice", "ResetOrReboot", "InvalidMessages", None)] == \
        [logging.INFO, logging.INFO, logging.WARNING, logging.WARNING]
