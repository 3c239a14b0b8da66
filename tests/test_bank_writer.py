"""BankWriter on a real SQLite file: batches, order, and a bad row that costs only itself."""
from __future__ import annotations

import logging
import threading

from evsim.bank import MemoryBank
from evsim.bank.writer import BankWriter


def held(writer: BankWriter) -> threading.Event:
    """Keep the writer thread busy until the event is set, so what is queued meanwhile is
    written as one batch: returns once the thread is inside the call, so that nothing queued
    after it was taken with it."""
    entered, release = threading.Event(), threading.Event()
    writer.call(lambda bank: (entered.set(), release.wait(10)))
    assert entered.wait(10), "the writer thread never took the call"
    return release


def test_a_bad_row_is_dropped_alone_with_one_line_naming_it(db_path, caplog):
    writer = BankWriter(str(db_path), "test")
    release = held(writer)
    for i in range(100):
        value = {40: float("nan"), 60: float("inf")}.get(i, float(i))
        writer.metric("current", value, "A", "CP")
        writer.event("E", f"e{i}", {"x": float("inf")} if i == 50 else {"i": i}, "CP")
    with caplog.at_level(logging.ERROR, logger="bank"):
        release.set()
        writer.close()
    with MemoryBank(db_path, readonly=True) as bank:
        values = [m["value"] for m in bank.get_metrics("current")]
        events = bank.get_recent_events(None, {"event_type": "E"})
    descriptions = [e["description"] for e in events]
    assert values == [float(i) for i in range(100) if i not in (40, 60)]
    assert sorted(descriptions) == sorted(f"e{i}" for i in range(100) if i != 50)
    lines = [r.getMessage() for r in caplog.records if r.name == "bank"]
    assert len(lines) == 3
    assert sum("metric dropped" in line and "got nan" in line for line in lines) == 1
    assert sum("metric dropped" in line and "got inf" in line for line in lines) == 1
    assert sum("event dropped" in line and "'e50'" in line for line in lines) == 1


def test_a_call_sees_everything_queued_before_it_and_a_failing_one_is_logged(db_path, caplog):
    writer = BankWriter(str(db_path), "test")
    release = held(writer)
    seen: list[int] = []
    for i in range(3):
        writer.metric("current", float(i), "A", "CP")
    writer.call(lambda bank: seen.append(len(bank.get_metrics("current"))))
    writer.call(lambda bank: bank.update_anomaly(12345, severity="LOW"))  # no such anomaly
    writer.metric("current", 3.0, "A", "CP")
    with caplog.at_level(logging.ERROR, logger="bank"):
        release.set()
        writer.close()
    assert seen == [3]
    assert [r.getMessage() for r in caplog.records if r.name == "bank"] == \
        ["MemoryBank write failed: no anomaly with id 12345"]
    with MemoryBank(db_path, readonly=True) as bank:
        assert len(bank.get_metrics("current")) == 4


def test_a_writer_falling_behind_says_so_once_and_keeps_every_row(db_path, caplog):
    writer = BankWriter(str(db_path), "test", backlog_warning=50)
    release = held(writer)
    for i in range(120):
        writer.metric("current", float(i), "A", "CP")
    with caplog.at_level(logging.WARNING, logger="bank"):
        release.set()
        writer.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "bank"]
    assert len(warnings) == 1 and "rows queued to be written" in warnings[0], warnings
    assert int(warnings[0].split()[1]) >= 120
    with MemoryBank(db_path, readonly=True) as bank:
        assert len(bank.get_metrics("current")) == 120
