"""Writing the MemoryBank out: JSON (every table), CSV (one table), a dataset (a directory of
one CSV file, and a Parquet file when pyarrow is installed, per table) and pandas.

The files are streamed: each row is written as it is read, from one read snapshot, so an export
of millions of rows needs no more memory than one row and never mixes two moments of the
database. A file appears whole or not at all: rows go to ``<name>.partial``, renamed over the
target only once complete. A target that is the database or one of SQLite's files beside it is
refused under any name, because opening it for writing would destroy the database.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Union

from evsim.bank import query
from evsim.bank.connection import Connection
from evsim.bank.schema import TABLES, Table, table_named
from evsim.bank.values import Clock
from evsim.timefmt import format_timestamp, parse_timestamp

PathLike = Union[str, os.PathLike]


def check_export_path(database: Path, path: PathLike) -> None:
    """ValueError if ``path`` is ``database`` or a file SQLite keeps beside it (``-wal``,
    ``-shm``, ``-journal``), under any name (a symlink, a hard link, ``..``)."""
    resolved = database.resolve()
    own = [resolved.with_name(resolved.name + suffix)
           for suffix in ("", "-wal", "-shm", "-journal")]
    for file in own:
        try:
            same = Path(path).resolve() == file or os.path.samefile(path, file)
        except OSError:  # one of them does not exist
            same = False
        if same:
            raise ValueError(f"{path} is the MemoryBank database {database} or one of "
                             f"its files: export to another file")


@contextmanager
def atomic_file(path: PathLike, **options: Any) -> Iterator[IO[str]]:
    """A text file written as ``<path>.partial`` and renamed to ``path`` when the block ends
    without an exception; the partial file never stays behind."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "w", encoding="utf-8", **options) as out:
            yield out
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def export_json(connection: Connection, path: PathLike, *, clock: Clock) -> dict[str, int]:
    """Every table to one JSON file; returns the rows written per table.

    ``{"schema_version", "exported_at", "database", "events": [...], ...}``, rows as the
    MemoryBank's get_* methods return them, oldest first.
    """
    check_export_path(connection.path, path)

    def export(conn) -> dict[str, int]:
        counts = {}
        with atomic_file(path) as out:
            header = {"schema_version": connection.user_version(),
                      "exported_at": format_timestamp(clock()),
                      "database": str(connection.path)}
            out.write(json.dumps(header, indent=1)[:-2])
            for table in TABLES.values():
                out.write(f',\n "{table.name}": [')
                count = 0
                for row in query.rows_where(conn, table, order="oldest", clock=clock):
                    out.write(("\n  " if not count else ",\n  ")
                              + json.dumps(row, ensure_ascii=False))
                    count += 1
                out.write("\n ]" if count else "]")
                counts[table.name] = count
            out.write("\n}\n")
        return counts
    return connection.read(export)


def export_csv(connection: Connection, path: PathLike, table: str = "events", *, clock: Clock,
               **filters: Any) -> int:
    """The rows of one table that match ``filters`` (any column for an exact match, ``since``,
    ``until``, and ``search`` where the table has text to search) as CSV, oldest first, with a
    header row of column names. JSON columns hold the stored JSON text; None is an empty
    field. Returns the rows written."""
    spec = table_named(table)
    equal, options = query.split_filters(spec, filters)
    if "limit" in options:
        raise ValueError("export_csv takes no limit: filter by time with since and until")
    check_export_path(connection.path, path)
    return connection.read(
        lambda conn: _write_csv(conn, path, spec, equal, options, clock=clock))


def _write_csv(conn, path: PathLike, spec: Table, equal: dict, options: dict, *,
               clock: Clock) -> int:
    columns = ("id", *spec.columns)
    rows = query.rows_where(conn, spec, equal=equal, order="oldest", decode=False, clock=clock,
                            **options)
    count = 0
    with atomic_file(path, newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[column] for column in columns])
            count += 1
    return count


# -- the dataset: one file per table ---------------------------------------------------------

#: The tables of a dataset, in the order they are written.
DATASET_TABLES = ("metrics", "events", "labels", "anomalies")
#: Rows per Parquet row group (and per batch held in memory).
PARQUET_BATCH = 10_000


def pyarrow_module() -> Any:
    """pyarrow (with its parquet module loaded) when it can be imported, else None."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        return None
    return pyarrow


def check_dataset_directory(directory: PathLike) -> None:
    """ValueError unless ``directory`` is missing or an empty directory: a dataset never
    overwrites or mixes with files already there."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{directory} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise ValueError(f"{directory} is not empty: export the dataset to a new or empty "
                         f"directory")


def export_dataset(connection: Connection, directory: PathLike, *, clock: Clock,
                   tables: tuple[str, ...] = DATASET_TABLES, parquet: Any = None,
                   **filters: Any) -> dict[str, int]:
    """Each of ``tables`` as ``<directory>/<table>.csv`` (as :func:`export_csv` writes it)
    and, when ``parquet`` is the pyarrow module, ``<table>.parquet`` as well, all from one
    read snapshot, streamed; returns the rows written per table. ``filters`` (columns every
    table has, ``since``, ``until``) apply to each. ``directory`` must be missing or empty
    (ValueError); it is created."""
    specs = [table_named(table) for table in tables]
    split = [(spec, *query.split_filters(spec, filters)) for spec in specs]
    if any("limit" in options or options.get("search") for _, _, options in split):
        raise ValueError("export_dataset takes no limit nor search: filter by time with since "
                         "and until")
    check_dataset_directory(directory)
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)

    def export(conn) -> dict[str, int]:
        counts = {}
        for spec, equal, options in split:
            counts[spec.name] = _write_csv(conn, path / f"{spec.name}.csv", spec, equal,
                                           options, clock=clock)
            if parquet is not None:
                _write_parquet(parquet, conn, path / f"{spec.name}.parquet", spec, equal,
                               options, clock=clock)
        return counts
    return connection.read(export)


def parquet_schema(pyarrow: Any, conn, spec: Table) -> Any:
    """The Parquet schema of a table: times as UTC microseconds, INTEGER as int64 (but
    ``transaction_id``, which OCPP lets be text, as a string), REAL as float64, the rest (JSON
    columns too, as their stored text) as strings."""
    declared = {row[1]: (row[2] or "").upper()
                for row in conn.execute(f"PRAGMA table_info({spec.name})")}
    fields = []
    for column in ("id", *spec.columns):
        if column in spec.time_columns:
            kind = pyarrow.timestamp("us", tz="UTC")
        elif column == "transaction_id":
            kind = pyarrow.string()
        elif declared.get(column) == "INTEGER":
            kind = pyarrow.int64()
        elif declared.get(column) == "REAL":
            kind = pyarrow.float64()
        else:
            kind = pyarrow.string()
        fields.append(pyarrow.field(column, kind))
    return pyarrow.schema(fields)


def _parquet_value(column: str, spec: Table, value: Any) -> Any:
    if value is None:
        return None
    if column in spec.time_columns:
        return parse_timestamp(value)
    if column == "transaction_id":
        return str(value)
    return value


def _write_parquet(pyarrow: Any, conn, path: Path, spec: Table, equal: dict, options: dict, *,
                   clock: Clock) -> int:
    schema = parquet_schema(pyarrow, conn, spec)
    columns = schema.names
    partial = path.with_name(path.name + ".partial")
    count = 0
    try:
        with pyarrow.parquet.ParquetWriter(str(partial), schema) as writer:
            batch: list[dict] = []
            rows = query.rows_where(conn, spec, equal=equal, order="oldest", decode=False,
                                    clock=clock, **options)
            for row in rows:
                batch.append({column: _parquet_value(column, spec, row[column])
                              for column in columns})
                if len(batch) >= PARQUET_BATCH:
                    writer.write_table(pyarrow.Table.from_pylist(batch, schema=schema))
                    count += len(batch)
                    batch.clear()
            if batch or not count:
                writer.write_table(pyarrow.Table.from_pylist(batch, schema=schema))
                count += len(batch)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return count


def to_dataframe(connection: Connection, table: str, *, clock: Clock, **filters: Any):
    """A pandas DataFrame of one table, oldest first, times as UTC datetimes; ``filters`` as
    for :func:`export_csv`, and ``limit`` for the newest rows only."""
    try:
        import pandas
    except ImportError:
        raise ImportError("MemoryBank.to_dataframe needs pandas: pip install pandas") from None
    spec = table_named(table)
    equal, options = query.split_filters(spec, filters)
    newest = options.get("limit") is not None   # the newest ``limit`` rows, turned round
    rows = list(query.rows_where(connection, spec, equal=equal, clock=clock,
                                 order="newest" if newest else "oldest", **options))
    if newest:
        rows.reverse()
    frame = pandas.DataFrame(rows, columns=["id", *spec.columns])
    for column in spec.time_columns:
        frame[column] = pandas.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame
