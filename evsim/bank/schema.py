"""The MemoryBank's tables: their SQL, their migrations, and what the generic code knows of them.

The schema version is SQLite's ``PRAGMA user_version``. :data:`MIGRATIONS` maps each version to
the statements that bring the version before it there; :data:`SCHEMA_VERSION` is the highest.
A schema change is one new entry, ``2: (...)``; a step that has shipped is never edited, because
databases already migrated by it would not be migrated again.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    """What the generic query and export code needs to know about a table."""
    name: str
    columns: tuple[str, ...]
    #: The column that orders rows in time and that ``since``/``until`` bound.
    time_column: str
    #: Columns stored as JSON text, decoded on reading.
    json_columns: tuple[str, ...] = ()
    #: Columns that ``search`` looks in.
    search_columns: tuple[str, ...] = ()

    @property
    def time_columns(self) -> tuple[str, ...]:
        """Every column that holds a stored timestamp."""
        return tuple(column for column in self.columns if column in TIME_COLUMNS)


#: The names of every column that holds a stored timestamp, in any table.
TIME_COLUMNS = frozenset({"timestamp", "start_time", "end_time", "first_seen", "last_seen",
                          "expiry_date", "updated", "start", "end"})

TABLES: dict[str, Table] = {table.name: table for table in (
    Table("events", ("timestamp", "event_type", "source", "description", "data", "charge_point_id"),
          "timestamp", ("data",), ("description", "data")),
    Table("anomalies", ("timestamp", "anomaly_type", "severity", "description", "current_value",
                        "expected_value", "deviation", "pattern", "charge_point_id",
                        "transaction_id", "end_time"),
          "timestamp", ("pattern",), ("description",)),
    Table("sessions", ("charge_point_id", "transaction_id", "id_tag", "start_time", "end_time",
                       "meter_start_wh", "meter_stop_wh", "energy_wh", "min_current",
                       "avg_current", "max_current", "sample_count", "stop_reason"),
          "start_time"),
    Table("metrics", ("timestamp", "name", "value", "unit", "source", "charge_point_id",
                      "transaction_id"), "timestamp"),
    Table("patterns", ("name", "parameters", "occurrences", "confidence", "first_seen",
                       "last_seen"), "last_seen", ("parameters",)),
    Table("id_tags", ("id_tag", "status", "expiry_date", "parent_id_tag", "updated"), "updated"),
    Table("labels", ("charge_point_id", "anomaly_type", "start", "end", "parameters", "seed",
                     "source"), "start", ("parameters",)),
)}


def table_named(name: str) -> Table:
    """The table called ``name``; ValueError naming the known ones otherwise."""
    try:
        return TABLES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown table {name!r}: expected one of {', '.join(TABLES)}") from None


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

#: Version 2: the central system's id tags (csms.py --id-tags and the control API), one row per
#: tag, compared without letter case as OCPP's CiString is; the statuses a list may hold
#: (ConcurrentTx is decided, never stored).
SCHEMA_V2 = (
    """CREATE TABLE id_tags (
        id INTEGER PRIMARY KEY,
        id_tag TEXT NOT NULL UNIQUE COLLATE NOCASE,
        status TEXT NOT NULL CHECK (status IN ('Accepted', 'Blocked', 'Expired', 'Invalid')),
        expiry_date TEXT,
        parent_id_tag TEXT,
        updated TEXT NOT NULL)""",
)

#: Version 3: ground truth, one row per interval in which an injected fault (or a scenario's
#: misbehaviour) showed (:mod:`evsim.faults.labels`): which charge point, the ``anomaly_type`` a
#: detector should record, its start and end (no end: still open), the fault's parameters (JSON),
#: the seed and the process that injected it. Written by the injectors, read by the score and the
#: dataset export, never by a detector.
SCHEMA_V3 = (
    """CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        charge_point_id TEXT NOT NULL,
        anomaly_type TEXT NOT NULL,
        start TEXT NOT NULL,
        "end" TEXT,
        parameters TEXT,
        seed INTEGER,
        source TEXT NOT NULL)""",
    "CREATE INDEX labels_start ON labels (start)",
    "CREATE INDEX labels_type ON labels (anomaly_type, start)",
    "CREATE INDEX labels_charge_point ON labels (charge_point_id, start)",
)

#: Version 4: when an anomaly's episode ended (NULL: still going, or recorded before version 4),
#: so that a chart or a dataset has each episode's extent without reading its description.
SCHEMA_V4 = ("ALTER TABLE anomalies ADD COLUMN end_time TEXT",)

#: Schema version -> the statements that bring the previous version to it.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: SCHEMA_V1,
    2: SCHEMA_V2,
    3: SCHEMA_V3,
    4: SCHEMA_V4,
}

#: The version this program writes and reads.
SCHEMA_VERSION = max(MIGRATIONS)
