"""A process that queues events and metrics in turn (a charge point: a frame, four metrics, a
frame...) has them written in a transaction per kind, not one per change of kind."""
from __future__ import annotations

from test_bank_writer import held

from evsim.bank import MemoryBank
from evsim.bank.writer import BankWriter


def counting(transactions: list[str]):
    """``opened`` hook: note each batch the writer thread hands the MemoryBank."""
    def opened(bank: MemoryBank) -> None:
        log_events, record_metrics = bank.log_events, bank.record_metrics
        bank.log_events = lambda rows: (transactions.append("event"), log_events(rows))[1]
        bank.record_metrics = lambda rows: (transactions.append("metric"),
                                            record_metrics(rows))[1]
    return opened


def test_interleaved_kinds_are_written_a_transaction_each_in_their_order(db_path):
    transactions: list[str] = []
    writer = BankWriter(str(db_path), "test", opened=counting(transactions))
    release = held(writer)
    seen: list[int] = []
    for i in range(50):
        writer.event("E", f"e{i}", {"i": i}, "CP")
        for name in ("current", "voltage", "power", "energy"):
            writer.metric(name, float(i), "X", "CP")
    writer.call(lambda bank: seen.append(len(bank.get_metrics("current"))))
    writer.event("E", "last", None, "CP")
    release.set()
    writer.close()
    assert transactions == ["event", "metric", "event"] and seen == [50]
    with MemoryBank(db_path, readonly=True) as bank:
        assert [m["value"] for m in bank.get_metrics("current")] == [float(i) for i in range(50)]
        descriptions = [e["description"] for e in bank.get_recent_events(None, {"event_type": "E"})]
    assert sorted(descriptions) == sorted([f"e{i}" for i in range(50)] + ["last"])
