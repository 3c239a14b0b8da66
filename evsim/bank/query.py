"""The one way rows are read out of the MemoryBank: :func:`rows_where` and :func:`count_where`.

The SQL is built here from the table's description in :mod:`~evsim.bank.schema`: column names
come from code, every value a caller gives is a parameter. Rows come out one at a time, so a
caller that writes them somewhere (an export) never holds a table in memory.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any, Literal, Optional, Union

from evsim.bank import values
from evsim.bank.connection import Connection
from evsim.bank.schema import Table, table_named
from evsim.timefmt import utc_now

Order = Literal["newest", "oldest"]
Source = Union[sqlite3.Connection, Connection]
#: The filters every table takes besides its columns.
OPTIONS = ("since", "until", "search", "limit")


def where_clause(table: Table, *, equal: Optional[dict] = None, since: values.Since = None,
                 until: values.Since = None, search: Optional[str] = None,
                 clock: values.Clock = utc_now) -> tuple[str, list]:
    """`` WHERE ...`` (or "") and its parameters: each ``equal`` column that is not None,
    the table's time column within ``since``/``until``, and ``search`` as case-insensitive
    text in any of the table's search columns (``%`` and ``_`` are plain text)."""
    where, params = [], []
    for column, value in (equal or {}).items():
        if value is not None:
            if column != "id" and column not in table.columns:
                raise ValueError(f"unknown column {column!r} of {table.name}")
            where.append(f"{column} = ?")
            params.append(value)
    for bound, operator in ((since, ">="), (until, "<=")):
        if bound is not None:
            where.append(f"{table.time_column} {operator} ?")
            params.append(values.stored_time(bound, clock))
    if search:
        if not table.search_columns:
            raise ValueError(f"{table.name} cannot be searched")
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append("(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'"
                                       for column in table.search_columns) + ")")
        params.extend([f"%{escaped}%"] * len(table.search_columns))
    return (" WHERE " + " AND ".join(where) if where else ""), params


def select_sql(table: Table, *, equal: Optional[dict] = None, since: values.Since = None,
               until: values.Since = None, search: Optional[str] = None,
               limit: Optional[int] = None, order: Order = "newest",
               clock: values.Clock = utc_now) -> tuple[str, list]:
    """The SELECT of :func:`rows_where` and its parameters. Time order is broken by id, so rows
    of one instant keep the order they were written in; the time indexes end in the id, so
    SQLite reads them in order without sorting."""
    if order not in ("newest", "oldest"):
        raise ValueError(f"order must be 'newest' or 'oldest', got {order!r}")
    where, params = where_clause(table, equal=equal, since=since, until=until, search=search,
                                 clock=clock)
    direction = "DESC" if order == "newest" else "ASC"
    sql = (f"SELECT * FROM {table.name}{where} "
           f"ORDER BY {table.time_column} {direction}, id {direction}")
    if values.limit(limit) is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params


def decoded(table: Table, cursor: sqlite3.Cursor) -> Iterator[dict]:
    """The cursor's rows as dicts, JSON columns decoded."""
    names = [column[0] for column in cursor.description]
    json_columns = [column for column in table.json_columns if column in names]
    for row_values in cursor:
        row = dict(zip(names, row_values))
        for column in json_columns:
            if row[column] is not None:
                row[column] = json.loads(row[column])
        yield row


def rows_where(source: Source, table: Union[str, Table], *, equal: Optional[dict] = None,
               since: values.Since = None, until: values.Since = None,
               search: Optional[str] = None, limit: Optional[int] = None,
               order: Order = "newest", decode: bool = True,
               clock: values.Clock = utc_now) -> Iterator[dict]:
    """Rows of ``table`` matching every filter given, as dicts, newest or oldest first.

    ``equal`` maps columns to values (None means any); ``since``/``until`` bound the table's
    time column (a timedelta is that long before ``clock()``); ``search`` is text in the
    table's search columns; ``decode=False`` leaves JSON columns as the stored text.

    ``source`` is a sqlite3 connection (inside a transaction of the caller's) or a
    :class:`Connection`, whose lock and read snapshot are then held until the generator is
    exhausted or closed: consume it in the thread that made it. Arguments are checked at once.
    """
    spec = table if isinstance(table, Table) else table_named(table)
    sql, params = select_sql(spec, equal=equal, since=since, until=until, search=search,
                             limit=limit, order=order, clock=clock)
    return _rows(source, spec, sql, params, decode)


def _rows(source: Source, table: Table, sql: str, params: list, decode: bool) -> Iterator[dict]:
    if isinstance(source, sqlite3.Connection):
        cursor = source.execute(sql, params)
        yield from decoded(table, cursor) if decode else _plain(cursor)
        return
    with source.snapshot() as conn:
        cursor = source.retry(lambda: conn.execute(sql, params))
        yield from decoded(table, cursor) if decode else _plain(cursor)


def _plain(cursor: sqlite3.Cursor) -> Iterator[dict]:
    names = [column[0] for column in cursor.description]
    for row_values in cursor:
        yield dict(zip(names, row_values))


def count_where(source: Source, table: Union[str, Table], *, equal: Optional[dict] = None,
                since: values.Since = None, until: values.Since = None,
                search: Optional[str] = None, clock: values.Clock = utc_now) -> int:
    """How many rows :func:`rows_where` would yield without a limit, without reading them."""
    spec = table if isinstance(table, Table) else table_named(table)
    where, params = where_clause(spec, equal=equal, since=since, until=until, search=search,
                                 clock=clock)
    sql = f"SELECT count(*) FROM {spec.name}{where}"
    if isinstance(source, sqlite3.Connection):
        return source.execute(sql, params).fetchone()[0]
    return source.retry(lambda: source.sqlite.execute(sql, params).fetchone()[0])


def distinct(conn: sqlite3.Connection, table: str, column: str) -> list:
    """Distinct non-null values of a column that leads an index, by skipping along the index:
    one lookup per value. On a column without an index each lookup is a full scan."""
    sql = (f"WITH RECURSIVE found(value) AS (SELECT min({column}) FROM {table} UNION ALL "
           f"SELECT (SELECT min({column}) FROM {table} WHERE {column} > found.value) "
           f"FROM found WHERE found.value IS NOT NULL) "
           f"SELECT value FROM found WHERE value IS NOT NULL")
    return [row[0] for row in conn.execute(sql)]


def split_filters(table: Table, filters: dict[str, Any]) -> tuple[dict, dict]:
    """Keyword filters as the exports and to_dataframe take them (any column for an exact
    match, and :data:`OPTIONS`) split into ``equal`` and the options; ValueError for a name
    the table does not have."""
    options = {key: value for key, value in filters.items() if key in OPTIONS}
    equal = {key: value for key, value in filters.items() if key not in OPTIONS}
    unknown = sorted(set(equal) - set(table.columns) - {"id"})
    if options.get("search") and not table.search_columns:
        unknown.append("search")
    if unknown:
        raise ValueError(f"unknown filter(s) for {table.name}: {', '.join(unknown)}")
    return equal, options
