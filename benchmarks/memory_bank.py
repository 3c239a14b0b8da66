#!/usr/bin/env python3
"""How fast the MemoryBank writes and the viewer reads, each figure beside its ceiling measured
in the same run, in the same directory (so on the same file system):

- single ``log_event`` calls from one process, and from four processes at once, beside raw
  sqlite3 inserts into the same schema with one commit per row (same WAL + synchronous=NORMAL);
- the batch form ``log_events`` beside raw ``executemany`` in one transaction;
- ``memory_viewer.py --summary`` and ``--anomalies 20`` on a database of one million events,
  beside the viewer's own start-up (``--help``: interpreter, imports, no database);
- ``export_csv`` of those million events: rows/s, and the peak memory of the process that
  exports beside that of one that only opens the database (same interpreter and imports).

Run: .venv/bin/python benchmarks/memory_bank.py  (about a minute on two cores)
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Optional

from tabulate import tabulate

from evsim.bank import TABLES, MemoryBank, count_where

ROOT = Path(__file__).resolve().parent.parent

EVENT_COLUMNS = TABLES["events"].columns
RAW_INSERT = (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
              f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})")
RAW_ROW = ("2024-05-01T12:00:00.000000Z", "CAN_FRAME", "bench", "measured 16.0 A",
           '{"id":"0x300","amps":16.0}', "CP1")


def event(i: int, source: str = "bench") -> dict:
    return {"event_type": "CAN_FRAME", "source": source, "description": "measured 16.0 A",
            "data": {"id": "0x300", "amps": 16.0, "i": i}, "charge_point_id": "CP1"}


def fresh_db(directory: Path, name: str) -> Path:
    """A new file with the MemoryBank schema, so raw inserts pay for the same indexes."""
    path = directory / f"{name}.db"
    MemoryBank(path).close()
    return path


def raw_connection(path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


# -- the measured work (also run in worker processes) ---------------------------------------------

def bank_singles(path: Path, rows: int, source: str = "bench") -> None:
    with MemoryBank(path) as bank:
        for i in range(rows):
            bank.log_event(**event(i, source))


def raw_singles(path: Path, rows: int, synchronous: str = "NORMAL") -> None:
    conn = raw_connection(path, synchronous)
    for _ in range(rows):
        conn.execute(RAW_INSERT, RAW_ROW)
        conn.commit()
    conn.close()


def worker(kind: str, path: str, rows: int, name: str, go, times) -> None:
    """One of four concurrent writers: waits for ``go``, then reports its own start and end."""
    work = {"bank": lambda: bank_singles(Path(path), rows, name),
            "raw": lambda: raw_singles(Path(path), rows)}[kind]
    go.wait()
    started = time.monotonic()
    work()
    times.put((started, time.monotonic()))


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def four_processes(kind: str, path: Path, rows: int) -> float:
    """Wall time from the first writer starting to the last one finishing."""
    context = multiprocessing.get_context("spawn")
    go, times = context.Event(), context.Queue()
    processes = [context.Process(target=worker, args=(kind, str(path), rows, f"w{n}", go, times))
                 for n in range(4)]
    for process in processes:
        process.start()
    go.set()
    spans = [times.get(timeout=300) for _ in processes]
    for process in processes:
        process.join()
    return max(end for _, end in spans) - min(start for start, _ in spans)


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


# -- the one-million-event database ---------------------------------------------------------------

def build_big_db(path: Path, events: int, chunk: int = 100_000) -> float:
    """A site's week: OCPP messages and CAN frames of four charge points, anomalies, sessions,
    current samples and patterns. Events go in with the batch form. Returns the seconds taken."""
    end = datetime.now(UTC)
    step = timedelta(days=7) / events
    start = end - step * events
    kinds = [("OCPP_MESSAGE", "csms", "cp->csms CALL MeterValues"),
             ("OCPP_MESSAGE", "cp", "csms->cp CALLRESULT MeterValues"),
             ("CAN_FRAME", "charger", "measured current"),
             ("CAN_FRAME", "cp", "set current limit")]
    started = time.perf_counter()
    with MemoryBank(path) as bank:
        for first in range(0, events, chunk):
            batch = []
            for i in range(first, min(first + chunk, events)):
                event_type, source, description = kinds[i % 4]
                batch.append({"event_type": event_type, "source": source,
                              "description": f"{description} #{i}",
                              "data": {"i": i, "amps": 16.0 + i % 7},
                              "charge_point_id": f"CP{i % 4 + 1}",
                              "timestamp": start + step * i})
            bank.log_events(batch)
        for i in range(1000):
            bank.record_anomaly("CURRENT_FLUCTUATION", ("LOW", "MEDIUM", "HIGH", "CRITICAL")[i % 4],
                                f"current jumped to {20 + i % 13} A", 20.0 + i % 13, 16.0,
                                25.0, {"rule": "delta"}, f"CP{i % 4 + 1}", i // 10,
                                timestamp=start + (end - start) * i / 1000)
        bank.record_metrics({"name": "current", "value": 16.0 + i % 7, "unit": "A",
                             "source": "charger", "charge_point_id": f"CP{i % 4 + 1}",
                             "transaction_id": i // 1000, "timestamp": start + step * i * 10}
                            for i in range(events // 10))
        for tx in range(100):
            bank.start_session(f"CP{tx % 4 + 1}", tx, start_time=start + step * tx * 10_000,
                               meter_start_wh=0)
            bank.end_session(f"CP{tx % 4 + 1}", tx, end_time=start + step * (tx * 10_000 + 9_000),
                             meter_stop_wh=11_000)
        for cp in range(1, 5):
            bank.learn_pattern(f"charging_profile_CP{cp}", {"mean": 16.0, "std": 2.0}, 0.9)
    return time.perf_counter() - started


def viewer_seconds(db: Path, *args: str, repeat: int = 3) -> float:
    """The best of ``repeat`` runs of the viewer as a subprocess."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "memory_viewer.py"), "--db", str(db), *args],
                       check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        best = min(best, time.perf_counter() - started)
    return best


def peak_rss() -> int:
    """This process's peak resident memory in bytes. Linux's VmHWM starts afresh at exec;
    ru_maxrss (the fallback) also counts what the parent held when it forked."""
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def export_worker(db: str, target: Optional[str], results) -> None:
    """In a fresh process: export every event to ``target`` as CSV (or, without a target,
    only open the database and count them); reports rows, seconds and the peak RSS in bytes."""
    started = time.perf_counter()
    with MemoryBank(db, readonly=True) as bank:
        rows = (bank.export_csv(target) if target
                else count_where(bank.connection, "events"))
    seconds = time.perf_counter() - started
    results.put((rows, seconds, peak_rss()))


def export_in_process(db: Path, target: Optional[Path]) -> tuple[int, float, int]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=export_worker,
                              args=(str(db), str(target) if target else None, results))
    process.start()
    result = results.get(timeout=600)
    process.join()
    return result


# -- report ---------------------------------------------------------------------------------------

def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/memory_bank.py", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None,
                        help="directory for the test files (default: a new temporary directory)")
    parser.add_argument("--singles", type=int, default=20_000,
                        help="log_event calls from one process (default 20,000)")
    parser.add_argument("--per-process", type=int, default=10_000,
                        help="log_event calls per process when four write (default 10,000)")
    parser.add_argument("--batch", type=int, default=100_000,
                        help="events in one log_events call (default 100,000)")
    parser.add_argument("--big", type=int, default=1_000_000,
                        help="events in the viewer's database (default 1,000,000)")
    args = parser.parse_args(argv)

    directory = Path(tempfile.mkdtemp(prefix="memory-bench-", dir=args.dir))
    total_started = time.perf_counter()
    try:
        print(f"MemoryBank benchmark: SQLite {sqlite3.sqlite_version}, Python "
              f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, files in {directory}\n",
              flush=True)
        rows = []

        n = args.singles
        bank_time = timed(lambda: bank_singles(fresh_db(directory, "single-bank"), n))
        raw_time = timed(lambda: raw_singles(fresh_db(directory, "single-raw"), n))
        full_time = timed(lambda: raw_singles(fresh_db(directory, "single-full"), n, "FULL"))
        rows.append((f"log_event, 1 process, {n:,} calls", rate(n, bank_time),
                     f"{rate(n, raw_time)} (raw insert + commit)", f"{raw_time / bank_time:.2f}"))

        n = args.per_process
        bank_db, raw_db = fresh_db(directory, "four-bank"), fresh_db(directory, "four-raw")
        bank_time = four_processes("bank", bank_db, n)
        raw_time = four_processes("raw", raw_db, n)
        assert count_rows(bank_db) == count_rows(raw_db) == 4 * n, "rows were lost"
        rows.append((f"log_event, 4 processes x {n:,} calls", rate(4 * n, bank_time),
                     f"{rate(4 * n, raw_time)} (raw insert + commit)",
                     f"{raw_time / bank_time:.2f}"))
        rows.append(("(reference: raw, 1 process, synchronous=FULL)", "",
                     rate(args.singles, full_time), ""))

        n = args.batch
        events = [event(i) for i in range(n)]
        with MemoryBank(fresh_db(directory, "batch-bank")) as bank:
            bank_time = timed(lambda: bank.log_events(events))
        conn = raw_connection(fresh_db(directory, "batch-raw"))
        raw_rows = [RAW_ROW] * n
        raw_time = timed(lambda: (conn.executemany(RAW_INSERT, raw_rows), conn.commit()))
        conn.close()
        rows.append((f"log_events batch of {n:,}", rate(n, bank_time),
                     f"{rate(n, raw_time)} (raw executemany, 1 transaction)",
                     f"{raw_time / bank_time:.2f}"))
        print(tabulate(rows, headers=("writes", "MemoryBank", "ceiling, same run", "ratio"),
                       disable_numparse=True) + "\n", flush=True)

        big = directory / "big.db"
        build_time = build_big_db(big, args.big)
        size_mb = sum(f.stat().st_size for f in directory.glob("big.db*")) / 1e6
        print(f"database of {args.big:,} events (+1,000 anomalies, {args.big // 10:,} metrics, "
              f"100 sessions) built in {build_time:.1f} s, {size_mb:,.0f} MB\n", flush=True)

        floor = viewer_seconds(big, "--help")
        with MemoryBank(big, readonly=True) as bank:
            summary_in_process = timed(bank.get_dashboard_summary)
            anomalies_in_process = timed(lambda: bank.get_anomalies(20))
        with sqlite3.connect(big) as conn:
            count_time = timed(lambda: conn.execute("SELECT count(*) FROM events").fetchone())
        rows = [
            ("memory_viewer.py --summary", f"{viewer_seconds(big, '--summary'):.3f} s",
             f"{floor:.3f} s (--help: start-up, imports)"),
            ("memory_viewer.py --anomalies 20", f"{viewer_seconds(big, '--anomalies', '20'):.3f} s",
             f"{floor:.3f} s (--help: start-up, imports)"),
            ("get_dashboard_summary() in process", f"{summary_in_process * 1000:.1f} ms",
             f"{count_time * 1000:.1f} ms (raw SELECT count(*) FROM events)"),
            ("get_anomalies(20) in process", f"{anomalies_in_process * 1000:.1f} ms", ""),
        ]
        print(tabulate(rows, headers=(f"reads, {args.big:,} events", "time (best of 3)",
                                      "ceiling, same run")) + "\n")

        exported, export_time, export_peak = export_in_process(big, directory / "events.csv")
        _, _, open_peak = export_in_process(big, None)
        csv_mb = (directory / "events.csv").stat().st_size / 1e6
        rows = [(f"export_csv, {exported:,} events ({csv_mb:,.0f} MB)",
                 f"{rate(exported, export_time)}, {export_time:.1f} s",
                 f"peak RSS {export_peak / 1e6:,.0f} MB",
                 f"{open_peak / 1e6:,.0f} MB (open + count only)")]
        print(tabulate(rows, headers=("streaming export", "speed", "memory", "baseline, same run"),
                       disable_numparse=True) + "\n")
        print(f"total benchmark time {time.perf_counter() - total_started:.0f} s")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
