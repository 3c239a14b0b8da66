"""The charge point's non-volatile memory: what a real charge point keeps in flash.

Its configuration, its energy register, its transactions and the transaction messages it still
owes the central system live in a small SQLite file, so ``kill -9`` of cp.py loses none of them
(OCPP 1.6 §3.7: transaction messages are delivered after an outage, and a restart closes the
transaction a power loss left open). Several charge points, in one process or several, share a
file: every row carries its charge point's id, and each change is one ``BEGIN IMMEDIATE``
transaction in WAL mode, committed before the change is acted on.
"""
from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

DEFAULT_NAME = "cp_state.db"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS settings (
        charge_point_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (charge_point_id, key))""",
    """CREATE TABLE IF NOT EXISTS transactions (
        ref INTEGER PRIMARY KEY,
        charge_point_id TEXT NOT NULL,
        id_tag TEXT NOT NULL,
        meter_start INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        transaction_id INTEGER,
        stopped INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY,
        charge_point_id TEXT NOT NULL,
        action TEXT NOT NULL,
        payload TEXT NOT NULL,
        tx_ref INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0)""",
)


def _plain(value: Any) -> Any:
    """What JSON lacks: the ocpp library's Decimal limits, as floats."""
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_plain)


class StateError(Exception):
    """The state file cannot be opened or written: one line naming it."""


def default_path(db_path: str | os.PathLike | None) -> Path:
    """``$EV_SIM_CP_STATE``, else ``cp_state.db`` beside the MemoryBank file."""
    if os.environ.get("EV_SIM_CP_STATE"):
        return Path(os.environ["EV_SIM_CP_STATE"])
    bank = Path(db_path or os.environ.get("EV_SIM_DB") or "ev_charging_memory.db")
    return bank.with_name(DEFAULT_NAME)


def files_path(state_path: str | os.PathLike, charge_point_id: str) -> Path:
    """The folder of a charge point's key and certificates: ``cp_files/<id>`` beside the state
    file."""
    return Path(state_path).with_name("cp_files") / quote(charge_point_id, safe="")


@dataclass
class StoredTransaction:
    ref: int
    id_tag: str
    meter_start: int
    started_at: str
    transaction_id: int | None
    stopped: bool


@dataclass
class StoredMessage:
    id: int
    action: str
    payload: dict[str, Any]
    tx_ref: int | None
    attempts: int


def private(path: str) -> None:
    """Make the state file, new or older, and its -wal and -shm files readable by their owner
    only: it holds the AuthorizationKey (SQLite gives the -wal and -shm files it makes the mode
    of the state file)."""
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except FileNotFoundError:
            continue


class StateStore:
    """One connection to the state file; ``":memory:"`` for a store that dies with the process."""

    def __init__(self, path: str | os.PathLike = ":memory:") -> None:
        self.path = str(path)
        try:
            if self.path != ":memory:":
                private(self.path)
            self._conn = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            with self.transaction() as conn:
                for statement in SCHEMA:
                    conn.execute(statement)
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"charge point state {self.path}: {exc}") from None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: it commits whole or not at all."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"charge point state {self.path}: {exc}") from None

    def close(self) -> None:
        self._conn.close()

    # -- settings (configuration keys, the energy register) -------------------------------------

    def settings(self, charge_point_id: str) -> dict[str, Any]:
        rows = self._conn.execute("SELECT key, value FROM settings WHERE charge_point_id = ?",
                                  (charge_point_id,))
        return {key: json.loads(value) for key, value in rows}

    def put(self, charge_point_id: str, **values: Any) -> None:
        with self.transaction() as conn:
            self._put(conn, charge_point_id, values)

    @staticmethod
    def _put(conn: sqlite3.Connection, charge_point_id: str, values: dict[str, Any]) -> None:
        conn.executemany("INSERT INTO settings (charge_point_id, key, value) VALUES (?, ?, ?) "
                         "ON CONFLICT (charge_point_id, key) DO UPDATE SET value = excluded.value",
                         [(charge_point_id, key, dumps(value)) for key, value in values.items()])

    # -- transactions ---------------------------------------------------------------------------

    def open_transaction(self, charge_point_id: str, id_tag: str, meter_start: int,
                         started_at: str, start_message: tuple[str, dict]) -> tuple[int, int]:
        """Record a new transaction and queue its StartTransaction in one commit; returns
        (transaction ref, outbox id)."""
        with self.transaction() as conn:
            ref = conn.execute(
                "INSERT INTO transactions (charge_point_id, id_tag, meter_start, started_at) "
                "VALUES (?, ?, ?, ?)", (charge_point_id, id_tag, meter_start, started_at)).lastrowid
            message_id = self._queue(conn, charge_point_id, *start_message, ref)
        return ref, message_id

    def close_transaction(self, charge_point_id: str, ref: int, stop_message: tuple[str, dict],
                          **settings: Any) -> int:
        """Mark a transaction stopped and queue its StopTransaction in one commit."""
        with self.transaction() as conn:
            conn.execute("UPDATE transactions SET stopped = 1 WHERE ref = ?", (ref,))
            self._put(conn, charge_point_id, settings)
            return self._queue(conn, charge_point_id, *stop_message, ref)

    def set_transaction_id(self, ref: int, transaction_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE transactions SET transaction_id = ? WHERE ref = ?",
                         (transaction_id, ref))

    def transactions(self, charge_point_id: str) -> list[StoredTransaction]:
        """The transactions still open or still named by a queued message, oldest first."""
        rows = self._conn.execute(
            "SELECT ref, id_tag, meter_start, started_at, transaction_id, stopped "
            "FROM transactions WHERE charge_point_id = ?1 AND (stopped = 0 OR ref IN "
            "(SELECT tx_ref FROM outbox WHERE charge_point_id = ?1)) ORDER BY ref",
            (charge_point_id,))
        return [StoredTransaction(*row[:5], stopped=bool(row[5])) for row in rows]

    def forget_finished(self, charge_point_id: str) -> None:
        """Drop the stopped transactions no queued message names any more."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM transactions WHERE charge_point_id = ?1 AND stopped = 1 "
                         "AND ref NOT IN (SELECT tx_ref FROM outbox WHERE charge_point_id = ?1 "
                         "AND tx_ref IS NOT NULL)", (charge_point_id,))

    # -- the outbox of transaction messages -----------------------------------------------------

    def queue(self, charge_point_id: str, action: str, payload: dict, tx_ref: int | None,
              **settings: Any) -> int:
        with self.transaction() as conn:
            self._put(conn, charge_point_id, settings)
            return self._queue(conn, charge_point_id, action, payload, tx_ref)

    @staticmethod
    def _queue(conn: sqlite3.Connection, charge_point_id: str, action: str, payload: dict,
               tx_ref: int | None) -> int:
        return conn.execute("INSERT INTO outbox (charge_point_id, action, payload, tx_ref) "
                            "VALUES (?, ?, ?, ?)",
                            (charge_point_id, action, dumps(payload), tx_ref)).lastrowid

    def messages(self, charge_point_id: str) -> list[StoredMessage]:
        rows = self._conn.execute("SELECT id, action, payload, tx_ref, attempts FROM outbox "
                                  "WHERE charge_point_id = ? ORDER BY id", (charge_point_id,))
        return [StoredMessage(id, action, json.loads(payload), tx_ref, attempts)
                for id, action, payload, tx_ref, attempts in rows]

    def attempted(self, message_id: int, attempts: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE outbox SET attempts = ? WHERE id = ?", (attempts, message_id))

    def done(self, message_id: int) -> None:
        """A message delivered, or given up on."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE id = ?", (message_id,))
