"""MemoryBank: the site's persistent memory, one SQLite file shared by every process.

Five tables: ``events`` (OCPP messages, CAN frames, system events), ``anomalies``, ``sessions``
(one per charging transaction), ``metrics`` (current, voltage, power, energy samples) and
``patterns`` (learned behaviour, one row per name).

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

Timestamps are UTC text in one fixed format, ``2024-05-01T12:00:00.000000Z``, so text order is
time order and the indexes serve time ranges. Methods accept a ``datetime`` (naive is taken as
UTC), an ISO-8601 string, epoch seconds, or ``None`` for now; ``since`` also takes a ``timedelta``
meaning that long before now.

The schema version is ``PRAGMA user_version``; opening for writing applies the missing steps of
:data:`MIGRATIONS` in one transaction, so a later schema change carries old databases along.
Opening with ``readonly=True`` never creates a database and never writes to one; beside an
existing one, SQLite may keep its ``-wal`` and ``-shm`` files (a WAL reader needs the shared
memory index, and only a writer removes them when it closes).
"""
from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

DEFAULT_DB_NAME = "ev_charging_memory.db"
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
SCHEMA_VERSION = 1
DELETE_CHUNK = 5000
SQLITE_MAX_INTEGER = 2**63 - 1
#: The source whose current samples a session's figures come from when it has any: the central
#: system records every sample it receives, and the charge point records the same ones again.
RECORDER = "csms"

log = logging.getLogger("memory")

T = TypeVar("T")
Timestamp = Union[datetime, str, float, int, None]
Since = Union[datetime, str, float, int, timedelta, None]


class MemoryBankError(Exception):
    """The database cannot be opened or used; the message is one line naming the file."""


def default_db_path() -> Path:
    """``$EV_SIM_DB`` or ``./ev_charging_memory.db``."""
    return Path(os.environ.get("EV_SIM_DB") or DEFAULT_DB_NAME)


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(value: datetime) -> str:
    """The stored form: fixed-width UTC with microseconds, so text order is time order."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"   # drop "+00:00"


def parse_timestamp(text: str) -> datetime:
    """A stored timestamp back to an aware UTC datetime."""
    return datetime.fromisoformat(text).astimezone(UTC)


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def to_json(value: Any, what: str) -> Optional[str]:
    """Encode ``value`` as JSON text; a ``str`` must already be JSON text. ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"{what} is a string but not JSON text ({exc}): "
                             f"{value[:60]!r}") from None
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from None


def _number(value: Any, what: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return value


def _text(value: Any, what: str, required: bool = True) -> Optional[str]:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        kind = "a non-empty string" if required else "a string"
        raise ValueError(f"{what} must be {kind}, got {value!r}")
    return value


def _transaction_id(value: Any) -> Union[int, str, None]:
    if value is None or (isinstance(value, (int, str)) and not isinstance(value, bool)):
        return value
    raise ValueError(f"transaction_id must be an integer or a string, got {value!r}")


def _severity(value: Any) -> str:
    severity = value.upper() if isinstance(value, str) else value
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {value!r}: expected one of {', '.join(SEVERITIES)}")
    return severity


@dataclass(frozen=True)
class Table:
    """What the generic query and export code needs to know about a table."""
    name: str
    columns: tuple[str, ...]
    time_column: str
    json_columns: tuple[str, ...] = ()
    search_columns: tuple[str, ...] = ()


TABLES = {table.name: table for table in (
    Table("events", ("timestamp", "event_type", "source", "description", "data", "charge_point_id"),
          "timestamp", ("data",), ("description", "data")),
    Table("anomalies", ("timestamp", "anomaly_type", "severity", "description", "current_value",
                        "expected_value", "deviation", "pattern", "charge_point_id",
                        "transaction_id"),
          "timestamp", ("pattern",), ("description",)),
    Table("sessions", ("charge_point_id", "transaction_id", "id_tag", "start_time", "end_time",
                       "meter_start_wh", "meter_stop_wh", "energy_wh", "min_current",
                       "avg_current", "max_current", "sample_count", "stop_reason"),
          "start_time"),
    Table("metrics", ("timestamp", "name", "value", "unit", "source", "charge_point_id",
                      "transaction_id"), "timestamp"),
    Table("patterns", ("name", "parameters", "occurrences", "confidence", "first_seen",
                       "last_seen"), "last_seen", ("parameters",)),
)}

ANOMALY_FIELDS = frozenset(TABLES["anomalies"].columns)

SCHEMA_V1 = (
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        timestamp TEXT NOT NULL,
        event_type TEXT NOT NULL,
        source TEXT NOT NULL,
        description TEXT NOT NULL,
        data TEXT,
        charge_point_id TEXT)""",
    "CREATE INDEX events_timestamp ON events (timestamp)",
    "CREATE INDEX events_type ON events (event_type, timestamp)",
    "CREATE INDEX events_source ON events (source, timestamp)",
    "CREATE INDEX events_charge_point ON events (charge_point_id, timestamp)",
    """CREATE TABLE anomalies (
        id INTEGER PRIMARY KEY,
        timestamp TEXT NOT NULL,
        anomaly_type TEXT NOT NULL,
        severity TEXT NOT NULL CHECK (severity IN ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
        description TEXT NOT NULL,
        current_value REAL,
        expected_value REAL,
        deviation REAL,
        pattern TEXT,
        charge_point_id TEXT,
        transaction_id INTEGER)""",
    "CREATE INDEX anomalies_timestamp ON anomalies (timestamp)",
    "CREATE INDEX anomalies_type ON anomalies (anomaly_type, timestamp)",
    "CREATE INDEX anomalies_severity ON anomalies (severity, timestamp)",
    "CREATE INDEX anomalies_charge_point ON anomalies (charge_point_id, timestamp)",
    """CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        charge_point_id TEXT NOT NULL,
        transaction_id INTEGER NOT NULL,
        id_tag TEXT,
        start_time TEXT,
        end_time TEXT,
        meter_start_wh REAL,
        meter_stop_wh REAL,
        energy_wh REAL,
        min_current REAL,
        avg_current REAL,
        max_current REAL,
        sample_count INTEGER,
        stop_reason TEXT)""",
    "CREATE INDEX sessions_start ON sessions (start_time)",
    "CREATE INDEX sessions_transaction ON sessions (charge_point_id, transaction_id)",
    """CREATE TABLE metrics (
        id INTEGER PRIMARY KEY,
        timestamp TEXT NOT NULL,
        name TEXT NOT NULL,
        value REAL NOT NULL,
        unit TEXT,
        source TEXT,
        charge_point_id TEXT,
        transaction_id INTEGER)""",
    "CREATE INDEX metrics_timestamp ON metrics (timestamp)",
    "CREATE INDEX metrics_name ON metrics (name, timestamp)",
    "CREATE INDEX metrics_transaction ON metrics (charge_point_id, transaction_id, name)",
    """CREATE TABLE patterns (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        parameters TEXT NOT NULL,
        occurrences INTEGER NOT NULL,
        confidence REAL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL)""",
)

#: Schema version -> the statements that bring the previous version to it. A later change adds
#: ``2: (...)``; never edit a step that has shipped.
MIGRATIONS: dict[int, tuple[str, ...]] = {1: SCHEMA_V1}


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class MemoryBank:
    """One connection to the MemoryBank file; see the module docstring for the guarantees.

    ``clock`` returns the current time as an aware datetime (tests inject one).
    A connection may be shared by the threads of one process: calls are serialised by a lock.
    """

    def __init__(self, path: Union[str, os.PathLike, None] = None, *, readonly: bool = False,
                 busy_timeout: float = 5.0, clock: Callable[[], datetime] = utc_now):
        self.path = Path(path) if path is not None else default_db_path()
        self.readonly = readonly
        self.clock = clock
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
                raise self._error(exc) from None
            if readonly:
                self._conn.execute("PRAGMA query_only = ON")
                self._check_schema(self._retry(lambda: self._user_version()))
            else:
                self._retry(lambda: self._conn.execute("PRAGMA journal_mode = WAL").fetchone())
                self._conn.execute("PRAGMA synchronous = NORMAL")
                self._write(self._migrate)
        except BaseException:
            self.close()
            raise

    # -- connection, transactions, schema ------------------------------------------------------

    def __enter__(self) -> MemoryBank:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemoryBank({str(self.path)!r}{', readonly=True' if self.readonly else ''})"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _error(self, exc: sqlite3.Error) -> MemoryBankError:
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            return MemoryBankError(f"{self.path} is not a SQLite database")
        return MemoryBankError(f"{self.path}: {exc}")

    def _retry(self, work: Callable[[], T]) -> T:
        """Run ``work`` until it does not fail with SQLITE_BUSY; other errors become one line."""
        delay = 0.001
        started = warned = time.monotonic()
        with self._lock:
            if self._conn is None:
                raise MemoryBankError(f"{self.path}: the MemoryBank is closed")
            while True:
                try:
                    return work()
                except sqlite3.Error as exc:
                    if not _is_busy(exc):
                        raise self._error(exc) from exc
                    if time.monotonic() - warned >= 5:
                        warned = time.monotonic()
                        log.warning("%s busy for %.0f s; still retrying", self.path,
                                    warned - started)
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` in one ``BEGIN IMMEDIATE`` transaction, retried whole while the file is busy."""
        if self.readonly:
            raise MemoryBankError(f"{self.path} is open read-only")

        def transaction() -> T:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return self._retry(transaction)

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` in one read transaction, so it sees a single snapshot of every table."""
        def transaction() -> T:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                return work(conn)
            finally:
                conn.execute("COMMIT")
        return self._retry(transaction)

    def _user_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def _check_schema(self, version: int) -> None:
        if version == 0:
            raise MemoryBankError(f"{self.path} is a SQLite file but not a MemoryBank database")
        if version > SCHEMA_VERSION:
            raise MemoryBankError(f"{self.path} has schema version {version}, newer than this "
                                  f"program's {SCHEMA_VERSION}: update the simulator")
        if version < SCHEMA_VERSION:
            raise MemoryBankError(f"{self.path} has schema version {version}, older than "
                                  f"{SCHEMA_VERSION}: open it once for writing (any simulator "
                                  f"process) to migrate it")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = self._user_version()
        if version >= SCHEMA_VERSION:
            return self._check_schema(version)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            try:
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
            except sqlite3.OperationalError as exc:
                raise MemoryBankError(f"cannot migrate {self.path} from schema version {version}"
                                      f" to {target}: {exc}") from None
            log.info("%s: schema migrated to version %d", self.path, target)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        return self._retry(self._user_version)

    def _time(self, value: Timestamp) -> str:
        """Any accepted timestamp form to the stored text; ValueError for anything else."""
        if value is None:
            return format_timestamp(self.clock())
        if isinstance(value, timedelta):
            try:
                return format_timestamp(self.clock() - value)
            except OverflowError:
                raise ValueError(f"{value} before now is out of range") from None
        if isinstance(value, datetime):
            return format_timestamp(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return format_timestamp(datetime.fromtimestamp(value, UTC))
            except (OverflowError, OSError, ValueError):
                raise ValueError(f"timestamp {value!r} is out of range") from None
        if isinstance(value, str):
            try:
                return format_timestamp(datetime.fromisoformat(value.strip()))
            except ValueError:
                raise ValueError(f"timestamp {value!r} is not an ISO-8601 time") from None
        raise ValueError(f"timestamp must be a datetime, ISO-8601 string or epoch seconds, "
                         f"got {value!r}")

    # -- writes ---------------------------------------------------------------------------------

    def _event_row(self, event_type: str, source: str, description: str, data: Any = None,
                   charge_point_id: Optional[str] = None, timestamp: Timestamp = None) -> tuple:
        return (self._time(timestamp), _text(event_type, "event_type"), _text(source, "source"),
                _text(description, "description", required=False) or "", to_json(data, "data"),
                _text(charge_point_id, "charge_point_id", required=False))

    def _metric_row(self, name: str, value: float, unit: Optional[str], source: Optional[str],
                    charge_point_id: Optional[str] = None, transaction_id: Optional[int] = None,
                    timestamp: Timestamp = None) -> tuple:
        if value is None:
            raise ValueError(f"metric {name!r} has no value")
        return (self._time(timestamp), _text(name, "metric name"), _number(value, "metric value"),
                _text(unit, "unit", required=False), _text(source, "source", required=False),
                _text(charge_point_id, "charge_point_id", required=False),
                _transaction_id(transaction_id))

    @staticmethod
    def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
        return (f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})")

    def _insert(self, table: str, columns: tuple[str, ...], row: tuple) -> int:
        sql = self._insert_sql(table, columns)
        return self._write(lambda conn: conn.execute(sql, row).lastrowid)

    def _insert_many(self, table: str, rows: list[tuple]) -> int:
        sql = self._insert_sql(table, TABLES[table].columns)
        if rows:
            self._write(lambda conn: conn.executemany(sql, rows))
        return len(rows)

    @staticmethod
    def _rows(items: Iterable[dict], make_row: Callable[..., tuple], what: str) -> list[tuple]:
        rows = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"{what} {index} is not a dict: {item!r}")
            try:
                rows.append(make_row(**item))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{what} {index}: {exc}") from None
        return rows

    def log_event(self, event_type: str, source: str, description: str, data: Any = None,
                  charge_point_id: Optional[str] = None, timestamp: Timestamp = None) -> int:
        """Store one event; ``data`` is any JSON value (a string must be JSON text).
        Returns its id."""
        row = self._event_row(event_type, source, description, data, charge_point_id, timestamp)
        return self._insert("events", TABLES["events"].columns, row)

    def log_events(self, events: Iterable[dict]) -> int:
        """Store many events (dicts with log_event's keyword names) in one transaction."""
        return self._insert_many("events", self._rows(events, self._event_row, "event"))

    def _anomaly_fields(self, fields: dict) -> dict:
        """Validate and encode anomaly columns given by name."""
        unknown = set(fields) - ANOMALY_FIELDS
        if unknown:
            raise TypeError(f"unknown anomaly field(s): {', '.join(sorted(unknown))}")
        checks: dict[str, Callable[[Any], Any]] = {
            "timestamp": self._time,
            "anomaly_type": lambda v: _text(v, "anomaly_type"),
            "severity": _severity,
            "description": lambda v: _text(v, "description", required=False) or "",
            "current_value": lambda v: _number(v, "current_value"),
            "expected_value": lambda v: _number(v, "expected_value"),
            "deviation": lambda v: _number(v, "deviation"),
            "pattern": lambda v: to_json(v, "pattern"),
            "charge_point_id": lambda v: _text(v, "charge_point_id", required=False),
            "transaction_id": _transaction_id,
        }
        return {name: checks[name](value) for name, value in fields.items()}

    def record_anomaly(self, anomaly_type: str, severity: str, description: str,
                       current_value: Optional[float] = None,
                       expected_value: Optional[float] = None, deviation: Optional[float] = None,
                       pattern: Any = None, charge_point_id: Optional[str] = None,
                       transaction_id: Optional[int] = None, timestamp: Timestamp = None) -> int:
        """Store one anomaly; severity is LOW, MEDIUM, HIGH or CRITICAL. Returns its id."""
        fields = self._anomaly_fields(dict(
            timestamp=timestamp, anomaly_type=anomaly_type, severity=severity,
            description=description, current_value=current_value, expected_value=expected_value,
            deviation=deviation, pattern=pattern, charge_point_id=charge_point_id,
            transaction_id=transaction_id))
        return self._insert("anomalies", tuple(fields), tuple(fields.values()))

    def update_anomaly(self, anomaly_id: int, **fields: Any) -> None:
        """Change some fields of a stored anomaly (an episode that grows); ValueError if none."""
        if not fields:
            return
        values = self._anomaly_fields(fields)
        sql = (f"UPDATE anomalies SET {', '.join(f'{name} = ?' for name in values)} "
               f"WHERE id = ?")
        changed = self._write(lambda conn: conn.execute(sql, (*values.values(), anomaly_id))
                              .rowcount)
        if not changed:
            raise ValueError(f"no anomaly with id {anomaly_id!r}")

    def record_metric(self, name: str, value: float, unit: Optional[str], source: Optional[str],
                      charge_point_id: Optional[str] = None, transaction_id: Optional[int] = None,
                      timestamp: Timestamp = None) -> int:
        """Store one sample (names used: current A, voltage V, power W, energy Wh)."""
        row = self._metric_row(name, value, unit, source, charge_point_id, transaction_id,
                               timestamp)
        return self._insert("metrics", TABLES["metrics"].columns, row)

    def record_metrics(self, metrics: Iterable[dict]) -> int:
        """Store many samples (dicts with record_metric's keyword names) in one transaction."""
        return self._insert_many("metrics", self._rows(metrics, self._metric_row, "metric"))

    def start_session(self, charge_point_id: str, transaction_id: int,
                      start_time: Timestamp = None, meter_start_wh: Optional[float] = None,
                      id_tag: Optional[str] = None) -> int:
        """Open the session of a transaction; returns its row id."""
        row = (_text(charge_point_id, "charge_point_id"), _transaction_id(transaction_id),
               self._time(start_time),
               _number(meter_start_wh, "meter_start_wh"), _text(id_tag, "id_tag", required=False))
        return self._insert("sessions", ("charge_point_id", "transaction_id", "start_time",
                                         "meter_start_wh", "id_tag"), row)

    def end_session(self, charge_point_id: str, transaction_id: int, end_time: Timestamp = None,
                    energy_wh: Optional[float] = None, stop_reason: Optional[str] = None,
                    meter_stop_wh: Optional[float] = None, min_current: Optional[float] = None,
                    avg_current: Optional[float] = None, max_current: Optional[float] = None,
                    sample_count: Optional[int] = None) -> None:
        """Close the newest open session of this transaction (one is made if none was started).

        Current figures not given come from the transaction's 'current' samples between its
        start and end, from one source so that each sample counts once (the charge point and
        the central system record the same ones): :data:`RECORDER` if it has samples, else the
        source with the most. Energy not given is meter_stop_wh - meter_start_wh when both
        are known.
        """
        _text(charge_point_id, "charge_point_id")
        _transaction_id(transaction_id)
        given = {"energy_wh": _number(energy_wh, "energy_wh"),
                 "meter_stop_wh": _number(meter_stop_wh, "meter_stop_wh"),
                 "min_current": _number(min_current, "min_current"),
                 "avg_current": _number(avg_current, "avg_current"),
                 "max_current": _number(max_current, "max_current"),
                 "sample_count": sample_count,
                 "stop_reason": _text(stop_reason, "stop_reason", required=False),
                 "end_time": self._time(end_time)}

        def close(conn: sqlite3.Connection) -> None:
            found = conn.execute(
                "SELECT id, start_time, meter_start_wh FROM sessions WHERE charge_point_id = ? "
                "AND transaction_id = ? ORDER BY end_time IS NOT NULL, id DESC LIMIT 1",
                (charge_point_id, transaction_id)).fetchone()
            if found is None:
                session_id = conn.execute(
                    "INSERT INTO sessions (charge_point_id, transaction_id) VALUES (?, ?)",
                    (charge_point_id, transaction_id)).lastrowid
                start_time = meter_start = None
            else:
                session_id, start_time, meter_start = found
            values = dict(given)
            if None in (min_current, avg_current, max_current, sample_count):
                samples = ("FROM metrics WHERE charge_point_id = ? AND transaction_id = ? AND "
                           "name = 'current' AND timestamp >= ? AND timestamp <= ?")
                params = (charge_point_id, transaction_id, start_time or "", values["end_time"])
                source = conn.execute(
                    f"SELECT source {samples} GROUP BY source "
                    f"ORDER BY source IS ? DESC, count(*) DESC, source LIMIT 1",
                    (*params, RECORDER)).fetchone()
                low, mean, high, count = conn.execute(
                    f"SELECT min(value), avg(value), max(value), count(*) {samples} "
                    f"AND source IS ?", (*params, source[0] if source else None)).fetchone()
                for name, computed in (("min_current", low), ("avg_current", mean),
                                       ("max_current", high), ("sample_count", count)):
                    if values[name] is None:
                        values[name] = computed
            if values["energy_wh"] is None and None not in (meter_start, values["meter_stop_wh"]):
                values["energy_wh"] = values["meter_stop_wh"] - meter_start
            conn.execute(f"UPDATE sessions SET {', '.join(f'{name} = ?' for name in values)} "
                         f"WHERE id = ?", (*values.values(), session_id))
        self._write(close)

    def learn_pattern(self, name: str, parameters: Any, confidence: Optional[float] = None,
                      timestamp: Timestamp = None) -> int:
        """Upsert by name: a new pattern counts 1; a known one counts +1 and takes the new
        parameters (and confidence, when given). Returns its id."""
        row = (_text(name, "pattern name"), to_json(parameters, "parameters") or "null",
               _number(confidence, "confidence"), self._time(timestamp))

        def upsert(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO patterns (name, parameters, occurrences, confidence, first_seen, "
                "last_seen) VALUES (?1, ?2, 1, ?3, ?4, ?4) ON CONFLICT (name) DO UPDATE SET "
                "parameters = excluded.parameters, occurrences = occurrences + 1, "
                "confidence = coalesce(excluded.confidence, confidence), "
                "last_seen = max(last_seen, excluded.last_seen)", row)
            return conn.execute("SELECT id FROM patterns WHERE name = ?", (name,)).fetchone()[0]
        return self._write(upsert)

    def clean_old_data(self, days: float = 7) -> dict[str, int]:
        """Delete events, anomalies, metrics and finished sessions older than ``days``.

        Learned patterns are kept. Deletes go in small transactions so writers never wait long.
        Returns the rows deleted per table.
        """
        days = _number(days, "days")
        if days is None or days < 0:
            raise ValueError(f"days must be 0 or more, got {days!r}")
        try:
            cutoff = self._time(timedelta(days=days))
        except OverflowError:
            raise ValueError(f"days must be at most {timedelta.max.days}, got {days!r}") from None
        conditions = {"events": "timestamp < ?1", "anomalies": "timestamp < ?1",
                      "metrics": "timestamp < ?1",
                      "sessions": "end_time IS NOT NULL AND end_time < ?1"}
        deleted = {}
        for table, condition in conditions.items():
            sql = (f"DELETE FROM {table} WHERE id IN "
                   f"(SELECT id FROM {table} WHERE {condition} LIMIT {DELETE_CHUNK})")
            deleted[table] = 0
            while True:
                count = self._write(lambda conn: conn.execute(sql, (cutoff,)).rowcount)
                deleted[table] += count
                if count < DELETE_CHUNK:
                    break
        return deleted

    # -- reads ----------------------------------------------------------------------------------

    @staticmethod
    def _decode(table: Table, cursor: sqlite3.Cursor) -> Iterable[dict]:
        names = [column[0] for column in cursor.description]
        for values in cursor:
            row = dict(zip(names, values))
            for column in table.json_columns:
                if row.get(column) is not None:
                    row[column] = json.loads(row[column])
            yield row

    def _where(self, table: Table, equal: Optional[dict] = None, since: Since = None,
               until: Since = None, search: Optional[str] = None) -> tuple[str, list]:
        """The WHERE clause (or "") and its parameters for these filters; column names come
        from this module, values are parameters."""
        where, params = [], []
        for column, value in (equal or {}).items():
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        for bound, operator in ((since, ">="), (until, "<=")):
            if bound is not None:
                where.append(f"{table.time_column} {operator} ?")
                params.append(self._time(bound))
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
            where.append("(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'"
                                           for column in table.search_columns) + ")")
            params.extend([pattern] * len(table.search_columns))
        return (" WHERE " + " AND ".join(where) if where else ""), params

    def _select(self, table_name: str, *, equal: Optional[dict] = None, since: Since = None,
                until: Since = None, search: Optional[str] = None, limit: Optional[int] = None,
                newest_first: bool = True) -> list[dict]:
        """Rows of one table matching every filter given, newest (or oldest) first."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or not 0 <= limit <= SQLITE_MAX_INTEGER):
            raise ValueError(f"limit must be a whole number from 0 to {SQLITE_MAX_INTEGER}, "
                             f"got {limit!r}")
        table = TABLES[table_name]
        where, params = self._where(table, equal, since, until, search)
        direction = "DESC" if newest_first else "ASC"
        sql = (f"SELECT * FROM {table.name}{where} "
               f"ORDER BY {table.time_column} {direction}, id {direction}")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self._retry(lambda: list(self._decode(table, self._conn.execute(sql, params))))

    def _count(self, table_name: str, **filters: Any) -> int:
        where, params = self._where(TABLES[table_name], **filters)
        sql = f"SELECT count(*) FROM {table_name}{where}"
        return self._retry(lambda: self._conn.execute(sql, params).fetchone()[0])

    def get_recent_events(self, limit: Optional[int] = 50,
                          filters: Optional[dict] = None) -> list[dict]:
        """Newest events first. ``filters``: event_type, source, charge_point_id (exact),
        since, until (times) and search (case-insensitive text in description or data)."""
        filters = dict(filters or {})
        unknown = set(filters) - {"event_type", "source", "charge_point_id", "since", "until",
                                  "search"}
        if unknown:
            raise ValueError(f"unknown event filter(s): {', '.join(sorted(unknown))}")
        return self._select("events", equal={key: filters.get(key) for key in
                                             ("event_type", "source", "charge_point_id")},
                            since=filters.get("since"), until=filters.get("until"),
                            search=filters.get("search"), limit=limit)

    def get_anomalies(self, limit: Optional[int] = 50, severity: Optional[str] = None,
                      anomaly_type: Optional[str] = None, charge_point_id: Optional[str] = None,
                      since: Since = None, until: Since = None) -> list[dict]:
        """Newest anomalies first, filtered by exact severity, type, charge point, time."""
        return self._select("anomalies", equal=self._anomaly_filters(
            severity, anomaly_type, charge_point_id), since=since, until=until, limit=limit)

    def count_anomalies(self, severity: Optional[str] = None, anomaly_type: Optional[str] = None,
                        charge_point_id: Optional[str] = None, since: Since = None,
                        until: Since = None) -> int:
        """How many anomalies get_anomalies(None, ...) would return, without reading them."""
        return self._count("anomalies", equal=self._anomaly_filters(
            severity, anomaly_type, charge_point_id), since=since, until=until)

    @staticmethod
    def _anomaly_filters(severity: Optional[str], anomaly_type: Optional[str],
                         charge_point_id: Optional[str]) -> dict:
        return {"severity": _severity(severity) if severity is not None else None,
                "anomaly_type": anomaly_type, "charge_point_id": charge_point_id}

    def get_sessions(self, limit: Optional[int] = 50, charge_point_id: Optional[str] = None,
                     since: Since = None) -> list[dict]:
        """Newest sessions first (by start time)."""
        return self._select("sessions", equal={"charge_point_id": charge_point_id},
                            since=since, limit=limit)

    def max_transaction_id(self) -> Optional[int]:
        """The highest integer transaction id of any session (ids stored as text are not
        numbers to count on), or None: where a central system goes on numbering."""
        sql = ("SELECT max(transaction_id) FROM sessions "
               "WHERE typeof(transaction_id) = 'integer'")
        return self._retry(lambda: self._conn.execute(sql).fetchone()[0])

    def get_metrics(self, name: str, charge_point_id: Optional[str] = None,
                    transaction_id: Optional[int] = None, since: Since = None,
                    until: Since = None, limit: Optional[int] = None,
                    source: Optional[str] = None) -> list[dict]:
        """Samples oldest first (for plotting); with ``limit``, the newest ``limit`` of them.

        The charge point and the central system record the same samples under their own
        ``source``: name one to see each sample once.
        """
        rows = self._select("metrics", equal={"name": name, "charge_point_id": charge_point_id,
                                              "transaction_id": transaction_id,
                                              "source": source},
                            since=since, until=until, limit=limit)
        rows.reverse()
        return rows

    def get_metric_names(self) -> list[str]:
        """The distinct metric names stored, in order."""
        return self._distinct("metrics", "name")

    def _distinct(self, table: str, column: str) -> list:
        """Distinct non-null values of a column that leads an index, by skipping along the
        index: one lookup per value. On a column without an index each lookup is a full scan."""
        sql = (f"WITH RECURSIVE found(value) AS (SELECT min({column}) FROM {table} UNION ALL "
               f"SELECT (SELECT min({column}) FROM {table} WHERE {column} > found.value) "
               f"FROM found WHERE found.value IS NOT NULL) "
               f"SELECT value FROM found WHERE value IS NOT NULL")
        return self._retry(lambda: [row[0] for row in self._conn.execute(sql)])

    def get_metric_sources(self) -> list[str]:
        """The distinct sources of metrics, in order: one scan of the table, as no index
        leads with ``source`` (one would slow every sample written to save this rare read)."""
        sql = "SELECT DISTINCT source FROM metrics WHERE source IS NOT NULL"
        return sorted(self._retry(lambda: [row[0] for row in self._conn.execute(sql)]))

    def get_metric_statistics(self, name: str, since: Since = None,
                              charge_point_id: Optional[str] = None,
                              source: Optional[str] = None) -> dict:
        """count, min, max, avg, stddev (population), latest value and its time and unit."""
        where, params = ["name = ?"], [name]
        if source is not None:
            where.append("source = ?")
            params.append(source)
        if since is not None:
            where.append("timestamp >= ?")
            params.append(self._time(since))
        if charge_point_id is not None:
            where.append("charge_point_id = ?")
            params.append(charge_point_id)
        condition = " AND ".join(where)

        def statistics(conn: sqlite3.Connection) -> dict:
            count, low, high, mean = conn.execute(
                f"SELECT count(value), min(value), max(value), avg(value) FROM metrics "
                f"WHERE {condition}", params).fetchone()
            result = {"name": name, "source": source, "count": count, "min": low, "max": high, "avg": mean,
                      "stddev": None, "latest": None, "latest_timestamp": None, "unit": None}
            if count:
                squares = conn.execute(f"SELECT sum((value - ?) * (value - ?)) FROM metrics "
                                       f"WHERE {condition}", (mean, mean, *params)).fetchone()[0]
                result["stddev"] = math.sqrt(squares / count)
                result["latest"], result["latest_timestamp"], result["unit"] = conn.execute(
                    f"SELECT value, timestamp, unit FROM metrics WHERE {condition} "
                    f"ORDER BY timestamp DESC, id DESC LIMIT 1", params).fetchone()
            return result
        return self._read(statistics)

    def get_pattern(self, name: str) -> Optional[dict]:
        rows = self._select("patterns", equal={"name": name}, limit=1)
        return rows[0] if rows else None

    def get_patterns(self) -> list[dict]:
        """Learned patterns, most recently seen first."""
        return self._select("patterns")

    def get_dashboard_summary(self) -> dict:
        """Totals for a dashboard, all from one snapshot of the database."""
        def summary(conn: sqlite3.Connection) -> dict:
            def one(sql: str) -> Any:
                return conn.execute(sql).fetchone()[0]
            by_severity = dict.fromkeys(SEVERITIES, 0)
            by_severity.update(conn.execute(
                "SELECT severity, count(*) FROM anomalies GROUP BY severity").fetchall())
            last_anomaly = self._select("anomalies", limit=1)
            sessions, active, energy = conn.execute(
                "SELECT count(*), count(*) - count(end_time), coalesce(sum(energy_wh), 0) "
                "FROM sessions").fetchone()
            return {
                "database": str(self.path),
                "schema_version": self._user_version(),
                "total_events": one("SELECT count(*) FROM events"),
                "first_event": one("SELECT min(timestamp) FROM events"),
                "last_event": one("SELECT max(timestamp) FROM events"),
                "event_types": dict(conn.execute(
                    "SELECT event_type, count(*) AS n FROM events GROUP BY event_type "
                    "ORDER BY n DESC, event_type").fetchall()),
                "charge_points": self._distinct("events", "charge_point_id"),
                "total_anomalies": sum(by_severity.values()),
                "anomalies_by_severity": by_severity,
                "last_anomaly": last_anomaly[0] if last_anomaly else None,
                "total_sessions": sessions,
                "active_sessions": active,
                "total_energy_wh": energy,
                "total_metrics": one("SELECT count(*) FROM metrics"),
                "total_patterns": one("SELECT count(*) FROM patterns"),
            }
        return self._read(summary)

    def check_export_path(self, path: Union[str, os.PathLike]) -> None:
        """ValueError if ``path`` is this database or a file SQLite keeps beside it (``-wal``,
        ``-shm``, ``-journal``), under any name: writing an export there would destroy it."""
        database = self.path.resolve()
        own = [database.with_name(database.name + suffix)
               for suffix in ("", "-wal", "-shm", "-journal")]
        for file in own:
            try:
                same = Path(path).resolve() == file or os.path.samefile(path, file)
            except OSError:  # one of them does not exist
                same = False
            if same:
                raise ValueError(f"{path} is the MemoryBank database {self.path} or one of "
                                 f"its files: export to another file")

    def export_json(self, path: Union[str, os.PathLike]) -> dict[str, int]:
        """Write every table to one JSON file (atomically, from one snapshot); returns row counts.

        The file: ``{"schema_version", "exported_at", "database", "events": [...], ...}`` with
        rows as the get_* methods return them, oldest first. ValueError for a path that is the
        database itself (see :meth:`check_export_path`).
        """
        self.check_export_path(path)
        path = Path(path)
        partial = path.with_name(path.name + ".partial")

        def export(conn: sqlite3.Connection) -> dict[str, int]:
            counts = {}
            with open(partial, "w", encoding="utf-8") as out:
                header = {"schema_version": self._user_version(),
                          "exported_at": format_timestamp(self.clock()),
                          "database": str(self.path)}
                out.write(json.dumps(header, indent=1)[:-2])
                for table in TABLES.values():
                    out.write(f',\n "{table.name}": [')
                    counts[table.name] = 0
                    cursor = conn.execute(f"SELECT * FROM {table.name} ORDER BY id")
                    for row in self._decode(table, cursor):
                        out.write(("\n  " if not counts[table.name] else ",\n  ")
                                  + json.dumps(row, ensure_ascii=False))
                        counts[table.name] += 1
                    out.write("\n ]" if counts[table.name] else "]")
                out.write("\n}\n")
            os.replace(partial, path)
            return counts
        try:
            return self._read(export)
        finally:
            partial.unlink(missing_ok=True)

    def to_dataframe(self, table: str, **filters: Any):
        """A pandas DataFrame of one table, oldest first, times as UTC datetimes.

        ``filters``: any column name (exact match), ``since``, ``until``, ``limit`` (the newest
        rows) and, for events, ``search``. pandas is optional: ImportError says how to get it.
        """
        try:
            import pandas
        except ImportError:
            raise ImportError("MemoryBank.to_dataframe needs pandas: pip install pandas") from None
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}: expected one of {', '.join(TABLES)}")
        spec = TABLES[table]
        options = {key: filters.pop(key) for key in ("since", "until", "limit", "search")
                   if key in filters}
        unknown = set(filters) - set(spec.columns) - {"id"}
        if unknown or (options.get("search") and not spec.search_columns):
            raise ValueError(f"unknown filter(s) for {table}: "
                             f"{', '.join(sorted(unknown) or ['search'])}")
        rows = self._select(table, equal=filters, **options)
        rows.reverse()
        frame = pandas.DataFrame(rows, columns=["id", *spec.columns])
        for column in ("timestamp", "start_time", "end_time", "first_seen", "last_seen"):
            if column in frame:
                frame[column] = pandas.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame
