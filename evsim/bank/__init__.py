"""The MemoryBank: the site's one SQLite store of events, anomalies, sessions, metrics, patterns.

One job per module: :mod:`.schema` (tables and migrations), :mod:`.values` (checking what
callers hand in), :mod:`.connection` (opening, locking, retries), :mod:`.query` (reading rows),
:mod:`.aggregates` (figures computed in SQLite), :mod:`.updates` (writes that change stored
rows), :mod:`.export` (files), :mod:`.bank` (the :class:`MemoryBank` API) and :mod:`.writer`
(a writer thread for asyncio code).
"""
from evsim.bank.bank import MemoryBank
from evsim.bank.connection import Connection, MemoryBankError, default_db_path
from evsim.bank.query import count_where, rows_where
from evsim.bank.schema import MIGRATIONS, SCHEMA_VERSION, TABLES, Table
from evsim.constants import RECORDER, SEVERITIES
from evsim.timefmt import format_timestamp, parse_timestamp, utc_now

__all__ = [
    "MIGRATIONS",
    "RECORDER",
    "SCHEMA_VERSION",
    "SEVERITIES",
    "TABLES",
    "Connection",
    "MemoryBank",
    "MemoryBankError",
    "Table",
    "count_where",
    "default_db_path",
    "format_timestamp",
    "parse_timestamp",
    "rows_where",
    "utc_now",
]
