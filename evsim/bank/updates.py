"""The writes that change stored rows rather than add them: closing a session with figures from
its samples, learning a pattern, deleting old rows.

Each runs in write transactions of the caller's connection, so what it reads and what it
writes are one consistent moment even while other processes keep writing.
"""
from __future__ import annotations

import sqlite3
from typing import Any, Optional

from evsim.bank.connection import Connection
from evsim.constants import RECORDER

#: Rows deleted per transaction by :func:`delete_older_than`, so that writers never wait long.
DELETE_CHUNK = 5000
CURRENT_FIGURES = ("min_current", "avg_current", "max_current", "sample_count")
#: A transaction's 'current' samples in a time range, found by the transaction's index (``+``:
#: not by the time index, which would read every charge point's samples of that range).
TRANSACTION_CURRENTS = ("FROM metrics WHERE charge_point_id = ? AND transaction_id = ? AND "
                        "name = 'current' AND +timestamp >= ? AND +timestamp <= ?")


def session_currents(conn: sqlite3.Connection, charge_point_id: str, transaction_id: Any,
                     start: Optional[str], end: str) -> dict:
    """min, avg and max current and the sample count of a transaction's 'current' samples from
    ``start`` to ``end``, from one source so that each sample counts once (the charge point
    and the central system record the same ones): :data:`RECORDER` if it has samples, else the
    source with the most."""
    params = (charge_point_id, transaction_id, start or "", end)
    source = conn.execute(
        f"SELECT source {TRANSACTION_CURRENTS} GROUP BY source "
        f"ORDER BY source IS ? DESC, count(*) DESC, source LIMIT 1",
        (*params, RECORDER)).fetchone()
    figures = conn.execute(
        f"SELECT min(value), avg(value), max(value), count(*) {TRANSACTION_CURRENTS} "
        f"AND source IS ?",
        (*params, source[0] if source else None)).fetchone()
    return dict(zip(CURRENT_FIGURES, figures))


def close_session(conn: sqlite3.Connection, charge_point_id: str, transaction_id: Any,
                  given: dict[str, Any]) -> None:
    """Set ``given`` (encoded columns, ``end_time`` among them; None for not given) on the
    newest open session of the transaction, making one if none was started. Current figures
    not given come from :func:`session_currents`; energy not given is meter_stop_wh -
    meter_start_wh when both are known."""
    found = conn.execute(
        "SELECT id, start_time, meter_start_wh FROM sessions WHERE charge_point_id = ? "
        "AND transaction_id = ? ORDER BY end_time IS NOT NULL, id DESC LIMIT 1",
        (charge_point_id, transaction_id)).fetchone()
    if found is None:
        found = (conn.execute(
            "INSERT INTO sessions (charge_point_id, transaction_id) VALUES (?, ?)",
            (charge_point_id, transaction_id)).lastrowid, None, None)
    session_id, start_time, meter_start = found
    update = dict(given)
    if any(update.get(name) is None for name in CURRENT_FIGURES):
        computed = session_currents(conn, charge_point_id, transaction_id, start_time,
                                    update["end_time"])
        update.update({name: value for name, value in computed.items()
                       if update.get(name) is None})
    if update.get("energy_wh") is None and None not in (meter_start, update.get("meter_stop_wh")):
        update["energy_wh"] = update["meter_stop_wh"] - meter_start
    conn.execute(f"UPDATE sessions SET {', '.join(f'{name} = ?' for name in update)} "
                 f"WHERE id = ?", (*update.values(), session_id))


def upsert_pattern(conn: sqlite3.Connection, name: str, parameters: str,
                   confidence: Optional[float], seen: str) -> int:
    """A new pattern counts 1; a known one counts +1 and takes the new parameters (and
    confidence, when given). Returns its id."""
    conn.execute(
        "INSERT INTO patterns (name, parameters, occurrences, confidence, first_seen, "
        "last_seen) VALUES (?1, ?2, 1, ?3, ?4, ?4) ON CONFLICT (name) DO UPDATE SET "
        "parameters = excluded.parameters, occurrences = occurrences + 1, "
        "confidence = coalesce(excluded.confidence, confidence), "
        "last_seen = max(last_seen, excluded.last_seen)", (name, parameters, confidence, seen))
    return conn.execute("SELECT id FROM patterns WHERE name = ?", (name,)).fetchone()[0]


#: What "old" means per table; patterns (learned knowledge), open sessions and open labels are
#: kept; a label goes once it ended before the cutoff, as its anomalies do.
OLD_ROWS = {"events": "timestamp < ?1", "anomalies": "timestamp < ?1",
            "metrics": "timestamp < ?1", "sessions": "end_time IS NOT NULL AND end_time < ?1",
            "labels": '"end" IS NOT NULL AND "end" < ?1'}


def delete_older_than(connection: Connection, cutoff: str) -> dict[str, int]:
    """Delete the rows of :data:`OLD_ROWS` before ``cutoff`` (stored time text), in
    transactions of :data:`DELETE_CHUNK` rows; returns the rows deleted per table."""
    deleted = dict.fromkeys(OLD_ROWS, 0)
    for table, condition in OLD_ROWS.items():
        sql = (f"DELETE FROM {table} WHERE id IN "
               f"(SELECT id FROM {table} WHERE {condition} LIMIT {DELETE_CHUNK})")
        count = DELETE_CHUNK
        while count >= DELETE_CHUNK:
            count = connection.write(lambda conn, sql=sql: conn.execute(sql, (cutoff,)).rowcount)
            deleted[table] += count
    return deleted
