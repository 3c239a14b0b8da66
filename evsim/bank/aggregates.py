"""Figures computed inside SQLite rather than from rows: metric statistics and the dashboard
totals. Each takes a sqlite3 connection inside the caller's transaction,
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
