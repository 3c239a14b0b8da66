"""One process's connection to the MemoryBank file: opening, transactions, retries, migration.

Concurrency: every process opens its own connection. The database is in WAL mode, so readers
never block writers nor writers readers; each write is one short transaction that starts with
``BEGIN IMMEDIATE``, which takes the write lock up front and so waits in SQLite's busy handler
(a deferred transaction that reads first and then writes fails at once with SQLITE_BUSY, whatever
the timeout, because waiting could deadlock). Should the busy timeout still run out, the whole
transaction is rolled back and retried until it commits: a row is never lost and "database is
locked" never reaches the caller.

Durability: ``PRAGMA synchronous=NORMAL``. In WAL mode a commit is then safe against a crash or
kill of any process (the WAL is written before the commit returns, and the file never corrupts);
only an operating-system crash or power cut can roll back the last transactions since the WAL was
last synced at a checkpoint. For a simulator's log that is the right price: ``FULL`` adds one fsync
per commit, which is most of the cost of a single ``log_event``.

Opening for writing applies the missing steps of :data:`~evsim.bank.schema.MIGRATIONS` in one
transaction. Opening with ``readonly=True`` never creates a database and never writes to one;
beside an existing one, SQLite may keep its ``-wal`` and ``-shm`` files (a WAL reader needs the
shared memory index, and only a writer removes them when it closes).
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, TypeVar, Union

from evsim.bank import schema

DEFAULT_DB_NAME = "ev_charging_memory.db"

log = logging.getLogger("memory")

T = TypeVar("T")


class MemoryBankError(Exception):
    """The database cannot be opened or used; the message is one line naming the file."""


def default_db_path() -> Path:
    """``$EV_SIM_DB`` or ``./ev_charging_memory.db``."""
    return Path(os.environ.get("EV_SIM_DB") or DEFAULT_DB_NAME)


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` means another connection holds a lock (worth retrying)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class Connection:
    """A sqlite3 connection with the MemoryBank's rules; see the module docstring.

    It may be shared by the threads of one process: every use holds a lock, so a transaction
    of one thread never takes in another thread's statements.
    """

    def __init__(self, path: Union[str, os.PathLike], *, readonly: bool = False,
                 busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._conn: Optional[sqlite3.Connection] = None
        if readonly and not self.path.is_file():
            raise MemoryBankError(f"no MemoryBank database at {self.path}")
        target = f"{self.path.resolve().as_uri()}?mode=ro" if readonly else str(self.path)
        try:
            try:
                self._conn = sqlite3.connect(target, uri=readonly, timeout=busy_timeout,
                                             isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise self.error(exc) from None
            if readonly:
                self._conn.execute("PRAGMA query_only = ON")
                self.check_schema(self.retry(self.user_version))
            else:
                self.retry(lambda: self.sqlite.execute("PRAGMA journal_mode = WAL").fetchone())
                self._conn.execute("PRAGMA synchronous = NORMAL")
                self.write(self._migrate)
        except BaseException:
            self.close()
            raise

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The open sqlite3 connection; MemoryBankError once closed."""
        if self._conn is None:
            raise self._closed()
        return self._conn

    def _closed(self) -> MemoryBankError:
        return MemoryBankError(f"{self.path}: the MemoryBank is closed")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def error(self, exc: sqlite3.Error) -> MemoryBankError:
        """A sqlite3 error as one line naming the file."""
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            return MemoryBankError(f"{self.path} is not a SQLite database")
        return MemoryBankError(f"{self.path}: {exc}")

    # -- transactions ---------------------------------------------------------------------------

    def retry(self, work: Callable[[], T]) -> T:
        """Run ``work`` until it does not fail with SQLITE_BUSY; other errors become one line."""
        delay = 0.001
        started = warned = time.monotonic()
        with self._lock:
            if self._conn is None:
                raise self._closed()
            while True:
                try:
                    return work()
                except sqlite3.Error as exc:
                    if not is_busy(exc):
                        raise self.error(exc) from exc
                    if time.monotonic() - warned >= 5:
                        warned = time.monotonic()
                        log.warning("%s busy for %.0f s; still retrying", self.path,
                                    warned - started)
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` in one ``BEGIN IMMEDIATE`` transaction, retried whole while the file is busy."""
        if self.readonly:
            raise MemoryBankError(f"{self.path} is open read-only")

        def transaction() -> T:
            conn = self.sqlite
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return self.retry(transaction)

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` in one read transaction, so it sees a single snapshot of every table;
        retried whole while the file is busy."""
        def transaction() -> T:
            with self._snapshot() as conn:
                return work(conn)
        return self.retry(transaction)

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction for a caller that streams rows: the connection stays locked to
        this thread until the block ends. Not retried (rows may already be gone to the caller):
        in WAL mode a reader waits in the busy handler and does not see SQLITE_BUSY but in
        rare recovery cases, which then raise MemoryBankError."""
        with self._lock:
            try:
                with self._snapshot() as conn:
                    yield conn
            except sqlite3.Error as exc:
                raise self.error(exc) from exc

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        conn = self.sqlite
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    # -- schema ---------------------------------------------------------------------------------

    def user_version(self) -> int:
        return self.sqlite.execute("PRAGMA user_version").fetchone()[0]

    def check_schema(self, version: int) -> None:
        """MemoryBankError unless ``version`` is the one this program knows."""
        if version == 0:
            raise MemoryBankError(f"{self.path} is a SQLite file but not a MemoryBank database")
        if version > schema.SCHEMA_VERSION:
            raise MemoryBankError(f"{self.path} has schema version {version}, newer than this "
                                  f"program's {schema.SCHEMA_VERSION}: update the simulator")
        if version < schema.SCHEMA_VERSION:
            raise MemoryBankError(f"{self.path} has schema version {version}, older than "
                                  f"{schema.SCHEMA_VERSION}: open it once for writing (any "
                                  f"simulator process) to migrate it")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply the missing steps of MIGRATIONS (inside the caller's write transaction)."""
        version = self.user_version()
        if version >= schema.SCHEMA_VERSION:
            return self.check_schema(version)
        for target in range(version + 1, schema.SCHEMA_VERSION + 1):
            try:
                for statement in schema.MIGRATIONS[target]:
                    conn.execute(statement)
            except sqlite3.OperationalError as exc:
                raise MemoryBankError(f"cannot migrate {self.path} from schema version {version}"
                                      f" to {target}: {exc}") from None
            log.info("%s: schema migrated to version %d", self.path, target)
        conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
