"""Transactions that reach the central system twice, or never end: one session each, none left
open (a repeated StartTransaction, a start over an open one, a restart after a crash)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ocpp.v16 import call

from evsim.bank import MemoryBank
from evsim.timefmt import ocpp_time

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return ocpp_time(T0 + timedelta(seconds=seconds))




def start(meter: int = 100, seconds: float = 0, connector: int = 1):
    return call.StartTransaction(connector_id=connector, id_tag="TAG", meter_start=meter,
                                 timestamp=at(seconds))


def sessions(db_path) -> list[dict]:
    with MemoryBank(db_path, readonly=True) as bank:
        return sorted(bank.get_sessions(None), key=lambda s: s["id"])


async def test_a_repeated_start_gets_the_same_id_and_no_second_session(site, db_path):
    central = await site()
    cp = await central.connect("CP_1")
    first = await cp.call(start())
    again = await cp.call(start())  # the answer to the first was lost: the charge point retried
    assert again.transaction_id == first.transaction_id
    await cp.call(call.StopTransaction(meter_stop=200, timestamp=at(60),
                                       transaction_id=first.transaction_id, reason="Local"))
    again_stop = await cp.call(call.StopTransaction(meter_stop=200, timestamp=at(60),
                                                    transaction_id=first.transaction_id,
                                                    reason="Local"))
    assert again_stop.id_tag_info["status"] == "Accepted"
    await central.stop()
    assert [(s["transaction_id"], s["stop_reason"], s["energy_wh"])
            for s in sessions(db_path)] == [(first.transaction_id, "Local", 100)]


async def test_a_start_over_an_open_transaction_ends_it_first(site, db_path):
    central = await site()
    cp = await central.connect("CP_1")
    old = await cp.call(start(meter=100, seconds=0))
    new = await cp.call(start(meter=150, seconds=30))  # the charge point lost track of the old
    await central.stop()
    ended = {s["transaction_id"]: s for s in sessions(db_path)}
    assert new.transaction_id != old.transaction_id
    assert ended[old.transaction_id]["stop_reason"] == "ReplacedByNewTransaction"
    assert ended[old.transaction_id]["end_time"].startswith("2026-01-01T12:00:30")
    assert ended[new.transaction_id]["end_time"] is None


async def test_a_restart_ends_what_a_crash_left_open_and_knows_its_starts(site, db_path):
    central = await site()
    cp = await central.connect("CP_1")
    started = await cp.call(start())
    await central.stop()  # as if killed: the session stays open
    assert sessions(db_path)[0]["end_time"] is None

    central = await site()
    (left,) = sessions(db_path)
    assert left["stop_reason"] == "CentralSystemRestart" and left["end_time"]
    cp = await central.connect("CP_1")
    again = await cp.call(start())  # the start whose answer the crash lost
    assert again.transaction_id == started.transaction_id
    await cp.call(call.StopTransaction(meter_stop=180, timestamp=at(90),
                                       transaction_id=started.transaction_id, reason="Remote"))
    await central.stop()
    (session,) = sessions(db_path)
    assert (session["stop_reason"], session["energy_wh"]) == ("Remote", 80)
