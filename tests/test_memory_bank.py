"""MemoryBank on a real SQLite file: every API method, bad input, schema migration, and four
writer processes at once."""
from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import ROOT

from evsim.bank import (
    MemoryBank,
    MemoryBankError,
    count_where,
    default_db_path,
    export,
    format_timestamp,
    rows_where,
    schema,
    updates,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
STAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"


class Clock:
    """A settable clock for the bank's idea of now."""

    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bank(db_path: Path, clock: Clock):
    with MemoryBank(db_path, clock=clock) as bank:
        yield bank


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# -- timestamps and paths -----------------------------------------------------------------------

def test_timestamps_of_every_form_are_stored_in_one_fixed_utc_format(bank, clock):
    forms = {
        "aware non-UTC datetime": datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        "naive datetime (UTC)": datetime(2024, 5, 1, 12, 0, 0, 1),
        "ISO string with Z": "2024-05-01T12:00:00.5Z",
        "ISO string with offset": "2024-05-01T13:00:01+01:00",
        "epoch seconds": T0.timestamp() + 2.25,
        "None (the clock)": None,
    }
    clock.now = at(1)
    for name, stamp in forms.items():
        bank.log_event("TEST", "test", name, timestamp=stamp)
    stored = {e["description"]: e["timestamp"] for e in bank.get_recent_events(None)}
    assert stored == {
        "aware non-UTC datetime": "2024-05-01T12:00:00.000000Z",
        "naive datetime (UTC)": "2024-05-01T12:00:00.000001Z",
        "ISO string with Z": "2024-05-01T12:00:00.500000Z",
        "ISO string with offset": "2024-05-01T12:00:01.000000Z",
        "epoch seconds": "2024-05-01T12:00:02.250000Z",
        "None (the clock)": "2024-05-01T12:01:00.000000Z",
    }
    moments = [T0 + timedelta(microseconds=m) for m in (999_999, 1, 10**6, 59 * 10**6, 10)]
    texts = [format_timestamp(m) for m in moments]
    assert sorted(texts) == [format_timestamp(m) for m in sorted(moments)]


def test_default_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("EV_SIM_DB", raising=False)
    assert default_db_path() == Path("ev_charging_memory.db")
    monkeypatch.setenv("EV_SIM_DB", str(tmp_path / "elsewhere.db"))
    assert default_db_path() == tmp_path / "elsewhere.db"
    with MemoryBank() as bank:
        bank.log_event("TEST", "test", "here")
    assert (tmp_path / "elsewhere.db").is_file()


# -- events -------------------------------------------------------------------------------------

def fill_events(bank: MemoryBank) -> None:
    rows = [("OCPP_MESSAGE", "csms", "cp->csms CALL BootNotification", {"action": "Boot"}, "CP1",
             0),
            ("OCPP_MESSAGE", "cp", "cp->csms CALL Heartbeat", {"action": "Heartbeat"}, "CP2", 1),
            ("CAN_FRAME", "cp", "set limit 16 A", {"id": "0x210", "amps": 16.0}, "CP1", 2),
            ("PROCESS_START", "csms", "100% ready_now", None, None, 3),
            ("CAN_FRAME", "charger", "measured 15.9 A", {"id": "0x300", "amps": 15.9}, "CP1", 4)]
    for event_type, source, description, data, cp, minute in rows:
        bank.log_event(event_type, source, description, data, cp, timestamp=at(minute))


def descriptions(events: list[dict]) -> list[str]:
    return [e["description"] for e in events]


def test_log_event_returns_the_row_and_reads_back_newest_first(bank):
    fill_events(bank)
    events = bank.get_recent_events()
    assert descriptions(events) == ["measured 15.9 A", "100% ready_now", "set limit 16 A",
                                    "cp->csms CALL Heartbeat", "cp->csms CALL BootNotification"]
    assert events[0]["data"] == {"id": "0x300", "amps": 15.9}
    assert events[1]["data"] is None and events[1]["charge_point_id"] is None
    assert all(e["timestamp"] for e in events)
    assert descriptions(bank.get_recent_events(2)) == ["measured 15.9 A", "100% ready_now"]
    assert bank.get_recent_events(0) == []


@pytest.mark.parametrize("filters, expected", [
    ({"event_type": "CAN_FRAME"}, ["measured 15.9 A", "set limit 16 A"]),
    ({"source": "cp"}, ["set limit 16 A", "cp->csms CALL Heartbeat"]),
    ({"charge_point_id": "CP1", "event_type": "OCPP_MESSAGE"}, ["cp->csms CALL BootNotification"]),
    ({"since": at(3)}, ["measured 15.9 A", "100% ready_now"]),
    ({"since": "2024-05-01T12:02:00Z", "until": at(3)}, ["100% ready_now", "set limit 16 A"]),
    ({"since": timedelta(minutes=1)}, ["measured 15.9 A", "100% ready_now"]),  # clock at T0+4
    ({"search": "HEARTBEAT"}, ["cp->csms CALL Heartbeat"]),
    ({"search": "0x210"}, ["set limit 16 A"]),           # found in the JSON data
    ({"search": "100%"}, ["100% ready_now"]),            # % and _ are text, not wildcards
    ({"search": "y_n"}, ["100% ready_now"]),
    ({"search": "%"}, ["100% ready_now"]),
    ({"search": "_"}, ["100% ready_now"]),
    ({"source": "csms' OR '1'='1"}, []),
    ({"event_type": None, "source": None}, ["measured 15.9 A", "100% ready_now", "set limit 16 A",
                                            "cp->csms CALL Heartbeat",
                                            "cp->csms CALL BootNotification"]),
])
def test_event_filters(bank, clock, filters, expected):
    fill_events(bank)
    clock.now = at(4)
    assert descriptions(bank.get_recent_events(50, filters)) == expected


def test_sql_metacharacters_are_stored_and_matched_as_data(bank):
    nasty = "x'); DROP TABLE events; --"
    bank.log_event(nasty, nasty, nasty, {"q": nasty}, nasty)
    bank.log_event("TEST", "plain", "other")
    found = bank.get_recent_events(10, {"event_type": nasty, "source": nasty,
                                        "charge_point_id": nasty, "search": "DROP TABLE"})
    assert len(found) == 1 and found[0]["data"] == {"q": nasty}
    assert len(bank.get_recent_events(10)) == 2


def test_unknown_event_filter_is_a_value_error(bank):
    with pytest.raises(ValueError, match="unknown event filter.*colour"):
        bank.get_recent_events(5, {"colour": "red"})


def test_log_events_stores_a_batch_in_one_transaction(bank):
    batch = [{"event_type": "CAN_FRAME", "source": "charger", "description": f"frame {i}",
              "data": {"i": i}, "charge_point_id": "CP1", "timestamp": at(i)} for i in range(500)]
    assert bank.log_events(batch) == 500
    assert bank.log_events([]) == 0
    events = bank.get_recent_events(None)
    assert [e["data"]["i"] for e in events] == list(range(499, -1, -1))

    bad_batch = batch[:10] + [{"event_type": "X", "source": "y", "description": "z",
                               "data": {1, 2}}]
    with pytest.raises(ValueError, match=r"event 10: data is not JSON"):
        bank.log_events(bad_batch)
    with pytest.raises(ValueError, match=r"event 0: .*colour"):
        bank.log_events([{"event_type": "X", "source": "y", "description": "z", "colour": 1}])
    assert len(bank.get_recent_events(None)) == 500, "a failed batch stores nothing"


def test_a_batch_is_written_many_rows_to_a_statement_whatever_its_size():
    from evsim.bank.bank import _chunks
    assert [len(chunk) for chunk in _chunks(list(range(203)), 64)] == [64, 64, 64, 8, 2, 1]
    assert [x for chunk in _chunks(list(range(203)), 64) for x in chunk] == list(range(203))
    assert list(_chunks([], 64)) == []


def test_a_batch_statement_binds_what_any_sqlite_allows(tmp_path):
    """SQLite before 3.32 binds at most 999 parameters a statement."""
    from evsim.bank.bank import ROWS_PER_INSERT
    assert ROWS_PER_INSERT * max(len(schema.TABLES[t].columns) for t in ("events", "metrics")) <= 999
    with MemoryBank(tmp_path / "old.db") as bank:
        bank._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        assert bank.log_events({"event_type": "T", "source": "s", "description": str(i),
                                "timestamp": at(i)} for i in range(1000)) == 1000


def test_record_metrics_keeps_every_row_and_its_order(bank):
    batch = [{"name": "current", "value": i / 10, "unit": "A", "source": "cp",
              "charge_point_id": f"CP{i % 3}", "transaction_id": i, "timestamp": at(i)}
             for i in range(203)]
    assert bank.record_metrics(batch) == 203
    stored = bank.connection.read(lambda conn: conn.execute(
        "SELECT value, charge_point_id, transaction_id FROM metrics ORDER BY id").fetchall())
    assert stored == [(i / 10, f"CP{i % 3}", i) for i in range(203)]


@pytest.mark.parametrize("call, message", [
    (lambda b: b.log_event("T", "s", "d", data={1, 2}), "data is not JSON-serialisable"),
    (lambda b: b.log_event("T", "s", "d", data={"x": math.nan}), "data is not JSON"),
    (lambda b: b.log_event("T", "s", "d", data="{not json"), "data is a string but not JSON"),
    (lambda b: b.log_event("", "s", "d"), "event_type must be a non-empty string"),
    (lambda b: b.log_event("T", None, "d"), "source must be a non-empty string"),
    (lambda b: b.log_event("T", "s", "d", timestamp="yesterday"), "not an ISO-8601 time"),
    (lambda b: b.log_event("T", "s", "d", timestamp=[1]), "timestamp must be"),
    (lambda b: b.record_anomaly("X", "SEVERE", "d"), "unknown severity 'SEVERE'.*LOW, MEDIUM"),
    (lambda b: b.record_anomaly("X", None, "d"), "unknown severity None"),
    (lambda b: b.record_anomaly("X", "LOW", "d", current_value="lots"), "current_value must be"),
    (lambda b: b.record_anomaly("X", "LOW", "d", pattern=object()), "pattern is not JSON"),
    (lambda b: b.record_metric("current", "n/a", "A", "cp"), "metric value must be a number"),
    (lambda b: b.record_metric("current", math.inf, "A", "cp"), "finite"),
    (lambda b: b.record_metric("current", None, "A", "cp"), "has no value"),
    (lambda b: b.learn_pattern("p", {"x": {1}}), "parameters is not JSON"),
    (lambda b: b.record_metric("current", 1, "A", "cp", transaction_id={}), "transaction_id"),
    (lambda b: b.start_session("CP1", 1.5), "transaction_id must be an integer"),
    (lambda b: b.clean_old_data(-1), "days must be 0 or more"),
    (lambda b: b.get_recent_events(-1), "limit must be"),
    (lambda b: b.get_recent_events(2**63), "limit must be a whole number from 0 to 9223372"),
    (lambda b: b.get_anomalies(limit=10**20), "limit must be"),
    (lambda b: b.get_recent_events(filters={"since": timedelta(days=10**6)}), "out of range"),
    (lambda b: b.clean_old_data(10**6), "out of range"),
    (lambda b: b.clean_old_data(10**12), "days must be at most 999999999"),
    (lambda b: b.get_anomalies(severity="BAD"), "unknown severity"),
])
def test_bad_input_is_a_value_error_that_says_what_was_wrong(bank, call, message):
    with pytest.raises(ValueError, match=message):
        call(bank)
    assert bank.get_recent_events(None) == [] and bank.get_anomalies() == []


def test_data_may_be_any_json_value_or_json_text(bank):
    bank.log_event("T", "s", "list", data=[1, "two", None])
    bank.log_event("T", "s", "text", data='{"already": "json"}')
    bank.log_event("T", "s", "unicode", data={"name": "Zoë ⚡"})
    data = {e["description"]: e["data"] for e in bank.get_recent_events()}
    assert data == {"list": [1, "two", None], "text": {"already": "json"},
                    "unicode": {"name": "Zoë ⚡"}}


# -- anomalies ----------------------------------------------------------------------------------

def test_anomalies_record_filter_and_update(bank, clock):
    first = bank.record_anomaly("CURRENT_FLUCTUATION", "high", "jump 16 -> 30 A", 30.0, 16.0,
                                87.5, {"rule": "delta", "window": 5}, "CP1", 7, timestamp=at(0))
    bank.record_anomaly("CURRENT_FLUCTUATION", "LOW", "wobble", 16.5, 16.0, charge_point_id="CP2",
                        timestamp=at(1))
    bank.record_anomaly("METER_STUCK", "CRITICAL", "meter frozen", charge_point_id="CP1",
                        timestamp=at(2))
    rows = bank.get_anomalies()
    assert [a["description"] for a in rows] == ["meter frozen", "wobble", "jump 16 -> 30 A"]
    assert rows[2] == {"id": first, "timestamp": "2024-05-01T12:00:00.000000Z",
                       "anomaly_type": "CURRENT_FLUCTUATION", "severity": "HIGH",
                       "description": "jump 16 -> 30 A", "current_value": 30.0,
                       "expected_value": 16.0, "deviation": 87.5,
                       "pattern": {"rule": "delta", "window": 5}, "charge_point_id": "CP1",
                       "transaction_id": 7, "end_time": None}
    assert [a["description"] for a in bank.get_anomalies(severity="low")] == ["wobble"]
    assert len(bank.get_anomalies(anomaly_type="CURRENT_FLUCTUATION")) == 2
    assert [a["description"] for a in bank.get_anomalies(charge_point_id="CP1", since=at(1))] \
        == ["meter frozen"]
    assert len(bank.get_anomalies(limit=1)) == 1
    assert [a["description"] for a in bank.get_anomalies(since=at(0.5), until=at(1.5))] \
        == ["wobble"]
    assert bank.count_anomalies() == 3 and bank.count_anomalies(severity="high") == 1
    assert bank.count_anomalies(charge_point_id="CP1", since=at(1)) == 1
    assert bank.count_anomalies(anomaly_type="CURRENT_FLUCTUATION", until=at(0.5)) == 1

    bank.update_anomaly(first, severity="CRITICAL", current_value=32.0, description="grew",
                        pattern={"rule": "delta", "window": 9})
    updated = next(a for a in bank.get_anomalies() if a["id"] == first)
    assert (updated["severity"], updated["current_value"], updated["description"],
            updated["pattern"]) == ("CRITICAL", 32.0, "grew", {"rule": "delta", "window": 9})
    assert updated["expected_value"] == 16.0, "fields not given keep their value"
    with pytest.raises(ValueError, match="no anomaly with id 999"):
        bank.update_anomaly(999, severity="LOW")
    with pytest.raises(TypeError, match="unknown anomaly field.*colour"):
        bank.update_anomaly(first, colour="red")
    with pytest.raises(ValueError, match="unknown severity"):
        bank.update_anomaly(first, severity="HUGE")
    assert first in [a["id"] for a in bank.get_anomalies(severity="CRITICAL")]


# -- metrics and sessions -----------------------------------------------------------------------

def test_metrics_read_back_oldest_first_and_statistics_on_known_data(bank, clock):
    values = [2, 4, 4, 4, 5, 5, 7, 9]   # mean 5, population standard deviation 2
    bank.record_metrics([{"name": "current", "value": v, "unit": "A", "source": "charger",
                          "charge_point_id": "CP1", "transaction_id": 1, "timestamp": at(i)}
                         for i, v in enumerate(values)])
    bank.record_metric("current", 100.0, "A", "charger", "CP2", 2, timestamp=at(1.5))
    bank.record_metric("voltage", 230.0, "V", "cp", "CP1", timestamp=at(3))

    samples = bank.get_metrics("current", charge_point_id="CP1")
    assert [s["value"] for s in samples] == values
    assert samples[0]["unit"] == "A" and samples[0]["transaction_id"] == 1
    assert [s["value"] for s in bank.get_metrics("current", charge_point_id="CP1", limit=3)] \
        == [5, 7, 9]
    assert [s["value"] for s in bank.get_metrics("current", since=at(1), until=at(2))] \
        == [4, 100, 4]
    assert [s["value"] for s in bank.get_metrics("current", transaction_id=2)] == [100]
    assert bank.get_metric_names() == ["current", "voltage"]
    assert bank.get_metric_sources() == ["charger", "cp"]
    assert [s["value"] for s in bank.get_metrics("current", source="charger",
                                                 charge_point_id="CP2")] == [100]
    assert bank.get_metrics("current", source="cp") == []
    assert bank.get_metric_statistics("current", source="cp")["count"] == 0
    assert bank.get_metric_statistics("voltage", source="cp")["count"] == 1

    stats = bank.get_metric_statistics("current", charge_point_id="CP1")
    assert stats["count"] == 8 and stats["min"] == 2 and stats["max"] == 9
    assert stats["avg"] == pytest.approx(5) and stats["stddev"] == pytest.approx(2)
    assert stats["latest"] == 9 and stats["unit"] == "A"
    assert stats["latest_timestamp"] == format_timestamp(at(7))
    assert bank.get_metric_statistics("current", since=at(6), charge_point_id="CP1")["avg"] \
        == pytest.approx(8)
    assert bank.get_metric_statistics("current")["count"] == 9
    single = bank.get_metric_statistics("voltage")
    assert (single["count"], single["stddev"], single["latest"]) == (1, 0.0, 230.0)
    assert bank.get_metric_statistics("power") == {
        "name": "power", "source": None, "count": 0, "min": None, "max": None, "avg": None, "stddev": None,
        "latest": None, "latest_timestamp": None, "unit": None}


def vm_steps(bank: MemoryBank, read) -> int:
    """SQLite virtual-machine steps (in hundreds) that ``read(bank)`` takes: a measure of work
    that, unlike time, is the same on every run."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0
    bank._conn.set_progress_handler(count, 100)
    try:
        read(bank)
    finally:
        bank._conn.set_progress_handler(None, 0)
    return steps


def test_metric_sources_read_the_unindexed_column_in_one_scan(bank):
    bank.record_metrics({"name": "current", "value": i, "unit": "A", "source": f"s{i % 8}"}
                        for i in range(4000))
    one_scan = vm_steps(bank, lambda b: b._conn.execute(
        "SELECT count(source) FROM metrics").fetchone())
    assert vm_steps(bank, MemoryBank.get_metric_sources) < 3 * one_scan
    assert bank.get_metric_sources() == [f"s{i}" for i in range(8)]


def test_session_statistics_come_from_the_transactions_current_metrics(bank, clock):
    bank.record_metric("current", 99.0, "A", "charger", "CP1", 5, timestamp=at(-1))  # before
    session_id = bank.start_session("CP1", 5, start_time=at(0), meter_start_wh=1000,
                                    id_tag="TAG-1")
    for minute, amps in enumerate([10.0, 16.0, 22.0], start=1):
        bank.record_metric("current", amps, "A", "charger", "CP1", 5, timestamp=at(minute))
    bank.record_metric("current", 50.0, "A", "charger", "CP2", 5, timestamp=at(2))  # other CP
    bank.record_metric("voltage", 230.0, "V", "charger", "CP1", 5, timestamp=at(2))
    open_session = bank.get_sessions()[0]
    assert open_session["id"] == session_id and open_session["end_time"] is None

    bank.end_session("CP1", 5, end_time=at(4), meter_stop_wh=1750, stop_reason="EVDisconnected")
    session = bank.get_sessions()[0]
    assert session == {
        "id": session_id, "charge_point_id": "CP1", "transaction_id": 5, "id_tag": "TAG-1",
        "start_time": format_timestamp(at(0)), "end_time": format_timestamp(at(4)),
        "meter_start_wh": 1000.0, "meter_stop_wh": 1750.0, "energy_wh": 750.0,
        "min_current": 10.0, "avg_current": 16.0, "max_current": 22.0, "sample_count": 3,
        "stop_reason": "EVDisconnected"}


def test_session_statistics_count_each_sample_once_from_one_source(bank):
    """The charge point and the central system both record every sample: the figures come
    from the central system's when it has any, else from the one source that has them."""
    def session(cp, tx, samples_by_source):
        bank.start_session(cp, tx, start_time=at(0))
        for source, values in samples_by_source.items():
            bank.record_metrics({"name": "current", "value": amps, "unit": "A", "source": source,
                                 "charge_point_id": cp, "transaction_id": tx,
                                 "timestamp": at(minute)}
                                for minute, amps in enumerate(values, start=1))
        bank.end_session(cp, tx, end_time=at(10))
        found = bank.get_sessions(charge_point_id=cp)[0]
        return (found["min_current"], found["avg_current"], found["max_current"],
                found["sample_count"])

    assert session("CP1", 1, {"cp": [10.0, 20.0, 30.0], "csms": [10.0, 20.0, 30.0]}) \
        == (10.0, 20.0, 30.0, 3)
    # the central system missed a sample the charge point kept: the central system's count
    assert session("CP2", 2, {"cp": [10.0, 20.0, 30.0, 40.0], "csms": [10.0, 20.0, 30.0]}) \
        == (10.0, 20.0, 30.0, 3)
    assert session("CP3", 3, {"cp": [8.0, 16.0]}) == (8.0, 12.0, 16.0, 2)
    assert session("CP4", 4, {"cp": [8.0, 16.0, 24.0], "charger": [1.0]}) == (8.0, 16.0, 24.0, 3)
    assert session("CP5", 5, {}) == (None, None, None, 0)


def test_a_session_closes_reading_its_own_samples_not_every_charge_points(bank):
    """With a fleet, the time index would read the samples of every charge point over the
    session (a fleet's shutdown closing 2,000 sessions took minutes): the transaction's own."""
    bank.start_session("CP1", 1, start_time=at(0))
    statements: list[str] = []
    bank._conn.set_trace_callback(statements.append)
    bank.end_session("CP1", 1, end_time=at(10))
    bank._conn.set_trace_callback(None)
    reads = [sql for sql in statements if "FROM metrics" in sql]
    assert len(reads) == 2
    for sql in reads:
        plan = bank.connection.read(lambda conn, sql=sql: conn.execute(
            f"EXPLAIN QUERY PLAN {sql}").fetchall())
        assert "metrics_transaction" in " ".join(row[-1] for row in plan), plan


def test_end_session_keeps_given_figures_and_handles_reuse_and_missing_start(bank):
    bank.start_session("CP1", 1, start_time=at(0))
    bank.end_session("CP1", 1, end_time=at(5), energy_wh=42.0, min_current=1.0,
                     avg_current=2.0, max_current=3.0, sample_count=4)
    # the same transaction id again later (a restarted central system): a new session
    bank.start_session("CP1", 1, start_time=at(10))
    bank.end_session("CP1", 1, end_time=at(11))
    bank.end_session("CP9", 3, end_time=at(12), energy_wh=5.0)  # never started
    sessions = bank.get_sessions()
    first, second = [s for s in sessions if s["charge_point_id"] == "CP1"][::-1]
    assert (first["energy_wh"], first["min_current"], first["avg_current"], first["max_current"],
            first["sample_count"]) == (42.0, 1.0, 2.0, 3.0, 4)
    assert second["start_time"] == format_timestamp(at(10))
    assert second["end_time"] == format_timestamp(at(11))
    assert second["sample_count"] == 0 and second["energy_wh"] is None
    orphan = next(s for s in sessions if s["charge_point_id"] == "CP9")
    assert orphan["start_time"] is None and orphan["energy_wh"] == 5.0
    assert [s["start_time"] for s in bank.get_sessions(charge_point_id="CP1", since=at(5))] \
        == [format_timestamp(at(10))]
    assert len(bank.get_sessions(limit=1)) == 1


def test_max_transaction_id_counts_integer_ids_only(bank):
    assert bank.max_transaction_id() is None
    bank.start_session("CP1", 7)
    bank.start_session("CP2", "42")  # stored as the integer 42 (the column is INTEGER)
    bank.start_session("CP3", "TX-999")  # another central system's text id
    bank.end_session("CP4", 3)
    assert bank.max_transaction_id() == 42


# -- patterns -----------------------------------------------------------------------------------

def test_learn_pattern_upserts_by_name(bank, clock):
    first_id = bank.learn_pattern("profile_CP1", {"mean": 16.0}, confidence=0.5)
    clock.now = at(30)
    bank.learn_pattern("profile_CP2", {"mean": 32.0})
    clock.now = at(60)
    assert bank.learn_pattern("profile_CP1", {"mean": 16.4, "std": 0.2}) == first_id
    pattern = bank.get_pattern("profile_CP1")
    assert pattern == {"id": first_id, "name": "profile_CP1",
                       "parameters": {"mean": 16.4, "std": 0.2}, "occurrences": 2,
                       "confidence": 0.5, "first_seen": format_timestamp(at(0)),
                       "last_seen": format_timestamp(at(60))}
    bank.learn_pattern("profile_CP1", {"mean": 16.5}, confidence=0.9)
    assert bank.get_pattern("profile_CP1")["confidence"] == 0.9
    assert bank.get_pattern("profile_CP1")["occurrences"] == 3
    assert bank.get_pattern("nothing") is None
    assert [p["name"] for p in bank.get_patterns()] == ["profile_CP1", "profile_CP2"]


# -- summary, export, cleaning ------------------------------------------------------------------

def test_dashboard_summary_counts_everything(bank):
    fill_events(bank)
    for severity in ("LOW", "LOW", "HIGH"):
        bank.record_anomaly("CURRENT_FLUCTUATION", severity, severity.lower(), timestamp=at(1))
    last = bank.record_anomaly("METER_STUCK", "CRITICAL", "last one", charge_point_id="CP2",
                               timestamp=at(2))
    bank.start_session("CP1", 1, meter_start_wh=0)
    bank.end_session("CP1", 1, meter_stop_wh=1500)
    bank.start_session("CP2", 2)
    bank.start_session("CP1", 3, meter_start_wh=10)
    bank.end_session("CP1", 3, meter_stop_wh=510)
    bank.record_metric("current", 16, "A", "cp")
    bank.learn_pattern("p", {})
    summary = bank.get_dashboard_summary()
    assert summary["last_anomaly"]["id"] == last
    del summary["last_anomaly"]
    assert summary == {
        "database": str(bank.path), "schema_version": schema.SCHEMA_VERSION,
        "total_events": 5, "first_event": format_timestamp(at(0)),
        "last_event": format_timestamp(at(4)),
        "event_types": {"CAN_FRAME": 2, "OCPP_MESSAGE": 2, "PROCESS_START": 1},
        "charge_points": ["CP1", "CP2"], "total_anomalies": 4,
        "anomalies_by_severity": {"LOW": 2, "MEDIUM": 0, "HIGH": 1, "CRITICAL": 1},
        "total_sessions": 3, "active_sessions": 1, "total_energy_wh": 2000.0,
        "total_metrics": 1, "total_patterns": 1}


def test_dashboard_summary_of_an_empty_bank(bank):
    summary = bank.get_dashboard_summary()
    assert summary["total_events"] == 0 and summary["last_anomaly"] is None
    assert summary["first_event"] is None and summary["charge_points"] == []
    assert summary["total_energy_wh"] == 0


def test_export_json_round_trip(bank, tmp_path):
    fill_events(bank)
    bank.record_anomaly("CURRENT_FLUCTUATION", "MEDIUM", "d", 1.5, 1.0, 50.0, {"k": [1, 2]},
                        "CP1", 3)
    bank.start_session("CP1", 3, meter_start_wh=0)
    bank.record_metric("current", 16.0, "A", "charger", "CP1", 3)
    bank.end_session("CP1", 3, meter_stop_wh=100)
    bank.learn_pattern("p", {"nested": {"a": [1, None, "x"]}}, 0.7)
    target = tmp_path / "out" / "export.json"
    target.parent.mkdir()

    counts = bank.export_json(target)
    assert counts == {"events": 5, "anomalies": 1, "sessions": 1, "metrics": 1, "patterns": 1,
                      "id_tags": 0, "labels": 0}
    exported = json.loads(target.read_text(encoding="utf-8"))
    assert exported["schema_version"] == schema.SCHEMA_VERSION
    assert exported["exported_at"] == format_timestamp(T0)
    assert exported["events"] == sorted(bank.get_recent_events(None), key=lambda r: r["id"])
    assert exported["anomalies"] == bank.get_anomalies()
    assert exported["sessions"] == bank.get_sessions()
    assert exported["metrics"] == bank.get_metrics("current")
    assert exported["patterns"] == bank.get_patterns()
    assert list(target.parent.iterdir()) == [target], "no partial file is left behind"


def test_export_refuses_the_database_and_the_files_beside_it(bank, db_path, tmp_path):
    fill_events(bank)
    before = {path: path.read_bytes() for path in tmp_path.iterdir()}
    (tmp_path / "link.db").symlink_to(db_path)
    os.link(db_path, tmp_path / "hard.db")
    (tmp_path / "sub").mkdir()
    targets = [db_path, f"{db_path}-wal", f"{db_path}-shm", f"{db_path}-journal",
               tmp_path / "sub" / ".." / db_path.name, tmp_path / "link.db",
               tmp_path / "hard.db"]
    for target in targets:
        with pytest.raises(ValueError, match="is the MemoryBank database .* export to another"):
            bank.export_json(target)
    assert {path: path.read_bytes() for path in before} == before
    assert not list(tmp_path.glob("*.partial")) and not Path(f"{db_path}-journal").exists()
    assert len(bank.get_recent_events(None)) == 5
    assert bank._conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    bank.check_export_path(tmp_path / "memory.db.json")   # a neighbour is fine


def test_export_of_an_empty_bank_is_valid_json(bank, tmp_path):
    counts = bank.export_json(tmp_path / "empty.json")
    exported = json.loads((tmp_path / "empty.json").read_text())
    assert counts == dict.fromkeys(schema.TABLES, 0)
    assert all(exported[table] == [] for table in schema.TABLES)


def test_clean_old_data_deletes_only_old_rows_in_chunks(bank, clock, monkeypatch):
    monkeypatch.setattr(updates, "DELETE_CHUNK", 3)   # several chunks per table
    old, recent = T0 - timedelta(days=10), T0 - timedelta(days=1)
    bank.log_events([{"event_type": "T", "source": "s", "description": f"old {i}",
                      "timestamp": old} for i in range(7)])
    bank.log_event("T", "s", "recent", timestamp=recent)
    bank.record_anomaly("X", "LOW", "old", timestamp=old)
    bank.record_anomaly("X", "LOW", "recent", timestamp=recent)
    bank.record_metrics([{"name": "current", "value": i, "unit": "A", "source": "s",
                          "timestamp": old} for i in range(4)])
    bank.start_session("CP1", 1, start_time=old)
    bank.end_session("CP1", 1, end_time=old + timedelta(hours=1))
    bank.start_session("CP1", 2, start_time=old)          # still open: kept
    bank.learn_pattern("p", {}, timestamp=old)            # learned knowledge: kept
    bank.record_label("CP1", "X", old, old + timedelta(hours=1), {}, 0, "cp")
    bank.record_label("CP1", "X", old, None, {}, 0, "cp")  # still open: kept
    bank.record_label("CP1", "X", old, recent, {}, 0, "cp")  # ended recently: kept

    deleted = bank.clean_old_data(days=7)
    assert deleted == {"events": 7, "anomalies": 1, "metrics": 4, "sessions": 1, "labels": 1}
    assert [label["end"] for label in bank.get_labels()] == [format_timestamp(recent), None]
    assert descriptions(bank.get_recent_events(None)) == ["recent"]
    assert [a["description"] for a in bank.get_anomalies()] == ["recent"]
    assert bank.get_metrics("current") == []
    assert [s["transaction_id"] for s in bank.get_sessions()] == [2]
    assert bank.get_pattern("p") is not None
    assert bank.clean_old_data(days=7) == {"events": 0, "anomalies": 0, "metrics": 0,
                                           "sessions": 0, "labels": 0}
    assert bank.clean_old_data(days=0)["events"] == 1


# -- opening, read-only, schema -----------------------------------------------------------------

def test_readonly_open_of_a_missing_file_fails_and_creates_nothing(tmp_path):
    missing = tmp_path / "missing.db"
    with pytest.raises(MemoryBankError, match=f"no MemoryBank database at {missing}"):
        MemoryBank(missing, readonly=True)
    assert list(tmp_path.iterdir()) == []


def test_readonly_open_of_an_existing_database_never_writes_to_it(db_path):
    """What is true: the database is not written to; SQLite may leave an empty -wal and the
    -shm beside it (a WAL reader needs them; only a writer removes them when it closes)."""
    with MemoryBank(db_path) as writer:
        writer.log_event("T", "s", "written")
    assert sorted(p.name for p in db_path.parent.iterdir()) == [db_path.name]
    content, modified = db_path.read_bytes(), db_path.stat().st_mtime_ns
    with MemoryBank(db_path, readonly=True) as reader:
        assert descriptions(reader.get_recent_events()) == ["written"]
        reader.get_dashboard_summary()
    assert (db_path.read_bytes(), db_path.stat().st_mtime_ns) == (content, modified)
    beside = {p.name: p.stat().st_size for p in db_path.parent.iterdir() if p != db_path}
    assert set(beside) <= {f"{db_path.name}-wal", f"{db_path.name}-shm"}
    assert beside.get(f"{db_path.name}-wal", 0) == 0
    with MemoryBank(db_path):   # the next writer to close tidies them away
        pass
    assert sorted(p.name for p in db_path.parent.iterdir()) == [db_path.name]


def test_a_file_that_is_not_sqlite_gives_one_clear_error(tmp_path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("these are my notes, not a database\n" * 50)
    for readonly in (True, False):
        with pytest.raises(MemoryBankError) as caught:
            MemoryBank(bogus, readonly=readonly)
        assert str(caught.value) == f"{bogus} is not a SQLite database"
    assert bogus.read_text().startswith("these are my notes"), "the file is left untouched"


def test_unwritable_location_gives_one_clear_error(tmp_path):
    with pytest.raises(MemoryBankError, match="unable to open database file"):
        MemoryBank(tmp_path / "no" / "such" / "dir.db")


def test_readonly_bank_reads_and_refuses_writes(db_path):
    with MemoryBank(db_path) as writer:
        writer.log_event("T", "s", "written")
    with MemoryBank(db_path, readonly=True) as reader:
        assert descriptions(reader.get_recent_events()) == ["written"]
        with pytest.raises(MemoryBankError, match="read-only"):
            reader.log_event("T", "s", "nope")
        with MemoryBank(db_path) as writer:    # a writer and a reader at once
            writer.log_event("T", "s", "later")
        assert descriptions(reader.get_recent_events()) == ["later", "written"]


def test_a_sqlite_file_without_the_schema_is_refused_when_reading(tmp_path):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(MemoryBankError, match="not a MemoryBank database"):
        MemoryBank(other, readonly=True)


def test_schema_version_is_set_and_a_newer_one_is_refused(db_path):
    with MemoryBank(db_path) as bank:
        assert bank.schema_version == schema.SCHEMA_VERSION == 4
        indexes = {row[0] for row in bank._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'")}
        mode = bank._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert {"events_timestamp", "events_type", "events_source", "events_charge_point",
            "anomalies_severity", "metrics_name", "labels_start", "labels_type",
            "labels_charge_point"} <= indexes
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA user_version = 99")
    for readonly in (True, False):
        with pytest.raises(MemoryBankError, match="schema version 99, newer than"):
            MemoryBank(db_path, readonly=readonly)


def test_a_later_schema_version_migrates_an_existing_database(db_path, monkeypatch):
    with MemoryBank(db_path) as bank:
        bank.log_event("T", "s", "kept across the migration")
    later = schema.SCHEMA_VERSION + 1
    monkeypatch.setattr(schema, "SCHEMA_VERSION", later)
    monkeypatch.setitem(schema.MIGRATIONS, later, (
        "ALTER TABLE events ADD COLUMN severity TEXT",
        "CREATE INDEX events_severity ON events (severity)"))
    with pytest.raises(MemoryBankError, match=f"schema version {later - 1}, older than {later}"):
        MemoryBank(db_path, readonly=True)
    with MemoryBank(db_path) as bank:
        assert bank.schema_version == later
        assert descriptions(bank.get_recent_events()) == ["kept across the migration"]
        assert bank.get_recent_events()[0]["severity"] is None
    with MemoryBank(db_path) as bank:     # opening again runs nothing twice
        assert bank.schema_version == later


def make_version_1(path: Path) -> None:
    """A database as the first release wrote it: schema version 1, one event."""
    with sqlite3.connect(path) as conn:
        for statement in schema.MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute("INSERT INTO events (timestamp, event_type, source, description) "
                     "VALUES ('2026-01-01T00:00:00.000000Z', 'T', 's', 'from version 1')")
        conn.execute("PRAGMA user_version = 1")
    conn.close()


def test_a_version_1_database_migrates_to_the_id_tags_table(db_path):
    make_version_1(db_path)
    with pytest.raises(MemoryBankError, match=f"schema version 1, older than {schema.SCHEMA_VERSION}"):
        MemoryBank(db_path, readonly=True)
    with MemoryBank(db_path) as bank:
        assert bank.schema_version == schema.SCHEMA_VERSION
        assert descriptions(bank.get_recent_events()) == ["from version 1"]
        assert bank.get_id_tags() == []
        bank.put_id_tag("TAG1", "Blocked", parent_id_tag="GROUP")
    with MemoryBank(db_path, readonly=True) as bank:
        assert bank.get_id_tag("TAG1")["status"] == "Blocked"


def make_version_2(path: Path) -> None:
    """A database as the release before the labels wrote it: schema version 2, one event and
    one id tag."""
    with sqlite3.connect(path) as conn:
        for version in (1, 2):
            for statement in schema.MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute("INSERT INTO events (timestamp, event_type, source, description) "
                     "VALUES ('2026-01-01T00:00:00.000000Z', 'T', 's', 'from version 2')")
        conn.execute("INSERT INTO id_tags (id_tag, status, updated) "
                     "VALUES ('TAG2', 'Accepted', '2026-01-01T00:00:00.000000Z')")
        conn.execute("PRAGMA user_version = 2")
    conn.close()


def test_a_version_2_database_migrates_to_the_labels_table(db_path):
    make_version_2(db_path)
    with pytest.raises(MemoryBankError, match=f"schema version 2, older than {schema.SCHEMA_VERSION}"):
        MemoryBank(db_path, readonly=True)
    with MemoryBank(db_path) as bank:
        assert bank.schema_version == schema.SCHEMA_VERSION
        assert descriptions(bank.get_recent_events()) == ["from version 2"]
        assert bank.get_id_tag("TAG2")["status"] == "Accepted"
        assert bank.get_labels() == []
        bank.record_label("CP1", "METER_FREEZE", at(0), at(1), {"kind": "meter-freeze"}, 7, "cp")
    with MemoryBank(db_path, readonly=True) as bank:
        assert [label["seed"] for label in bank.get_labels()] == [7]
        assert bank.get_recent_events()[0]["description"] == "from version 2"


def test_a_version_3_database_migrates_to_episode_ends(db_path):
    with sqlite3.connect(db_path) as conn:
        for version in (1, 2, 3):
            for statement in schema.MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute("INSERT INTO anomalies (timestamp, anomaly_type, severity, description) "
                     "VALUES ('2026-01-01T00:00:00.000000Z', 'METER_FREEZE', 'LOW', 'v3')")
        conn.execute("PRAGMA user_version = 3")
    conn.close()
    with MemoryBank(db_path) as bank:
        [old] = bank.get_anomalies()
        assert (old["description"], old["end_time"]) == ("v3", None)
        bank.update_anomaly(old["id"], end_time=at(5))
    with MemoryBank(db_path, readonly=True) as bank:
        assert bank.get_anomalies()[0]["end_time"] == format_timestamp(at(5))


def test_record_label_takes_exactly_what_the_fault_labels_hand_it(bank, db_path):
    """The keyword arguments of Label.record(), through bank_recorder and a real BankWriter,
    as the injecting processes call it."""
    from evsim.bank.writer import BankWriter
    from evsim.faults.labels import Label, bank_recorder

    label = Label("CP1", "OVER_CURRENT", 30.0, 150.0, at(0), at(2),
                  {"kind": "over-current", "after": 30.0, "for": None, "factor": 1.25,
                   "speed": 10.0}, 3, "charger")
    writer = BankWriter(str(db_path), "charger")
    try:
        bank_recorder(writer, logging.getLogger("test"))(label)
    finally:
        assert writer.close() == 0
    assert bank.get_labels() == [{
        "id": 1, "charge_point_id": "CP1", "anomaly_type": "OVER_CURRENT",
        "start": format_timestamp(at(0)), "end": format_timestamp(at(2)),
        "parameters": {"kind": "over-current", "after": 30.0, "for": None, "factor": 1.25,
                       "speed": 10.0},
        "seed": 3, "source": "charger"}]
    assert bank.record_label(**{**label.record(), "seed": None, "end": None}) == 2
    assert bank.get_labels(limit=1)[0]["end"] is None, "an open label has no end"


def test_get_labels_filters_by_type_charge_point_source_and_start(bank):
    for minute, (cp, kind, source) in enumerate([("CP1", "A", "cp"), ("CP2", "A", "charger"),
                                                 ("CP1", "B", "cp"), ("CP1", "A", "csms")]):
        bank.record_label(cp, kind, at(minute), at(minute + 0.5), {"m": minute}, None, source)

    def minutes(**filters) -> list[int]:
        return [label["parameters"]["m"] for label in bank.get_labels(**filters)]
    assert minutes() == [3, 2, 1, 0], "newest first"
    assert minutes(anomaly_type="A") == [3, 1, 0]
    assert minutes(charge_point_id="CP1", anomaly_type="A") == [3, 0]
    assert minutes(source="charger") == [1]
    assert minutes(since=at(1), until=at(2)) == [2, 1]
    assert minutes(limit=2) == [3, 2]
    assert count_where(bank.connection, "labels", equal={"anomaly_type": "A"}) == 3


@pytest.mark.parametrize("fields, message", [
    ({"charge_point_id": ""}, "charge_point_id must be a non-empty string"),
    ({"anomaly_type": None}, "anomaly_type must be a non-empty string"),
    ({"end": at(-1)}, "label end .* is before its start"),
    ({"start": "soon"}, "not an ISO-8601 time"),
    ({"seed": True}, "seed must be a whole number"),
    ({"seed": 1.5}, "seed must be a whole number"),
    ({"parameters": {"x": math.inf}}, "parameters is not JSON-serialisable"),
    ({"source": ""}, "source must be a non-empty string"),
])
def test_a_bad_label_is_a_value_error_and_stores_nothing(bank, fields, message):
    good = {"charge_point_id": "CP1", "anomaly_type": "A", "start": at(0), "end": at(1),
            "parameters": {}, "seed": 0, "source": "cp"}
    with pytest.raises(ValueError, match=message):
        bank.record_label(**{**good, **fields})
    assert bank.get_labels() == []


def test_labels_are_exported_to_json_csv_and_a_dataframe(bank, tmp_path):
    pandas = pytest.importorskip("pandas")
    bank.record_label("CP1", "METER_GAP", at(1), at(2), {"kind": "meter-gap", "speed": 1.0},
                      5, "cp")
    bank.record_label("CP2", "METER_GAP", at(3), None, {"kind": "meter-gap"}, None, "cp")
    assert bank.export_json(tmp_path / "all.json")["labels"] == 2
    exported = json.loads((tmp_path / "all.json").read_text())["labels"]
    assert [label["parameters"]["kind"] for label in exported] == ["meter-gap"] * 2
    assert bank.export_csv(tmp_path / "labels.csv", "labels", charge_point_id="CP1") == 1
    frame = bank.to_dataframe("labels")
    assert list(frame.columns) == ["id", *schema.TABLES["labels"].columns]
    assert str(frame["start"].dt.tz) == str(frame["end"].dt.tz) == "UTC"
    assert frame["start"].iloc[0] == pandas.Timestamp(at(1))
    assert pandas.isna(frame["end"].iloc[1])
    assert frame["parameters"].iloc[0] == {"kind": "meter-gap", "speed": 1.0}
    assert list(bank.to_dataframe("labels", charge_point_id="CP2")["id"]) == [2]


def test_export_dataset_writes_one_csv_per_table_and_refuses_a_full_directory(bank, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(export, "pyarrow_module", lambda: None)   # as here: no pyarrow
    fill_events(bank)
    bank.record_metric("current", 16.0, "A", "cp", "CP1", 1, timestamp=at(1))
    bank.record_anomaly("METER_GAP", "LOW", "gap", charge_point_id="CP1", timestamp=at(2))
    bank.record_label("CP1", "METER_GAP", at(1), at(2), {"kind": "meter-gap"}, 1, "cp")
    target = tmp_path / "new" / "dataset"
    assert bank.export_dataset(target) == {
        "rows": {"metrics": 1, "events": 5, "labels": 1, "anomalies": 1}, "formats": ["csv"]}
    assert sorted(p.name for p in target.iterdir()) == [
        "anomalies.csv", "events.csv", "labels.csv", "metrics.csv"]
    for table in export.DATASET_TABLES:
        with open(target / f"{table}.csv", newline="", encoding="utf-8") as handle:
            assert next(csv.reader(handle)) == ["id", *schema.TABLES[table].columns]
    with pytest.raises(ValueError, match="is not empty"):
        bank.export_dataset(target)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        bank.export_dataset(tmp_path / "file")
    with pytest.raises(ValueError, match="no limit nor search"):
        bank.export_dataset(tmp_path / "other", limit=3)
    with pytest.raises(ValueError, match="unknown filter"):
        bank.export_dataset(tmp_path / "other", colour="red")
    assert not (tmp_path / "other").exists(), "a refused export makes no directory"
    empty = tmp_path / "empty"
    empty.mkdir()
    counts = bank.export_dataset(empty, charge_point_id="CP2", since=at(0))["rows"]
    assert counts == {"metrics": 0, "events": 1, "labels": 0, "anomalies": 0}


def test_export_dataset_writes_parquet_when_pyarrow_is_installed(bank, tmp_path):
    pytest.importorskip("pyarrow")
    pandas = pytest.importorskip("pandas")
    bank.record_metric("current", 16.0, "A", "cp", "CP1", 1, timestamp=at(1))
    bank.record_label("CP1", "METER_GAP", at(1), None, {"kind": "meter-gap"}, None, "cp")
    result = bank.export_dataset(tmp_path / "ds")
    assert result["formats"] == ["csv", "parquet"]
    labels = pandas.read_parquet(tmp_path / "ds" / "labels.parquet")
    assert labels["start"].iloc[0] == pandas.Timestamp(at(1)) and pandas.isna(labels["end"][0])
    assert json.loads(labels["parameters"].iloc[0]) == {"kind": "meter-gap"}
    assert len(pandas.read_parquet(tmp_path / "ds" / "events.parquet")) == 0
    assert pandas.read_parquet(tmp_path / "ds" / "metrics.parquet")["value"].tolist() == [16.0]


def test_no_detector_reads_the_ground_truth():
    """The central system, the charge point and the detectors never read the labels table."""
    for folder in ("evsim/csms", "evsim/cp", "evsim/detection"):
        for source in (ROOT / folder).rglob("*.py"):
            text = source.read_text(encoding="utf-8")
            assert "get_labels" not in text and "FROM labels" not in text, source


def test_id_tags_are_created_changed_replaced_and_removed(bank):
    bank.put_id_tag("B", expiry_date="2026-02-01T00:00:00+01:00")
    bank.put_id_tag("A", "Blocked", parent_id_tag="G")
    assert [(t["id_tag"], t["status"], t["expiry_date"], t["parent_id_tag"])
            for t in bank.get_id_tags()] == [("A", "Blocked", None, "G"),
                                             ("B", "Accepted", "2026-01-31T23:00:00.000000Z", None)]
    bank.put_id_tag("A", "Accepted")
    assert bank.get_id_tag("A")["status"] == "Accepted" and bank.get_id_tag("A")["parent_id_tag"] \
        is None
    assert bank.get_id_tag("nobody") is None
    for bad in ({"id_tag": "C", "status": "ConcurrentTx"}, {"id_tag": "", "status": "Accepted"},
                {"id_tag": "C", "expiry_date": "soon"}):
        with pytest.raises(ValueError):
            bank.replace_id_tags([{"id_tag": "D"}, bad])
    assert [t["id_tag"] for t in bank.get_id_tags()] == ["A", "B"], "a bad list changes nothing"
    assert bank.replace_id_tags([{"id_tag": "X", "status": "Expired"}, {"id_tag": "Y"}]) == 2
    assert [t["id_tag"] for t in bank.get_id_tags()] == ["X", "Y"]
    assert bank.delete_id_tag("X") and not bank.delete_id_tag("x")
    bank.put_id_tag("y", "Blocked")  # a tag has no letter case (OCPP's CiString)
    assert [(t["id_tag"], t["status"]) for t in bank.get_id_tags()] == [("y", "Blocked")]
    assert bank.get_id_tag("Y")["id_tag"] == "y" and bank.delete_id_tag("Y")


def test_context_manager_closes_the_connection(db_path):
    with MemoryBank(db_path) as bank:
        bank.log_event("T", "s", "d")
    with pytest.raises(MemoryBankError, match="closed"):
        bank.log_event("T", "s", "after close")
    bank.close()   # closing twice is harmless
    assert "memory.db" in repr(bank)


# -- rows_where, count_where and the streaming CSV export ----------------------------------------

def test_rows_where_filters_orders_limits_and_searches(bank, clock):
    fill_events(bank)
    clock.now = at(4)
    everything = descriptions(rows_where(bank.connection, "events"))
    assert everything == ["measured 15.9 A", "100% ready_now", "set limit 16 A",
                          "cp->csms CALL Heartbeat", "cp->csms CALL BootNotification"]
    assert descriptions(rows_where(bank.connection, "events", order="oldest")) \
        == everything[::-1]
    assert descriptions(rows_where(bank.connection, "events", order="oldest", limit=2)) \
        == ["cp->csms CALL BootNotification", "cp->csms CALL Heartbeat"]
    assert descriptions(rows_where(bank.connection, schema.TABLES["events"],
                                   equal={"source": "cp", "charge_point_id": None})) \
        == ["set limit 16 A", "cp->csms CALL Heartbeat"]
    assert descriptions(rows_where(bank.connection, "events", since=timedelta(minutes=2),
                                   until=at(3), clock=clock)) == ["100% ready_now",
                                                                  "set limit 16 A"]
    assert descriptions(rows_where(bank.connection, "events", search="0X3")) \
        == ["measured 15.9 A"]
    assert list(rows_where(bank.connection, "events", limit=0)) == []
    first = next(rows_where(bank.connection, "events", equal={"id": 3}))
    assert first["data"] == {"id": "0x210", "amps": 16.0}
    raw = next(rows_where(bank.connection, "events", equal={"id": 3}, decode=False))
    assert raw["data"] == '{"id":"0x210","amps":16.0}'
    assert count_where(bank.connection, "events", equal={"event_type": "CAN_FRAME"}) == 2
    assert count_where(bank.connection, "events", search="csms") == 2
    with bank.connection.snapshot() as conn:      # inside a transaction of the caller's
        assert len(list(rows_where(conn, "events", since=at(2)))) == 3
        assert count_where(conn, "events", until=at(2)) == 3


@pytest.mark.parametrize("call, message", [
    (lambda c: rows_where(c, "nope"), "unknown table 'nope'"),
    (lambda c: rows_where(c, "events", order="random"), "order must be 'newest' or 'oldest'"),
    (lambda c: rows_where(c, "events", limit=-1), "limit must be"),
    (lambda c: rows_where(c, "events", equal={"colour": "red"}), "unknown column 'colour'"),
    (lambda c: rows_where(c, "metrics", search="x"), "metrics cannot be searched"),
    (lambda c: rows_where(c, "events", since="soon"), "not an ISO-8601 time"),
])
def test_rows_where_checks_its_arguments_before_it_reads(bank, call, message):
    with pytest.raises(ValueError, match=message):
        call(bank.connection)           # at the call, not at the first row


def test_rows_where_releases_the_connection_when_abandoned(bank):
    fill_events(bank)
    rows = rows_where(bank.connection, "events")
    next(rows)
    rows.close()
    assert bank.log_event("T", "s", "written after") > 0


def exports(directory: Path) -> list[str]:
    """The files in ``directory`` but the database's own."""
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("memory.db"))


def test_export_csv_round_trip(bank, tmp_path):
    fill_events(bank)
    bank.log_event("T", "s", 'quote " comma , newline \n Zoë ⚡', {"text": "a,b\n\"c\""}, "CP1",
                   timestamp=at(5))
    target = tmp_path / "events.csv"
    assert bank.export_csv(target) == 6
    with open(target, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    expected = list(rows_where(bank.connection, "events", order="oldest"))
    assert [int(row["id"]) for row in rows] == [row["id"] for row in expected]
    for row, stored in zip(rows, expected):
        assert row["description"] == stored["description"]
        assert row["timestamp"] == stored["timestamp"]
        assert row["charge_point_id"] == (stored["charge_point_id"] or "")
        assert (json.loads(row["data"]) if row["data"] else None) == stored["data"]
    assert list(rows[0]) == ["id", *schema.TABLES["events"].columns]

    assert bank.export_csv(target, source="cp", since=at(2)) == 1
    with open(target, newline="", encoding="utf-8") as handle:
        assert [row["description"] for row in csv.DictReader(handle)] == ["set limit 16 A"]
    bank.record_metric("current", 16.5, "A", "charger", "CP1", 7)
    assert bank.export_csv(tmp_path / "m.csv", "metrics", name="current") == 1
    with open(tmp_path / "m.csv", newline="") as handle:
        assert float(next(csv.DictReader(handle))["value"]) == 16.5
    assert exports(tmp_path) == ["events.csv", "m.csv"], "no partial file is left behind"


def test_export_csv_refuses_bad_targets_and_filters(bank, db_path, tmp_path):
    with pytest.raises(ValueError, match="is the MemoryBank database"):
        bank.export_csv(f"{db_path}-wal")
    with pytest.raises(ValueError, match="unknown filter.*colour"):
        bank.export_csv(tmp_path / "x.csv", colour="red")
    with pytest.raises(ValueError, match="takes no limit"):
        bank.export_csv(tmp_path / "x.csv", limit=5)
    with pytest.raises(ValueError, match="unknown table"):
        bank.export_csv(tmp_path / "x.csv", "nope")
    with pytest.raises(OSError):
        bank.export_csv(tmp_path / "missing" / "x.csv")
    assert exports(tmp_path) == []


def test_export_csv_streams_in_bounded_memory(bank, tmp_path):
    """200,000 events: loading them as dicts would take well over 100 MB of Python objects;
    the export must stay far below that (a bound on memory, not on time)."""
    rows = 200_000
    bank.connection.write(lambda conn: conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO events (timestamp, event_type, source, description, data, charge_point_id) "
        "SELECT strftime('%Y-%m-%dT%H:%M:%f000Z', 1714564800 + i / 10.0, 'unixepoch'), "
        "'CAN_FRAME', 'charger', 'measured current #' || i, "
        "json_object('id', '0x300', 'amps', 16.0, 'i', i), 'CP' || (i % 4) FROM n", (rows,)))
    target = tmp_path / "big.csv"
    tracemalloc.start()
    try:
        assert bank.export_csv(target, source="charger") == rows
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, f"peak {peak / 1e6:.1f} MB"
    with open(target, newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        assert sum(1 for _ in reader) == rows


def test_every_schema_version_has_its_migration_step():
    assert sorted(schema.MIGRATIONS) == list(range(1, schema.SCHEMA_VERSION + 1))


# -- pandas -------------------------------------------------------------------------------------

def test_to_dataframe_without_pandas_says_how_to_get_it(bank, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)    # as if it were not installed
    with pytest.raises(ImportError, match="needs pandas: pip install pandas"):
        bank.to_dataframe("events")


def test_to_dataframe(bank):
    pandas = pytest.importorskip("pandas")
    fill_events(bank)
    frame = bank.to_dataframe("events", source="cp")
    assert list(frame["description"]) == ["cp->csms CALL Heartbeat", "set limit 16 A"]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame["timestamp"].iloc[0] == pandas.Timestamp(at(1))
    assert len(bank.to_dataframe("events", limit=2, since=at(0))) == 2
    assert bank.to_dataframe("sessions").empty
    with pytest.raises(ValueError, match="unknown table"):
        bank.to_dataframe("nope")
    with pytest.raises(ValueError, match="unknown filter"):
        bank.to_dataframe("events", colour="red")


# -- concurrency --------------------------------------------------------------------------------

def test_a_write_waits_out_a_lock_longer_than_the_busy_timeout(db_path):
    with MemoryBank(db_path, busy_timeout=0.02) as bank:
        locker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        locker.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.3, lambda: locker.execute("COMMIT"))
        started = time.monotonic()
        release.start()
        try:
            event_id = bank.log_event("T", "s", "waited")
        finally:
            release.join()
            locker.close()
        assert time.monotonic() - started >= 0.25, "the write waited for the lock"
        assert [e["id"] for e in bank.get_recent_events()] == [event_id]


WRITER = """
import sys
from evsim.bank import MemoryBank
bank = MemoryBank(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[4])):
    bank.log_event("LOAD", sys.argv[3], "event", {"i": i}, "CP1")
bank.close()
print("done", flush=True)
"""


def test_four_writer_processes_lose_no_row(db_path):
    per_writer = 5000
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), str(db_path),
                                 f"writer{n}", str(per_writer)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for n in range(4)]
    try:
        for writer in writers:       # every one has opened the file (schema made once)
            assert writer.stdout.readline() == "ready\n", writer.communicate()[1]
        for writer in writers:
            writer.stdin.write("go\n")
            writer.stdin.flush()
        seen = []                    # a reader at the same time sees the count only grow
        with MemoryBank(db_path, readonly=True) as reader:
            while any(writer.poll() is None for writer in writers) and len(seen) < 1000:
                seen.append(reader.get_dashboard_summary()["total_events"])
        assert seen == sorted(seen) and len(set(seen)) > 1
        for writer in writers:
            out, err = writer.communicate(timeout=60)
            assert writer.returncode == 0 and out == "done\n", err
            assert "locked" not in err
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 4 * per_writer
        per_source = conn.execute(
            "SELECT source, count(DISTINCT json_extract(data, '$.i')) FROM events "
            "GROUP BY source").fetchall()
        assert per_source == [(f"writer{n}", per_writer) for n in range(4)]
        sources = [row[0] for row in conn.execute("SELECT source FROM events ORDER BY id")]
    switches = sum(a != b for a, b in itertools.pairwise(sources))
    assert switches > 4, "the writers really wrote at the same time"
