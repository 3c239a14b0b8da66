"""Writes to the MemoryBank from a thread of its own, so the asyncio loop never waits on SQLite.

Events and metrics are batched (one transaction per batch); other writes run in order as
callables, after every event and metric queued before them, so a session ends only once its
current samples are stored. A row the MemoryBank refuses is dropped alone, not with its batch.

When the file cannot be written (disk full, read-only, gone), nothing is thrown away at first:
the rows wait, in order, in a bounded buffer and are written when the file can take them again.
Such an outage is one log line when it starts, a summary at most once a minute while it lasts,
and one line, plus a STORAGE event, when it ends; rows that did not fit in the buffer are counted
and reported, and :meth:`BankWriter.close` returns how many were lost.
"""
from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, Optional

from evsim.bank import values
from evsim.bank.bank import MemoryBank
from evsim.bank.connection import MemoryBankError
from evsim.timefmt import utc_now

log = logging.getLogger("bank")

#: The most rows of a transaction: rows that pile up are written in few transactions, each of
#: which takes the file's write lock from the other processes.
BATCH = 5000
MAX_WAITING = 100_000
#: Rows queued and not yet taken beyond which the writer says it is falling behind.
BACKLOG_WARNING = 50_000
RETRY_S = 1.0
SUMMARY_S = 60.0
_STOP = object()

Item = tuple[str, Any]


class BankWriter:
    """The one MemoryBank connection of a process, owned by a writer thread. Rows are stamped
    with ``now()`` (the process's clock) when they are queued, not when they are written.

    ``opened(bank)`` runs in the writer thread once the file is open (tests use it to shrink
    the file's room with ``PRAGMA max_page_count``).
    """

    def __init__(self, path: Optional[str], source: str,
                 now: Callable[[], datetime] = utc_now, *, max_waiting: int = MAX_WAITING,
                 retry_s: float = RETRY_S, summary_s: float = SUMMARY_S,
                 backlog_warning: int = BACKLOG_WARNING,
                 opened: Optional[Callable[[MemoryBank], Any]] = None) -> None:
        self.source = source
        self.now = now
        self.max_waiting = max_waiting
        self.backlog_warning = backlog_warning
        self._backlog_said: Optional[float] = None
        self.retry_s = retry_s
        self.summary_s = summary_s
        self.lost = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: deque[Item] = deque()
        self._outage: Optional[_Outage] = None
        self._opened = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(path, opened),
                                        name="bank-writer", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._error is not None:
            raise self._error

    def event(self, event_type: str, description: str, data: Any = None,
              charge_point_id: Optional[str] = None, timestamp: Any = None) -> None:
        """Queue an event; ``data`` is encoded at once (what cannot be is left to the writer
        thread, which drops the row with a log line as ever)."""
        encoded = None
        if data is not None:
            try:
                encoded, data = values.to_json(data, "data"), None
            except ValueError:
                pass
        self._queue.put(("event", {"event_type": event_type, "source": self.source,
                                   "description": description, "data": data,
                                   "data_json": encoded,
                                   "charge_point_id": charge_point_id,
                                   "timestamp": timestamp or self.now()}))

    def metric(self, name: str, value: float, unit: str, charge_point_id: Optional[str] = None,
               transaction_id: Optional[int] = None, timestamp: Any = None) -> None:
        self._queue.put(("metric", {"name": name, "value": value, "unit": unit,
                                    "source": self.source, "charge_point_id": charge_point_id,
                                    "transaction_id": transaction_id,
                                    "timestamp": timestamp or self.now()}))

    def call(self, write: Callable[[MemoryBank], Any]) -> None:
        """Run ``write(bank)`` in the writer thread, after everything queued before it."""
        self._queue.put(("call", write))

    @property
    def failing(self) -> bool:
        """The file cannot be written now: rows are waiting."""
        return self._outage is not None

    def close(self, timeout: float = 10.0) -> int:
        """Write everything queued (one last try if the file is failing), close the connection,
        and return how many rows were lost to a storage failure. Waits as long as rows are
        being written; ``timeout`` seconds without progress count the rest as lost."""
        self._queue.put(("stop", _STOP))
        backlog, deadline = self._backlog(), time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(min(0.5, timeout))
            if self._backlog() < backlog:  # still writing: a busy writer is not a stuck one
                backlog, deadline = self._backlog(), time.monotonic() + timeout
        if self._thread.is_alive():
            queued = self._queue.qsize()  # the stop is the last of them until it is taken
            unwritten = _rows(self._waiting) + max(0, queued - 1)
            self.lost += unwritten
            log.error("MemoryBank: %d rows still not written after %.0f s without progress: "
                      "lost", unwritten, timeout)
        return self.lost

    def _backlog(self) -> int:
        return self._queue.qsize() + len(self._waiting)

    # -- the writer thread ------------------------------------------------------------------------

    def _run(self, path: Optional[str], opened: Optional[Callable[[MemoryBank], Any]]) -> None:
        try:
            bank = MemoryBank(path)
            if opened is not None:
                opened(bank)
        except (MemoryBankError, OSError) as exc:
            self._error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            running = True
            while running:
                running = self._take(self.retry_s if self.failing else None)
                self._write_waiting(bank)
                self._bound()
            if self._waiting:
                self.lost += _rows(self._waiting)
                log.error("MemoryBank %s: %d rows could not be written before the process "
                          "stopped: lost", bank.path, _rows(self._waiting))
        finally:
            bank.close()

    def _take(self, timeout: Optional[float]) -> bool:
        """Move what is queued (waiting up to ``timeout`` for the first) to the waiting rows;
        False once the stop is among them."""
        try:
            items = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return True
        self._say_backlog(self._queue.qsize() + 1)
        while len(items) < BATCH:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        running = all(kind != "stop" for kind, _ in items)
        self._waiting.extend(item for item in items if item[0] != "stop")
        return running

    def _say_backlog(self, queued: int) -> None:
        """A process that queues rows faster than the file takes them grows without bound:
        one warning at most every ``summary_s`` while it lasts (rows are still all kept)."""
        now = time.monotonic()
        if queued < self.backlog_warning or (self._backlog_said is not None and
                                             now - self._backlog_said < self.summary_s):
            return
        self._backlog_said = now
        log.warning("MemoryBank: %d rows queued to be written: this process records faster "
                    "than the file takes them, and its memory grows", queued)

    def _write_waiting(self, bank: MemoryBank) -> None:
        """Write the waiting rows, the events and the metrics up to the next call (at most
        BATCH rows) in a transaction each, each kind in its order: a process that queues an
        event, four metrics, an event... writes two transactions, not one per change of kind.
        A call sees every row queued before it; a storage failure keeps the rest waiting."""
        try:
            while self._waiting:
                if self._waiting[0][0] == "call":
                    _call(self._waiting[0][1], bank)
                    self._waiting.popleft()
                    continue
                taken: list[Item] = []
                while self._waiting and self._waiting[0][0] != "call" and len(taken) < BATCH:
                    taken.append(self._waiting.popleft())
                for kind in ("event", "metric"):
                    self._write_kind(bank, kind, taken)
        except MemoryBankError as exc:
            self._failed(bank, exc)
            return
        if self._outage is not None:
            self._recovered(bank)

    def _write_kind(self, bank: MemoryBank, kind: str, taken: list[Item]) -> None:
        """Write the rows of ``kind`` among ``taken`` in one transaction; on a storage failure
        put what is not yet written (this kind and the ones after it) back in front, in order,
        and raise."""
        batch = [row for row_kind, row in taken if row_kind == kind]
        if not batch:
            return
        try:
            _write_rows(bank.log_events if kind == "event" else bank.record_metrics, batch, kind)
        except MemoryBankError as exc:
            if not _is_storage(exc):
                log.error("MemoryBank: %d %ss dropped: %s", len(batch), kind, exc)
                return
            unwritten = {id(row) for row in batch}  # _write_rows drops those it wrote
            kept = [item for item in taken if item[0] != "event" or kind == "event"]
            self._waiting.extendleft(reversed([item for item in kept if item[0] != kind
                                               or id(item[1]) in unwritten]))
            raise

    def _failed(self, bank: MemoryBank, exc: MemoryBankError) -> None:
        now = time.monotonic()
        if self._outage is None:
            self._outage = _Outage(started=now, summarised=now, reason=str(exc))
            log.error("MemoryBank cannot be written (%s); keeping up to %d rows until it can",
                      exc, self.max_waiting)
        elif now - self._outage.summarised >= self.summary_s:
            self._outage.summarised = now
            log.error("MemoryBank still cannot be written after %.0f s: %d rows waiting, %d "
                      "lost", now - self._outage.started, _rows(self._waiting), self.lost)

    def _recovered(self, bank: MemoryBank) -> None:
        outage, self._outage = self._outage, None
        lasted = time.monotonic() - outage.started
        log.warning("MemoryBank written again after %.0f s; %d rows were lost", lasted,
                    outage.lost)
        try:
            bank.log_event("STORAGE", self.source,
                           f"the MemoryBank could not be written for {lasted:.0f} s; "
                           f"{outage.lost} rows lost", {"seconds": round(lasted, 1),
                                                         "lost": outage.lost,
                                                         "reason": outage.reason},
                           timestamp=self.now())
        except (MemoryBankError, ValueError) as exc:
            log.error("MemoryBank: the STORAGE event could not be written: %s", exc)

    def _bound(self) -> None:
        """Drop the oldest waiting rows beyond ``max_waiting`` (an outage that outlasts the
        buffer loses its oldest rows, counted, rather than the process's memory)."""
        excess = len(self._waiting) - self.max_waiting
        if excess <= 0:
            return
        for _ in range(excess):
            self._waiting.popleft()
        self.lost += excess
        if self._outage is not None:
            self._outage.lost += excess


class _Outage:
    def __init__(self, started: float, summarised: float, reason: str) -> None:
        self.started, self.summarised, self.reason = started, summarised, reason
        self.lost = 0


def _rows(items: deque[Item]) -> int:
    return sum(kind != "call" for kind, _ in items)


def _call(write: Callable, bank: MemoryBank) -> None:
    """Run a queued call: a storage failure propagates (the call waits and is tried again);
    any other failure is reported in one line and the writer carries on with the next."""
    try:
        write(bank)
    except MemoryBankError as exc:
        if _is_storage(exc):
            raise
        log.error("MemoryBank write failed: %s", exc)
    except Exception as exc:  # noqa: BLE001 - one bad write must not stop the recorder
        log.error("MemoryBank write failed: %s", exc)


#: SQLite's result codes for a file that cannot take a write now: full, read-only, I/O error,
#: cannot open, locked past every retry. Anything else is a bad write, not a bad file.
STORAGE_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR,
                           sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED,
                           sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})


def _is_storage(exc: MemoryBankError) -> bool:
    cause = exc.__cause__
    code = getattr(cause, "sqlite_errorcode", None)
    return code is None or code & 0xFF in STORAGE_CODES


def _write_rows(write_many: Callable[[list[dict]], Any], rows: list[dict], what: str) -> None:
    """Write a batch in one transaction; if a row is invalid, write the rows one by one so only
    the invalid ones are lost, each reported in one line. A storage failure propagates."""
    try:
        write_many(rows)
        return
    except ValueError:
        pass
    for index, row in enumerate(rows):
        try:
            write_many([row])
        except ValueError as exc:
            log.error("MemoryBank: %s dropped (%s): %.300r", what, exc, row)
        except MemoryBankError:
            del rows[:index]  # those before it are written
            raise
