"""The ``id_tags`` table: the central system's list of id tags, one row per tag, kept across
restarts (schema version 2). A tag is compared without ASCII letter case (OCPP's CiString;
SQLite's NOCASE), so ``abc`` and ``ABC`` are one row. What a tag answers is the central
system's rule (:mod:`evsim.csms.idtags`); here only what a row may hold.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any, Optional

from evsim.bank import values

#: The statuses a stored tag may have (OCPP 1.6 AuthorizationStatus but ConcurrentTx, which is
#: decided from the open transactions, never stored).
STORED_STATUSES = ("Accepted", "Blocked", "Expired", "Invalid")
COLUMNS = ("id_tag", "status", "expiry_date", "parent_id_tag", "updated")
UPSERT = (f"INSERT INTO id_tags ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?) "
          "ON CONFLICT (id_tag) DO UPDATE SET id_tag = excluded.id_tag, "
          "status = excluded.status, expiry_date = excluded.expiry_date, parent_id_tag = excluded.parent_id_tag, "
          "updated = excluded.updated")


def row(clock: values.Clock, id_tag: Any, status: Any = "Accepted", expiry_date: Any = None,
        parent_id_tag: Any = None, updated: values.Timestamp = None) -> tuple:
    """The values of an id_tags row, in the order of :data:`COLUMNS`; ValueError names the
    field that is wrong."""
    if status not in STORED_STATUSES:
        raise ValueError(f"status must be one of {', '.join(STORED_STATUSES)}, got {status!r}")
    return (values.text(id_tag, "id_tag"), status,
            None if expiry_date is None else values.stored_time(expiry_date, clock),
            values.text(parent_id_tag, "parent_id_tag", required=False),
            values.stored_time(updated, clock))


def upsert(conn: sqlite3.Connection, encoded: tuple) -> None:
    conn.execute(UPSERT, encoded)


def delete(conn: sqlite3.Connection, id_tag: str) -> bool:
    return conn.execute("DELETE FROM id_tags WHERE id_tag = ?", (id_tag,)).rowcount > 0


def replace_all(conn: sqlite3.Connection, rows: Iterable[tuple]) -> int:
    """The whole list replaced by ``rows`` (inside the caller's transaction)."""
    conn.execute("DELETE FROM id_tags")
    return conn.executemany(UPSERT, list(rows)).rowcount


def select(conn: sqlite3.Connection, id_tag: Optional[str] = None) -> list[dict]:
    """Every tag (or the one named) as dicts, in id_tag order."""
    sql = f"SELECT {', '.join(COLUMNS)} FROM id_tags"
    params: tuple = ()
    if id_tag is not None:
        sql, params = sql + " WHERE id_tag = ?", (id_tag,)
    return [dict(zip(COLUMNS, found)) for found in conn.execute(sql + " ORDER BY id_tag", params)]
