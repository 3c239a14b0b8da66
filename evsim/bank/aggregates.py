"""Figures computed inside SQLite rather than from rows: metric statistics, the dashboard
totals and the fleet's rows. Each takes a sqlite3 connection inside the caller's transaction,
so figures that belong together come from one snapshot."""
from __future__ import annotations

import math
import sqlite3
from typing import Any, Optional

from evsim.bank.query import distinct, rows_where
from evsim.constants import SEVERITIES


def metric_statistics(conn: sqlite3.Connection, name: str, *, since: Optional[str] = None,
                      charge_point_id: Optional[str] = None,
                      source: Optional[str] = None) -> dict:
    """count, min, max, avg, stddev (population), the latest value, its time and unit, of the
    samples called ``name`` (``since`` is stored time text)."""
    where, params = ["name = ?"], [name]
    for column, operator, value in (("source", "=", source), ("timestamp", ">=", since),
                                    ("charge_point_id", "=", charge_point_id)):
        if value is not None:
            where.append(f"{column} {operator} ?")
            params.append(value)
    condition = " AND ".join(where)
    count, low, high, mean = conn.execute(
        f"SELECT count(value), min(value), max(value), avg(value) FROM metrics "
        f"WHERE {condition}", params).fetchone()
    result = {"name": name, "source": source, "count": count, "min": low, "max": high,
              "avg": mean, "stddev": None, "latest": None, "latest_timestamp": None, "unit": None}
    if count:
        # Two passes rather than sum(x*x): no cancellation when the spread is small.
        squares = conn.execute(f"SELECT sum((value - ?) * (value - ?)) FROM metrics "
                               f"WHERE {condition}", (mean, mean, *params)).fetchone()[0]
        result["stddev"] = math.sqrt(squares / count)
        result["latest"], result["latest_timestamp"], result["unit"] = conn.execute(
            f"SELECT value, timestamp, unit FROM metrics WHERE {condition} "
            f"ORDER BY timestamp DESC, id DESC LIMIT 1", params).fetchone()
    return result


def dashboard_summary(conn: sqlite3.Connection) -> dict:
    """Totals of every table (without the database's name and schema version)."""
    def one(sql: str) -> Any:
        return conn.execute(sql).fetchone()[0]
    by_severity = dict.fromkeys(SEVERITIES, 0)
    by_severity.update(conn.execute(
        "SELECT severity, count(*) FROM anomalies GROUP BY severity").fetchall())
    last_anomaly = list(rows_where(conn, "anomalies", limit=1))
    sessions, active, energy = conn.execute(
        "SELECT count(*), count(*) - count(end_time), coalesce(sum(energy_wh), 0) "
        "FROM sessions").fetchone()
    return {
        "total_events": one("SELECT count(*) FROM events"),
        "first_event": one("SELECT min(timestamp) FROM events"),
        "last_event": one("SELECT max(timestamp) FROM events"),
        "event_types": dict(conn.execute(
            "SELECT event_type, count(*) AS n FROM events GROUP BY event_type "
            "ORDER BY n DESC, event_type").fetchall()),
        "charge_points": distinct(conn, "events", "charge_point_id"),
        "total_anomalies": sum(by_severity.values()),
        "anomalies_by_severity": by_severity,
        "last_anomaly": last_anomaly[0] if last_anomaly else None,
        "total_sessions": sessions,
        "active_sessions": active,
        "total_energy_wh": energy,
        "total_metrics": one("SELECT count(*) FROM metrics"),
        "total_patterns": one("SELECT count(*) FROM patterns"),
    }


#: Each charge point that leads an event, and its newest event: one index seek per charge point
#: (along events_charge_point), so the cost follows the fleet's size, not the table's.
LAST_SEEN_SQL = (
    "WITH RECURSIVE ids(id) AS (SELECT min(charge_point_id) FROM events UNION ALL "
    "SELECT (SELECT min(charge_point_id) FROM events WHERE charge_point_id > ids.id) "
    "FROM ids WHERE ids.id IS NOT NULL) "
    "SELECT id, (SELECT max(timestamp) FROM events WHERE charge_point_id = ids.id) "
    "FROM ids WHERE id IS NOT NULL")
#: The newest StatusNotification of each connector of each charge point (the bare columns come
#: from the row of max(timestamp)). The unary ``+`` on ``source`` here and below keeps SQLite on
#: events_type: on events_source it would read every event of the central system.
STATUS_SQL = (
    "SELECT charge_point_id, json_extract(data, '$.request.connectorId') AS connector, "
    "max(timestamp), json_extract(data, '$.request.status'), "
    "json_extract(data, '$.request.errorCode') FROM events "
    "WHERE event_type = 'STATUS_NOTIFICATION' AND +source = ? AND charge_point_id IS NOT NULL "
    "GROUP BY charge_point_id, connector")
PROCESS_SQL = "SELECT max(timestamp) FROM events WHERE event_type = ? AND +source = ?"
#: Connections opened minus closed: a replaced connection's DISCONNECTED comes after its
#: successor's CONNECTED, so the newest of the two would say a connected charge point is not.
CONNECTIONS_SQL = (
    "SELECT charge_point_id, sum(event_type = 'CONNECTED') - sum(event_type = 'DISCONNECTED') "
    "FROM events WHERE event_type IN ('CONNECTED', 'DISCONNECTED') AND +source = ? "
    "AND timestamp >= ? AND charge_point_id IS NOT NULL GROUP BY charge_point_id")
SESSIONS_SQL = (
    "SELECT charge_point_id, count(*), count(*) - count(end_time), coalesce(sum(energy_wh), 0) "
    "FROM sessions WHERE start_time >= ? GROUP BY charge_point_id")
ANOMALIES_SQL = (
    "SELECT charge_point_id, anomaly_type, count(*) FROM anomalies "
    "WHERE timestamp >= ? AND +charge_point_id IS NOT NULL "
    "GROUP BY charge_point_id, anomaly_type")


def fleet_row(charge_point_id: str) -> dict:
    return {"charge_point_id": charge_point_id, "status": None, "error_code": None,
            "connector": None, "status_at": None, "connected": False, "sessions": 0,
            "open_sessions": 0, "energy_wh": 0.0, "anomalies": 0, "anomaly_types": {},
            "last_seen": None}


def _connected(conn: sqlite3.Connection, recorder: str) -> dict[str, bool]:
    """Who holds a connection to the central system now: none once it recorded its stop,
    else those with more connections opened than closed since it last started (a central
    system killed without a stop cannot be told from one running)."""
    started = conn.execute(PROCESS_SQL, ("PROCESS_START", recorder)).fetchone()[0]
    stopped = conn.execute(PROCESS_SQL, ("PROCESS_STOP", recorder)).fetchone()[0]
    if stopped is not None and (started is None or stopped >= started):
        return {}
    return {cp: opened > 0 for cp, opened in conn.execute(CONNECTIONS_SQL, (recorder,
                                                                           started or ""))}


def fleet(conn: sqlite3.Connection, recorder: str, since: Optional[str] = None) -> list[dict]:
    """One dict per charge point (in id order): its last StatusNotification and connection as
    ``recorder`` recorded them, its sessions and their energy, its anomalies by type and when
    anything was last recorded about it. ``since`` (stored time text) bounds the sessions (by
    start), the anomalies and which charge points are listed (seen since); status and
    connection are the latest whenever they were recorded."""
    low = since or ""
    rows: dict[str, dict] = {}

    def row(charge_point_id: str) -> dict:
        return rows.setdefault(charge_point_id, fleet_row(charge_point_id))
    for cp, seen in conn.execute(LAST_SEEN_SQL):
        if seen >= low:
            row(cp)["last_seen"] = seen
    for cp, count, still_open, energy in conn.execute(SESSIONS_SQL, (low,)):
        row(cp).update(sessions=count, open_sessions=still_open, energy_wh=energy)
    for cp, kind, count in conn.execute(ANOMALIES_SQL, (low,)):
        entry = row(cp)
        entry["anomalies"] += count
        entry["anomaly_types"][kind] = count
    for cp, connector, at, status, error in conn.execute(STATUS_SQL, (recorder,)):
        entry = rows.get(cp)
        if entry is not None and _newer_status(entry, connector, at):
            entry.update(status=status, error_code=error, status_at=at, connector=connector)
    for cp, connected in _connected(conn, recorder).items():
        if cp in rows:
            rows[cp]["connected"] = connected
    return [rows[cp] for cp in sorted(rows)]


def _newer_status(entry: dict, connector: Any, at: str) -> bool:
    """Whether this StatusNotification shows the charge point better than the one kept: a
    connector's beats connector 0's (the charge point as a whole), the newest wins otherwise."""
    if entry["status_at"] is None:
        return True
    if (entry["connector"] == 0) != (connector == 0):
        return entry["connector"] == 0
    return at > entry["status_at"]
