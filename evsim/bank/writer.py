"""Writes to the MemoryBank from a thread of its own, so the asyncio loop never waits on SQLite.

Events and metrics are batched (one transaction per batch); other writes run in order as
callables, after every event and metric queued before them, so a session ends only once its
current samples are stored. A row the MemoryBank refuses is dropped alone, not with its batch.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Optional

from evsim.bank.bank import MemoryBank
from evsim.bank.connection import MemoryBankError
from evsim.timefmt import utc_now

log = logging.getLogger("bank")

BATCH = 500
_STOP = object()


class BankWriter:
    """The one MemoryBank connection of a process, owned by a writer thread. Rows are stamped
    with ``now()`` (the process's clock) when they are queued, not when they are written."""

    def __init__(self, path: Optional[str], source: str,
                 now: Callable[[], datetime] = utc_now) -> None:
        self.source = source
        self.now = now
        self._queue: queue.Queue = queue.Queue()
        self._opened = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(path,), name="bank-writer",
                                        daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._error is not None:
            raise self._error

    def event(self, event_type: str, description: str, data: Any = None,
              charge_point_id: Optional[str] = None, timestamp: Any = None) -> None:
        self._queue.put(("event", {"event_type": event_type, "source": self.source,
                                   "description": description, "data": data,
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

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then close the connection."""
        self._queue.put(("stop", _STOP))
        self._thread.join(timeout)

    def _run(self, path: Optional[str]) -> None:
        try:
            bank = MemoryBank(path)
        except (MemoryBankError, OSError) as exc:
            self._error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            running = True
            while running:
                items = [self._queue.get()]
                while len(items) < BATCH:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                running = self._write(bank, items)
        finally:
            bank.close()

    def _write(self, bank: MemoryBank, items: list[tuple[str, Any]]) -> bool:
        events: list[dict] = []
        metrics: list[dict] = []

        def flush() -> None:
            if events:
                _write_rows(bank.log_events, list(events), "event")
                events.clear()
            if metrics:
                _write_rows(bank.record_metrics, list(metrics), "metric")
                metrics.clear()

        for kind, item in items:
            if kind == "event":
                events.append(item)
            elif kind == "metric":
                metrics.append(item)
            else:
                flush()
                if kind == "stop":
                    return False
                _guard(item, bank)
        flush()
        return True


def _guard(write: Callable, *args: Any) -> None:
    """A write that fails is reported in one line; the writer carries on with the next."""
    try:
        write(*args)
    except Exception as exc:  # noqa: BLE001 - one bad row must not stop the recorder
        log.error("MemoryBank write failed: %s", exc)


def _write_rows(write_many: Callable[[list[dict]], Any], rows: list[dict], what: str) -> None:
    """Write a batch in one transaction; if a row is invalid, write the rows one by one so only
    the invalid ones are lost, each reported in one line."""
    try:
        write_many(rows)
        return
    except ValueError:
        pass
    except Exception as exc:  # noqa: BLE001 - the database failed, not a row
        log.error("MemoryBank write of %d %ss failed: %s", len(rows), what, exc)
        return
    for row in rows:
        try:
            write_many([row])
        except Exception as exc:  # noqa: BLE001
            log.error("MemoryBank: %s dropped (%s): %.300r", what, exc, row)
