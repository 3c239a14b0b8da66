"""The charge point's non-volatile memory: what a real charge point keeps in flash.

Its configuration, its energy register, its transactions and the transaction messages it still
owes the central system live in a small SQLite file, so ``kill -9`` of cp.py loses none of them
(OCPP 1.6 §3.7: transaction messages are delivered after an outage, and a restart closes the
transaction a power loss left open). Several charge points, in one process or several, share a
file: every row carries its charge point's id, and each change is one ``BEGIN IMMEDIATE``
transaction in WAL mode, committed before the change is acted on.

A fleet makes thousands of changes a second, and a commit each would be most of its work: a store
made with ``grouped=True`` keeps one write transaction open for the rest of the event loop's turn
(each change a savepoint in it) and commits it at the turn's end, or sooner through
:meth:`StateStore.commit`, which the charge point calls before any frame leaves: nothing is sent
before what it carries is stored.
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

DEFAULT_NAME = "cp_state.db"
UPSERT = ("INSERT INTO settings (charge_point_id, key, value) VALUES (?, ?, ?) "
          "ON CONFLICT (charge_point_id, key) DO UPDATE SET value = excluded.value")

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


_ENCODER = json.JSONEncoder(default=_plain)


def dumps(value: Any) -> str:
    """JSON text that :func:`json.loads` reads as it reads the standard encoder's: by orjson,
    unless the value holds what orjson writes otherwise (a NaN it makes null, a key that is not
    a string, an integer past 64 bits)."""
    try:
        text = orjson.dumps(value, default=_plain)
    except TypeError:
        return _ENCODER.encode(value)
    return _ENCODER.encode(value) if b"null" in text else text.decode()


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
    """One connection to the state file; ``":memory:"`` for a store that dies with the process.
    ``grouped``: the changes of one turn of the running event loop share a commit."""

    def __init__(self, path: str | os.PathLike = ":memory:", grouped: bool = False) -> None:
        self.path = str(path)
        self.grouped = grouped
        self._open = False  # a grouped write transaction is open
        self._after: list[Callable[[], None]] = []
        self._waiters: list[asyncio.Future] = []
        #: Settings of the open turn, (charge point, key) -> JSON: written with its commit, the
        #: latest only (a register stored each second by each charge point is one row a turn).
        self._pending: dict[tuple[str, str], str] = {}
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
            self.commit()
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"charge point state {self.path}: {exc}") from None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One change: it is stored whole or not at all (grouped: a savepoint of the turn's
        transaction, committed with it)."""
        conn = self._conn
        try:
            if not self._group():
                with self._alone(conn):
                    yield conn
                return
            conn.execute("SAVEPOINT change")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK TO change")
                conn.execute("RELEASE change")
                raise
            conn.execute("RELEASE change")
        except sqlite3.Error as exc:
            raise StateError(f"charge point state {self.path}: {exc}") from None

    @staticmethod
    @contextmanager
    def _alone(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _group(self) -> bool:
        """Open the turn's transaction if none is; False: commit each change alone (not
        grouped, or no event loop to end a turn)."""
        if self._open:
            return True
        if not self.grouped:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._conn.execute("BEGIN IMMEDIATE")
        self._open = True
        loop.call_soon(self.commit)
        return True

    def commit(self) -> None:
        """Commit the changes made so far (grouped), then run what waited for them."""
        if self._open:
            self._open = False
            waiters, self._waiters = self._waiters, []
            try:
                self._flush()
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._pending.clear()
                self._after.clear()
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                error = StateError(f"charge point state {self.path}: {exc}")
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(error)
                raise error from None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        after, self._after = self._after, []
        for action in after:
            action()

    async def committed(self) -> None:
        """Return once the changes made so far are committed: at the end of this turn of the
        event loop, with every other change of the turn (at once if none is open)."""
        if not self._open:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the changes made so far are committed (now, if they are)."""
        if self._open:
            self._after.append(action)
        else:
            action()

    def _execute(self, sql: str, parameters: tuple) -> None:
        """A change of one statement: atomic alone, so no savepoint of its own when grouped."""
        if self._grouped_turn():
            try:
                self._conn.execute(sql, parameters)
            except sqlite3.Error as exc:
                raise StateError(f"charge point state {self.path}: {exc}") from None
            return
        with self.transaction() as conn:
            conn.execute(sql, parameters)

    def close(self) -> None:
        self.commit()
        self._conn.close()

    # -- settings (configuration keys, the energy register) -------------------------------------

    def settings(self, charge_point_id: str) -> dict[str, Any]:
        try:
            self._flush()
        except sqlite3.Error as exc:
            raise StateError(f"charge point state {self.path}: {exc}") from None
        rows = self._conn.execute("SELECT key, value FROM settings WHERE charge_point_id = ?",
                                  (charge_point_id,))
        return {key: json.loads(value) for key, value in rows}

    def put(self, charge_point_id: str, **values: Any) -> None:
        if self._grouped_turn():
            self._put(self._conn, charge_point_id, values)
            return
        with self.transaction() as conn:
            self._put(conn, charge_point_id, values)

    def _put(self, conn: sqlite3.Connection, charge_point_id: str,
             values: dict[str, Any]) -> None:
        """Write settings, or in a grouped turn keep them for its commit."""
        if self._open:
            for key, value in values.items():
                self._pending[(charge_point_id, key)] = dumps(value)
            return
        conn.executemany(UPSERT, [(charge_point_id, key, dumps(value))
                                  for key, value in values.items()])

    def _flush(self) -> None:
        """Write the settings kept for the turn's commit (before it, or before a read)."""
        if self._pending:
            rows = [(charge_point_id, key, text)
                    for (charge_point_id, key), text in self._pending.items()]
            self._conn.executemany(UPSERT, rows)
            self._pending.clear()

    def _grouped_turn(self) -> bool:
        """:meth:`_group`, its failure in one line."""
        try:
            return self._group()
        except sqlite3.Error as exc:
            raise StateError(f"charge point state {self.path}: {exc}") from None

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
        self._execute("UPDATE transactions SET transaction_id = ? WHERE ref = ?",
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
        if self._grouped_turn():  # one statement and settings kept: no savepoint needed
            try:
                message_id = self._queue(self._conn, charge_point_id, action, payload, tx_ref)
            except sqlite3.Error as exc:
                raise StateError(f"charge point state {self.path}: {exc}") from None
            self._put(self._conn, charge_point_id, settings)
            return message_id
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
        self._execute("UPDATE outbox SET attempts = ? WHERE id = ?", (attempts, message_id))

    def done(self, message_id: int) -> None:
        """A message delivered, or given up on."""
        self._execute("DELETE FROM outbox WHERE id = ?", (message_id,))
