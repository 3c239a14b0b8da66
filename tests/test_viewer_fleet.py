"""memory_viewer.py --fleet: one row per charge point, read with GROUP BYs along the indexes."""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ROOT, script

from evsim.bank import MemoryBank, aggregates
from evsim.bank.bank import METRICS_AFTER_SQL
from evsim.viewer.format import WIDTH, anomalies_cell, fleet_table, fleet_title, render
from evsim.viewer.sections import Viewer

ENV = {**os.environ, "TZ": "UTC", "PYTHONUNBUFFERED": "1"}
BEGIN = datetime(2026, 3, 1, 8, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return BEGIN + timedelta(minutes=minutes)


def status(cp: str, connector: int, state: str, minutes: float,
           error: str = "NoError", source: str = "csms") -> dict:
    """The typed event the central system's journal records for an answered
    StatusNotification."""
    return dict(event_type="STATUS_NOTIFICATION", source=source,
                description=f"StatusNotification: connector {connector} {state} ({error})",
                data={"request": {"connectorId": connector, "status": state, "errorCode": error},
                      "response": {}}, charge_point_id=cp, timestamp=at(minutes))


def event(kind: str, cp: str | None, minutes: float, source: str = "csms") -> dict:
    return dict(event_type=kind, source=source, description=kind.lower(), charge_point_id=cp,
                timestamp=at(minutes))


@pytest.fixture
def fleet_db(db_path: Path) -> Path:
    """Four charge points as csms.py records them:

    CP_0001 charging (a connector's status after connector 0's), two sessions, three anomalies;
    CP_0002 reconnected (the old connection's DISCONNECTED after the new CONNECTED), faulted;
    CP_0003 disconnected (the charge point's own CONNECTED afterwards does not count);
    CP_0004 connected before the central system restarted and not since, last seen long ago.
    """
    with MemoryBank(db_path) as bank:
        bank.log_events([
            event("PROCESS_START", None, -120),
            event("CONNECTED", "CP_0004", -119), status("CP_0004", 1, "Available", -119),
            event("PROCESS_START", None, 0),
            event("CONNECTED", "CP_0001", 1), status("CP_0001", 0, "Available", 1),
            status("CP_0001", 1, "Preparing", 2), status("CP_0001", 1, "Charging", 3),
            status("CP_0001", 0, "Available", 4),
            status("CP_0001", 1, "Finishing", 5, source="cp"),
            event("CONNECTED", "CP_0002", 1), event("CONNECTED", "CP_0002", 6),
            event("DISCONNECTED", "CP_0002", 6.5),
            status("CP_0002", 1, "Faulted", 7, error="GroundFailure"),
            event("CONNECTED", "CP_0003", 1), status("CP_0003", 1, "Available", 1),
            event("DISCONNECTED", "CP_0003", 8), event("CONNECTED", "CP_0003", 9, source="cp"),
            event("OCPP_MESSAGE", "CP_0001", 10),
        ])
        bank.start_session("CP_0001", 1, start_time=at(2), meter_start_wh=0)
        bank.end_session("CP_0001", 1, end_time=at(3), energy_wh=1500)
        bank.start_session("CP_0001", 2, start_time=at(4), meter_start_wh=1500)
        bank.start_session("CP_0004", 3, start_time=at(-118), meter_start_wh=0)
        bank.end_session("CP_0004", 3, end_time=at(-117), energy_wh=250)
        for minutes, kind in ((2.5, "CURRENT_FLUCTUATION"), (4.5, "METER_FREEZE"),
                              (5.5, "CURRENT_FLUCTUATION")):
            bank.record_anomaly(kind, "HIGH", kind, charge_point_id="CP_0001",
                                timestamp=at(minutes))
        bank.record_anomaly("OVER_CURRENT", "LOW", "site wide", timestamp=at(5))
    return db_path


def fleet_of(db: Path, **filters) -> dict[str, dict]:
    with MemoryBank(db, readonly=True) as bank:
        return {row["charge_point_id"]: row for row in bank.get_fleet(**filters)}


def viewer(db: Path, *args: str, stdin: str = "") -> str:
    result = subprocess.run(script("memory_viewer.py", "--db", str(db), *args), input=stdin,
                            capture_output=True, text=True, timeout=30, env=ENV, cwd=ROOT)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result.stdout


# -- the read ------------------------------------------------------------------------------------

def test_each_charge_point_as_the_central_system_recorded_it(fleet_db):
    fleet = fleet_of(fleet_db)
    assert list(fleet) == ["CP_0001", "CP_0002", "CP_0003", "CP_0004"]
    one = fleet["CP_0001"]
    assert (one["status"], one["connector"], one["connected"]) == ("Charging", 1, True)
    assert (one["sessions"], one["open_sessions"], one["energy_wh"]) == (2, 1, 1500)
    assert one["anomalies"] == 3
    assert one["anomaly_types"] == {"CURRENT_FLUCTUATION": 2, "METER_FREEZE": 1}
    assert one["last_seen"] == "2026-03-01T08:10:00.000000Z"
    two = fleet["CP_0002"]
    assert (two["status"], two["error_code"], two["connected"]) == ("Faulted", "GroundFailure",
                                                                    True)
    assert (two["sessions"], two["energy_wh"], two["anomaly_types"]) == (0, 0, {})
    assert fleet["CP_0003"]["connected"] is False
    assert (fleet["CP_0004"]["status"], fleet["CP_0004"]["connected"]) == ("Available", False)
    assert fleet["CP_0004"]["energy_wh"] == 250


def test_a_central_system_that_stopped_has_nobody_connected(fleet_db):
    with MemoryBank(fleet_db) as bank:
        bank.log_event("PROCESS_STOP", "csms", "csms stopped", timestamp=at(11))
    assert not any(row["connected"] for row in fleet_of(fleet_db).values())
    with MemoryBank(fleet_db) as bank:
        bank.log_event("PROCESS_START", "csms", "csms listening", timestamp=at(12))
        bank.log_event("CONNECTED", "csms", "again", charge_point_id="CP_0003",
                       timestamp=at(13))
    fleet = fleet_of(fleet_db)
    assert [cp for cp, row in fleet.items() if row["connected"]] == ["CP_0003"]
    assert fleet["CP_0001"]["status"] == "Charging", "the last status is kept"


def test_since_counts_what_came_since_and_lists_those_seen_since(fleet_db):
    fleet = fleet_of(fleet_db, since=at(4))
    assert list(fleet) == ["CP_0001", "CP_0002", "CP_0003"]
    one = fleet["CP_0001"]
    assert (one["sessions"], one["open_sessions"], one["energy_wh"]) == (1, 1, 0)
    assert one["anomaly_types"] == {"METER_FREEZE": 1, "CURRENT_FLUCTUATION": 1}
    assert one["status"] == "Charging" and fleet["CP_0002"]["connected"] is True


def test_an_empty_bank_has_no_fleet(db_path):
    with MemoryBank(db_path) as bank:
        assert bank.get_fleet() == []


def test_the_queries_follow_the_indexes_not_the_tables(db_path):
    """Without ANALYZE the plan depends on the schema only: an empty bank shows the plan a bank
    of millions of rows gets. No read scans events or metrics whole."""
    MemoryBank(db_path).close()
    conn = sqlite3.connect(db_path)
    plans = {name: " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
             for name, sql, args in (
                 ("seen", aggregates.LAST_SEEN_SQL, ()),
                 ("status", aggregates.STATUS_SQL, ("csms",)),
                 ("process", aggregates.PROCESS_SQL, ("PROCESS_START", "csms")),
                 ("connections", aggregates.CONNECTIONS_SQL, ("csms", "")),
                 ("follow", METRICS_AFTER_SQL, (0, 9, "current", "CP_0001", "csms")))}
    conn.close()
    assert "events_charge_point (charge_point_id=?)" in plans["seen"]
    for name in ("status", "process", "connections"):
        assert "USING INDEX events_type (event_type=?" in plans[name], plans[name]
    assert plans["follow"] == "SEARCH metrics USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"
    assert not any("SCAN events" in plan or "SCAN metrics" in plan for plan in plans.values())


def test_two_thousand_charge_points(db_path):
    ids = [f"CP_{n:04d}" for n in range(1, 2001)]
    with MemoryBank(db_path) as bank:
        bank.log_events([event("PROCESS_START", None, 0)]
                        + [event("CONNECTED", cp, 1 + n / 1000) for n, cp in enumerate(ids)]
                        + [status(cp, 1, "Available", 2) for cp in ids])
        for cp in ids[::100]:
            bank.record_anomaly("METER_FREEZE", "LOW", "x", charge_point_id=cp, timestamp=at(3))
    args = argparse.Namespace(since=None, cp=None, sort="anomalies")
    with MemoryBank(db_path, readonly=True) as bank:
        data = Viewer(bank, args).fleet(5)
        assert data["charge_points"] == 2000
        assert [row["charge_point_id"] for row in data["rows"]] == ids[:500:100]
        assert all(row["connected"] and row["status"] == "Available" for row in data["rows"])
        args.sort = "seen"
        assert Viewer(bank, args).fleet(2)["rows"][0]["charge_point_id"] == "CP_0001"


# -- sorting and formatting ----------------------------------------------------------------------

@pytest.mark.parametrize("sort, first", [
    ("anomalies", "CP_0001"), ("energy", "CP_0001"), ("sessions", "CP_0001"),
    ("seen", "CP_0004"), ("id", "CP_0001")])
def test_sort_puts_the_rows_worth_a_look_first(fleet_db, sort, first):
    args = argparse.Namespace(since=None, cp=None, sort=sort)
    with MemoryBank(fleet_db, readonly=True) as bank:
        data = Viewer(bank, args).fleet(None)
    assert data["rows"][0]["charge_point_id"] == first and data["charge_points"] == 4


def test_the_table_fits_a_terminal_and_names_status_errors_and_anomaly_types():
    row = dict(charge_point_id="CP_WITH_A_VERY_LONG_IDENTIFIER_0001", status="Faulted",
               error_code="GroundFailure", connected=False, sessions=1234, open_sessions=1,
               energy_wh=1_234_567.0, anomalies=12, last_seen="2026-03-01T08:10:00.000000Z",
               anomaly_types={"METER_FREEZE": 2, "CURRENT_FLUCTUATION": 10})
    table = fleet_table([row, {**row, "status": None, "error_code": None, "anomalies": 0,
                               "anomaly_types": {}}])
    assert max(map(len, table.splitlines())) <= WIDTH
    first = table.splitlines()[2]
    assert anomalies_cell(row) == "12: CURRENT_FLUCTUATION 10, METER_FREEZE 2"
    assert "Faulted GroundFailure" in first and " no " in first and "1,234 (1 o…" in first
    assert "1,234.57" in first and first.endswith("12: CURRENT_FL…")
    assert table.splitlines()[3].endswith(" 0")
    assert fleet_title({"rows": [row], "charge_points": 2000, "sort": "seen",
                        "since": None}) == "Fleet: 1 of 2,000 charge points, longest silent first"
    assert render("fleet", {"rows": [], "charge_points": 0, "sort": "id", "since": None}) == \
        "Fleet: 0 of 0 charge points, by id\n(none)\n"


# -- the command line and the menu -------------------------------------------------------------

def test_fleet_table_and_json_from_the_command_line(fleet_db):
    out = viewer(fleet_db, "--fleet", "2")
    lines = out.splitlines()
    assert lines[0] == "Fleet: 2 of 4 charge points, most anomalies first"
    assert lines[3].split()[:8] == ["CP_0001", "Charging", "yes", "2", "(1", "open)", "1.50",
                                    "03-01"]
    assert "03-01 08:10:00  3: CURRENT_FLUCTUATION" in lines[3]
    assert lines[4].split()[:4] == ["CP_0002", "Faulted", "GroundFailure", "yes"]

    data = json.loads(viewer(fleet_db, "--fleet", "--json", "--sort", "id",
                             "--since", "2026-03-01T08:04:00+00:00"))["fleet"]
    assert [row["charge_point_id"] for row in data["rows"]] == ["CP_0001", "CP_0002", "CP_0003"]
    assert data["since"] == "2026-03-01T08:04:00.000000Z" and data["sort"] == "id"
    only = json.loads(viewer(fleet_db, "--fleet", "--json", "--cp", "CP_0003"))["fleet"]
    assert [row["charge_point_id"] for row in only["rows"]] == ["CP_0003"]


def test_the_menu_shows_the_fleet(fleet_db):
    out = viewer(fleet_db, "--menu", stdin="10\n3\n0\n")
    assert " 10. Fleet (one row per charge point)" in out and "Choose 0-10" in out
    assert "How many charge points? [20]: " in out
    assert "Fleet: 3 of 4 charge points, most anomalies first" in out
