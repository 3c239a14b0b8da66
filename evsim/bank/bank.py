"""MemoryBank: the site's persistent memory, one SQLite file shared by every process.

Seven tables (:mod:`~evsim.bank.schema`): ``events`` (OCPP messages, CAN frames, system events),
``anomalies``, ``sessions`` (one per charging transaction), ``metrics`` (current, voltage, power,
energy samples), ``patterns`` (learned behaviour, one row per name), ``id_tags`` (the central
system's id-tag list) and ``labels`` (the ground truth of injected faults). How several processes
write at once without losing a row is :mod:`~evsim.bank.connection`'s job; reads go through
:func:`~evsim.bank.query.rows_where`; exports stream (:mod:`~evsim.bank.export`).

Timestamps are UTC text in one fixed format, ``2024-05-01T12:00:00.000000Z``, so text order is
time order and the indexes serve time ranges. Methods accept a ``datetime`` (naive is taken as
UTC), an ISO-8601 string, epoch seconds, or ``None`` for now; ``since`` also takes a ``timedelta``
meaning that long before now.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Optional, Union

from evsim.bank import aggregates, export, idtags, query, updates, values
from evsim.bank.connection import Connection, default_db_path
from evsim.bank.schema import TABLES
from evsim.bank.values import Since, Timestamp
from evsim.constants import RECORDER
from evsim.timefmt import utc_now

EVENT_FILTERS = ("event_type", "source", "charge_point_id")
METRICS_AFTER_SQL = ("SELECT * FROM metrics WHERE id > ? AND id <= ? AND +name = ? "
                     "AND +charge_point_id = ? AND +source = ? ORDER BY id")


#: The most rows one INSERT of a batch carries (a power of two, see :func:`_chunks`); times a
#: table's columns, within the 999 parameters a statement may bind in any SQLite.
ROWS_PER_INSERT = 64


@lru_cache(maxsize=256)
def _insert_sql(table: str, columns: tuple[str, ...], rows: int = 1) -> str:
    values = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([values] * rows)}"


def _chunks(rows: list[tuple], most: int) -> Iterator[list[tuple]]:
    """``rows`` in runs of ``most`` (a power of two), the rest in runs of falling powers of two:
    few distinct statements, so that each stays prepared in the connection's cache."""
    start = 0
    while start < len(rows):
        size = min(most, 1 << ((len(rows) - start).bit_length() - 1))
        yield rows[start:start + size]
        start += size


class MemoryBank:
    """One connection to the MemoryBank file; see :mod:`~evsim.bank.connection` for the
    guarantees. ``clock`` returns the current time as an aware datetime (tests inject one).
    A MemoryBank may be shared by the threads of one process."""

    def __init__(self, path: Union[str, os.PathLike, None] = None, *, readonly: bool = False,
                 busy_timeout: float = 5.0, clock: Callable[[], datetime] = utc_now):
        self.path = Path(path) if path is not None else default_db_path()
        self.readonly = readonly
        self.clock = clock
        #: The connection, for :func:`~evsim.bank.query.rows_where` and friends.
        self.connection = Connection(self.path, readonly=readonly, busy_timeout=busy_timeout)

    def __enter__(self) -> MemoryBank:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemoryBank({str(self.path)!r}{', readonly=True' if self.readonly else ''})"

    def close(self) -> None:
        self.connection.close()

    @property
    def _conn(self) -> sqlite3.Connection:
        """The sqlite3 connection, for tests and measurements that look underneath."""
        return self.connection.sqlite

    @property
    def schema_version(self) -> int:
        return self.connection.retry(self.connection.user_version)

    def _time(self, value: Since) -> str:
        return values.stored_time(value, self.clock)

    # -- writes ---------------------------------------------------------------------------------

    def _insert(self, table: str, columns: Iterable[str], row: tuple) -> int:
        sql = _insert_sql(table, tuple(columns))
        return self.connection.write(lambda conn: conn.execute(sql, row).lastrowid)

    def _insert_many(self, table: str, rows: list[tuple]) -> int:
        """``rows`` in one transaction, many to a statement: SQLite runs a statement without
        holding the GIL, and one row to a statement (``executemany``) hands the GIL back and
        forth with a busy event loop's thread for every row. Measured with 2,000 charge points
        beside their central system: its writer 1.1 s behind the samples instead of 10.1 s;
        alone it is slower (an A/B run of 100,000 events: 70,000 rows/s instead of 104,000)."""
        columns = TABLES[table].columns

        def insert(conn: sqlite3.Connection) -> None:
            for chunk in _chunks(rows, ROWS_PER_INSERT):
                conn.execute(_insert_sql(table, columns, len(chunk)),
                             [value for row in chunk for value in row])
        if rows:
            self.connection.write(insert)
        return len(rows)

    def log_event(self, event_type: str, source: str, description: str, data: Any = None,
                  charge_point_id: Optional[str] = None, timestamp: Timestamp = None) -> int:
        """Store one event; ``data`` is any JSON value (a string must be JSON text).
        Returns its id."""
        row = values.event_row(self.clock, event_type, source, description, data,
                               charge_point_id, timestamp)
        return self._insert("events", TABLES["events"].columns, row)

    def log_events(self, events: Iterable[dict]) -> int:
        """Store many events (dicts with log_event's keyword names) in one transaction."""
        return self._insert_many("events", values.rows(
            events, partial(values.event_row, self.clock), "event"))

    def record_anomaly(self, anomaly_type: str, severity: str, description: str,
                       current_value: Optional[float] = None,
                       expected_value: Optional[float] = None, deviation: Optional[float] = None,
                       pattern: Any = None, charge_point_id: Optional[str] = None,
                       transaction_id: Optional[int] = None, timestamp: Timestamp = None) -> int:
        """Store one anomaly; severity is LOW, MEDIUM, HIGH or CRITICAL. Returns its id."""
        fields = values.anomaly_fields(self.clock, dict(
            timestamp=timestamp, anomaly_type=anomaly_type, severity=severity,
            description=description, current_value=current_value, expected_value=expected_value,
            deviation=deviation, pattern=pattern, charge_point_id=charge_point_id,
            transaction_id=transaction_id))
        return self._insert("anomalies", fields, tuple(fields.values()))

    def update_anomaly(self, anomaly_id: int, **fields: Any) -> None:
        """Change some fields of a stored anomaly (an episode that grows); ValueError if none."""
        if not fields:
            return
        encoded = values.anomaly_fields(self.clock, fields)
        sql = f"UPDATE anomalies SET {', '.join(f'{name} = ?' for name in encoded)} WHERE id = ?"
        params = (*encoded.values(), anomaly_id)
        if not self.connection.write(lambda conn: conn.execute(sql, params).rowcount):
            raise ValueError(f"no anomaly with id {anomaly_id!r}")

    def record_metric(self, name: str, value: float, unit: Optional[str], source: Optional[str],
                      charge_point_id: Optional[str] = None, transaction_id: Optional[int] = None,
                      timestamp: Timestamp = None) -> int:
        """Store one sample (names used: current A, voltage V, power W, energy Wh)."""
        row = values.metric_row(self.clock, name, value, unit, source, charge_point_id,
                                transaction_id, timestamp)
        return self._insert("metrics", TABLES["metrics"].columns, row)

    def record_metrics(self, metrics: Iterable[dict]) -> int:
        """Store many samples (dicts with record_metric's keyword names) in one transaction."""
        return self._insert_many("metrics", values.rows(
            metrics, partial(values.metric_row, self.clock), "metric"))

    def start_session(self, charge_point_id: str, transaction_id: int,
                      start_time: Timestamp = None, meter_start_wh: Optional[float] = None,
                      id_tag: Optional[str] = None) -> int:
        """Open the session of a transaction; returns its row id."""
        fields = values.session_start(self.clock, charge_point_id, transaction_id, start_time,
                                      meter_start_wh, id_tag)
        return self._insert("sessions", fields, tuple(fields.values()))

    def end_session(self, charge_point_id: str, transaction_id: int, end_time: Timestamp = None,
                    energy_wh: Optional[float] = None, stop_reason: Optional[str] = None,
                    meter_stop_wh: Optional[float] = None, min_current: Optional[float] = None,
                    avg_current: Optional[float] = None, max_current: Optional[float] = None,
                    sample_count: Optional[int] = None) -> None:
        """Close the newest open session of this transaction (one is made if none was started).

        Current figures not given come from the transaction's 'current' samples between its
        start and end, from one source (:func:`~evsim.bank.updates.session_currents`).
        Energy not given is meter_stop_wh - meter_start_wh when both are known.
        """
        values.text(charge_point_id, "charge_point_id")
        values.valid_transaction_id(transaction_id)
        given = values.session_end(
            self.clock, end_time=end_time, energy_wh=energy_wh, stop_reason=stop_reason,
            meter_stop_wh=meter_stop_wh, min_current=min_current, avg_current=avg_current,
            max_current=max_current, sample_count=sample_count)
        self.connection.write(lambda conn: updates.close_session(
            conn, charge_point_id, transaction_id, given))

    def learn_pattern(self, name: str, parameters: Any, confidence: Optional[float] = None,
                      timestamp: Timestamp = None) -> int:
        """Upsert by name: a new pattern counts 1; a known one counts +1 and takes the new
        parameters (and confidence, when given). Returns its id."""
        row = (values.text(name, "pattern name"),
               values.to_json(parameters, "parameters") or "null",
               values.number(confidence, "confidence"), self._time(timestamp))
        return self.connection.write(lambda conn: updates.upsert_pattern(conn, *row))

    def put_id_tag(self, id_tag: str, status: str = "Accepted", expiry_date: Timestamp = None,
                   parent_id_tag: Optional[str] = None) -> None:
        """Create or change an id tag of the central system's list (status Accepted, Blocked,
        Expired or Invalid)."""
        row = idtags.row(self.clock, id_tag, status, expiry_date, parent_id_tag)
        self.connection.write(lambda conn: idtags.upsert(conn, row))

    def delete_id_tag(self, id_tag: str) -> bool:
        """Remove an id tag; False if there was none."""
        return self.connection.write(lambda conn: idtags.delete(conn, id_tag))

    def replace_id_tags(self, tags: Iterable[dict]) -> int:
        """Replace the whole id-tag list (dicts with put_id_tag's keyword names) in one
        transaction; every tag is checked before anything is written. Returns the tags stored."""
        rows = values.rows(tags, partial(idtags.row, self.clock), "id tag")
        return self.connection.write(lambda conn: idtags.replace_all(conn, rows))

    def record_label(self, charge_point_id: str, anomaly_type: str, start: Timestamp,
                     end: Timestamp, parameters: Any = None, seed: Optional[int] = None,
                     source: str = "") -> int:
        """Store one label of ground truth: ``anomaly_type`` should be detected on
        ``charge_point_id`` from ``start`` to ``end`` (None: still open). ``parameters`` is any
        JSON value (the fault's kind, parameters and the run's ``speed``), ``seed`` the run's
        seed, ``source`` the process that injected it. Returns its id. No detector reads these."""
        row = values.label_row(self.clock, charge_point_id, anomaly_type, start, end,
                               parameters, seed, source)
        return self._insert("labels", TABLES["labels"].columns, row)

    def clean_old_data(self, days: float = 7) -> dict[str, int]:
        """Delete events, anomalies, metrics, finished sessions and ended labels older than
        ``days``.

        Learned patterns are kept. Deletes go in small transactions so writers never wait long
        (:func:`~evsim.bank.updates.delete_older_than`). Returns the rows deleted per table.
        """
        return updates.delete_older_than(self.connection, values.days_ago(days, self.clock))

    # -- reads: thin wrappers over query.rows_where ---------------------------------------------

    def _select(self, table: str, **filters: Any) -> list[dict]:
        return list(query.rows_where(self.connection, table, clock=self.clock, **filters))

    def get_recent_events(self, limit: Optional[int] = 50,
                          filters: Optional[dict] = None) -> list[dict]:
        """Newest events first. ``filters``: event_type, source, charge_point_id (exact),
        since, until (times) and search (case-insensitive text in description or data)."""
        filters = dict(filters or {})
        unknown = set(filters) - {*EVENT_FILTERS, "since", "until", "search"}
        if unknown:
            raise ValueError(f"unknown event filter(s): {', '.join(sorted(unknown))}")
        return self._select("events", equal={key: filters.get(key) for key in EVENT_FILTERS},
                            since=filters.get("since"), until=filters.get("until"),
                            search=filters.get("search"), limit=limit)

    def get_anomalies(self, limit: Optional[int] = 50, severity: Optional[str] = None,
                      anomaly_type: Optional[str] = None, charge_point_id: Optional[str] = None,
                      since: Since = None, until: Since = None) -> list[dict]:
        """Newest anomalies first, filtered by exact severity, type, charge point, time."""
        return self._select("anomalies", equal=_anomaly_filters(
            severity, anomaly_type, charge_point_id), since=since, until=until, limit=limit)

    def count_anomalies(self, severity: Optional[str] = None, anomaly_type: Optional[str] = None,
                        charge_point_id: Optional[str] = None, since: Since = None,
                        until: Since = None) -> int:
        """How many anomalies get_anomalies(None, ...) would return, without reading them."""
        return query.count_where(self.connection, "anomalies", equal=_anomaly_filters(
            severity, anomaly_type, charge_point_id), since=since, until=until, clock=self.clock)

    def get_labels(self, limit: Optional[int] = None, anomaly_type: Optional[str] = None,
                   charge_point_id: Optional[str] = None, source: Optional[str] = None,
                   since: Since = None, until: Since = None) -> list[dict]:
        """Labels (ground truth) newest first by start, every one unless ``limit``; filtered
        by exact type, charge point, source, and start time."""
        return self._select("labels", equal={"anomaly_type": anomaly_type,
                                             "charge_point_id": charge_point_id,
                                             "source": source},
                            since=since, until=until, limit=limit)

    def get_labels_overlapping(self, since: Since = None, until: Since = None,
                               charge_point_id: Optional[str] = None) -> list[dict]:
        """Labels whose interval meets ``since``..``until`` (None: unbounded), oldest first by
        start; an open label has no end. get_labels bounds only the start, and would miss a
        label that began before ``since`` and lasts into it."""
        where: list[str] = []
        params: list[str] = []
        if until is not None:
            where.append("start <= ?")
            params.append(self._time(until))
        if since is not None:
            where.append('("end" IS NULL OR "end" >= ?)')
            params.append(self._time(since))
        if charge_point_id is not None:
            where.append("charge_point_id = ?")
            params.append(charge_point_id)
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT * FROM labels{condition} ORDER BY start, id"
        return self.connection.read(
            lambda conn: list(query.decoded(TABLES["labels"], conn.execute(sql, params))))

    def get_sessions(self, limit: Optional[int] = 50, charge_point_id: Optional[str] = None,
                     since: Since = None) -> list[dict]:
        """Newest sessions first (by start time)."""
        return self._select("sessions", equal={"charge_point_id": charge_point_id},
                            since=since, limit=limit)

    def open_sessions(self) -> list[dict]:
        """The sessions not ended, oldest first."""
        def read(conn: sqlite3.Connection) -> list[dict]:
            cursor = conn.execute("SELECT * FROM sessions WHERE end_time IS NULL "
                                  "ORDER BY start_time, id")
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor]
        return self.connection.read(read)

    def max_transaction_id(self) -> Optional[int]:
        """The highest integer transaction id of any session (ids stored as text are not
        numbers to count on), or None: where a central system goes on numbering."""
        sql = "SELECT max(transaction_id) FROM sessions WHERE typeof(transaction_id) = 'integer'"
        return self.connection.read(lambda conn: conn.execute(sql).fetchone()[0])

    def get_metrics(self, name: str, charge_point_id: Optional[str] = None,
                    transaction_id: Optional[int] = None, since: Since = None,
                    until: Since = None, limit: Optional[int] = None,
                    source: Optional[str] = None) -> list[dict]:
        """Samples oldest first (for plotting); with ``limit``, the newest ``limit`` of them.

        The charge point and the central system record the same samples under their own
        ``source``: name one to see each sample once.
        """
        equal = {"name": name, "charge_point_id": charge_point_id,
                 "transaction_id": transaction_id, "source": source}
        if limit is None:
            return self._select("metrics", equal=equal, since=since, until=until, order="oldest")
        rows = self._select("metrics", equal=equal, since=since, until=until, limit=limit)
        rows.reverse()
        return rows

    def get_metric_names(self) -> list[str]:
        """The distinct metric names stored, in order."""
        return self.connection.read(lambda conn: query.distinct(conn, "metrics", "name"))

    def get_metric_sources(self) -> list[str]:
        """The distinct sources of metrics, in order: one scan of the table, as no index
        leads with ``source`` (one would slow every sample written to save this rare read)."""
        sql = "SELECT DISTINCT source FROM metrics WHERE source IS NOT NULL"
        return sorted(self.connection.read(lambda conn: [row[0] for row in conn.execute(sql)]))

    def get_metric_statistics(self, name: str, since: Since = None,
                              charge_point_id: Optional[str] = None,
                              source: Optional[str] = None) -> dict:
        """count, min, max, avg, stddev (population), latest value and its time and unit."""
        since = None if since is None else self._time(since)
        return self.connection.read(lambda conn: aggregates.metric_statistics(
            conn, name, since=since, charge_point_id=charge_point_id, source=source))

    def get_pattern(self, name: str) -> Optional[dict]:
        rows = self._select("patterns", equal={"name": name}, limit=1)
        return rows[0] if rows else None

    def get_patterns(self) -> list[dict]:
        """Learned patterns, most recently seen first."""
        return self._select("patterns")

    def get_id_tags(self) -> list[dict]:
        """The central system's id tags, in id_tag order."""
        return self.connection.read(idtags.select)

    def get_id_tag(self, id_tag: str) -> Optional[dict]:
        rows = self.connection.read(lambda conn: idtags.select(conn, id_tag))
        return rows[0] if rows else None

    def get_dashboard_summary(self) -> dict:
        """Totals for a dashboard, all from one snapshot of the database."""
        return self.connection.read(lambda conn: {
            "database": str(self.path), "schema_version": self.connection.user_version(),
            **aggregates.dashboard_summary(conn)})

    def get_fleet(self, since: Since = None, recorder: str = RECORDER) -> list[dict]:
        """One row per charge point, in id order, from one snapshot: status, connection,
        sessions, energy, anomalies and last seen (:func:`~evsim.bank.aggregates.fleet`)."""
        low = None if since is None else self._time(since)
        return self.connection.read(lambda conn: aggregates.fleet(conn, recorder, low))

    def last_metric_id(self) -> int:
        """The id of the newest sample written (0: none): where a follower starts."""
        sql = "SELECT coalesce(max(id), 0) FROM metrics"
        return self.connection.read(lambda conn: conn.execute(sql).fetchone()[0])

    def get_metrics_after(self, after_id: int, name: str, charge_point_id: str,
                          source: str) -> tuple[list[dict], int]:
        """The samples written after row ``after_id`` (in the order written) and the id to ask
        after next time, from one snapshot. Only the rows written since are read, whatever the
        table holds: the unary ``+`` keeps SQLite on the rowid range rather than on an index of
        the charge point, which would read all its history at every poll."""
        def read(conn: sqlite3.Connection) -> tuple[list[dict], int]:
            top = conn.execute("SELECT coalesce(max(id), 0) FROM metrics").fetchone()[0]
            cursor = conn.execute(METRICS_AFTER_SQL, (after_id, top, name, charge_point_id,
                                                      source))
            return list(query.decoded(TABLES["metrics"], cursor)), max(top, after_id)
        return self.connection.read(read)

    # -- exports --------------------------------------------------------------------------------

    def check_export_path(self, path: Union[str, os.PathLike]) -> None:
        """ValueError if ``path`` is this database or a file SQLite keeps beside it (``-wal``,
        ``-shm``, ``-journal``), under any name: writing an export there would destroy it."""
        export.check_export_path(self.path, path)

    def export_json(self, path: Union[str, os.PathLike]) -> dict[str, int]:
        """Write every table to one JSON file (atomically, from one snapshot, streamed);
        returns row counts. See :func:`evsim.bank.export.export_json` for the layout."""
        return export.export_json(self.connection, path, clock=self.clock)

    def export_csv(self, path: Union[str, os.PathLike], table: str = "events",
                   **filters: Any) -> int:
        """Write the rows of one table that match ``filters`` as CSV, oldest first (atomically,
        streamed); returns the rows written. See :func:`evsim.bank.export.export_csv`."""
        return export.export_csv(self.connection, path, table, clock=self.clock, **filters)

    def export_dataset(self, directory: Union[str, os.PathLike], **filters: Any) -> dict:
        """Metrics, events, labels and anomalies as one CSV file per table in ``directory``
        (which must be missing or empty: ValueError otherwise), and as Parquet too when pyarrow
        is installed, from one snapshot, streamed. ``filters``: charge_point_id, since, until.
        Returns ``{"rows": {table: count}, "formats": ["csv", ...]}``."""
        pyarrow = export.pyarrow_module()
        rows = export.export_dataset(self.connection, directory, clock=self.clock,
                                     parquet=pyarrow, **filters)
        return {"rows": rows, "formats": ["csv"] + (["parquet"] if pyarrow else [])}

    def to_dataframe(self, table: str, **filters: Any):
        """A pandas DataFrame of one table, oldest first, times as UTC datetimes.

        ``filters``: any column name (exact match), ``since``, ``until``, ``limit`` (the newest
        rows) and, for events, ``search``. pandas is optional: ImportError says how to get it.
        """
        return export.to_dataframe(self.connection, table, clock=self.clock, **filters)


def _anomaly_filters(severity: Optional[str], anomaly_type: Optional[str],
                     charge_point_id: Optional[str]) -> dict:
    return {"severity": values.severity(severity) if severity is not None else None,
            "anomaly_type": anomaly_type, "charge_point_id": charge_point_id}
