#!/usr/bin/env python3
"""A fleet in one cp.py (``--count N``) against csms.py on this machine: does every charge point
boot, and does the 1 Hz MeterValues schedule hold?

For each N and each ``--record`` of cp.py: csms.py (scenario ``normal``, so every charge point
charges) and ``cp.py --count N`` run as real processes on free loopback ports with a MemoryBank in
a temporary folder. Once every charge point has booted, the fleet runs ``--duration`` wall
seconds; then both are stopped. Lateness is read back from the samples the central system
recorded, stamped with the times the charge points took them: each charge point's sample times
against its own 1 Hz schedule (the phase of its least late sample). "Behind" is how far the
central system's recording trailed the fleet's newest sample at the end of the measured time (it
catches up when stopped). CPU seconds of each process are its whole life's (``os.wait4``); peak RSS is until
it is stopped.
"""
from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from measure import free_port, peak_rss_mb, percentile, wait_listening

from evsim.timefmt import format_timestamp

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def booted(db: Path) -> int:
    """How many charge points the central system has seen boot."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute(
                "SELECT COUNT(DISTINCT charge_point_id) FROM events WHERE "
                "event_type = 'BOOT_NOTIFICATION' AND source = 'csms'"
            ).fetchone()[0]
    except sqlite3.Error:
        return 0


def behind_s(db: Path) -> float:
    """Wall seconds between now and the newest sample the central system has recorded."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            newest = conn.execute("SELECT max(timestamp) FROM metrics WHERE source = 'csms' "
                                  "AND name = 'current'").fetchone()[0]
    except sqlite3.Error:
        return float("nan")
    return time.time() - datetime.fromisoformat(newest).timestamp() if newest else float("nan")


def lateness_ms(db: Path, since: str) -> list[float]:
    """Each sample's lateness against its charge point's 1 Hz schedule, in ms (a sample the
    central system recorded twice, resent, counts once; OCPP carries whole milliseconds)."""
    times: dict[str, list[float]] = defaultdict(list)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        for charge_point_id, stamp in conn.execute(
                "SELECT charge_point_id, timestamp FROM metrics WHERE source = 'csms' AND "
                "name = 'current' AND timestamp >= ? ORDER BY timestamp", (since,)):
            times[charge_point_id].append(datetime.fromisoformat(stamp).timestamp())
    late: list[float] = []
    for stamps in times.values():
        samples = sorted(set(stamps))
        offsets = [t - k for k, t in enumerate(samples)]
        base = min(offsets)
        late.extend((offset - base) * 1000 for offset in offsets)
    return late


def stop(proc: subprocess.Popen) -> tuple[float, float]:
    """SIGTERM (started in the background of a shell, a process ignores SIGINT) and wait;
    (CPU seconds of the process's whole life, its peak RSS in MB until the signal). The peak
    is read from /proc: ``ru_maxrss`` also counts what this script held when it forked."""
    rss = peak_rss_mb(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    if rss is None:  # no /proc (macOS): ru_maxrss, in bytes there
        rss = usage.ru_maxrss / 1e6
    return usage.ru_utime + usage.ru_stime, rss


def run(count: int, record: str, duration: float, stagger: float) -> dict:
    with tempfile.TemporaryDirectory() as folder, open(Path(folder) / "log", "w") as logs:
        db, port = Path(folder) / "memory.db", free_port()
        common = ["--db", str(db), "--log-level", "WARNING"]
        csms = subprocess.Popen([PYTHON, str(ROOT / "csms.py"), "--port", str(port),
                                 "--api-port", "0", "--scenario", "normal", *common],
                                stdout=logs, stderr=subprocess.STDOUT)
        wait_listening(port, csms, "csms.py")
        started = time.monotonic()
        cp = subprocess.Popen([PYTHON, str(ROOT / "cp.py"), "--count", str(count),
                               "--stagger", str(stagger), "--record", record,
                               "--url", f"ws://127.0.0.1:{port}",
                               *common], stdout=logs, stderr=subprocess.STDOUT)
        while booted(db) < count and time.monotonic() - started < 300:
            time.sleep(0.5)
        boot_s = time.monotonic() - started
        seen = booted(db)
        since = format_timestamp(datetime.now(UTC))
        time.sleep(duration)
        behind = behind_s(db)
        cp_cpu, cp_rss = stop(cp)
        csms_cpu, csms_rss = stop(csms)
        late = lateness_ms(db, since)
    return {"count": count, "record": record, "behind": behind, "booted": seen, "boot_s": boot_s,
            "samples": len(late),
            "late_p50": percentile(late, 0.5), "late_p99": percentile(late, 0.99),
            "cp_cpu": cp_cpu, "cp_rss": cp_rss, "csms_cpu": csms_cpu, "csms_rss": csms_rss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--duration", type=float, default=60.0, help="wall seconds measured")
    parser.add_argument("--stagger", type=float, default=0.02)
    parser.add_argument("--records", nargs="+", default=["all", "state"],
                        choices=["all", "state"], help="cp.py --record values to measure")
    args = parser.parse_args(argv)
    print(f"{'N':>5} {'record':>6} {'booted':>7} {'boot s':>7} {'samples':>8} {'late p50':>9} "
          f"{'p99 ms':>7} {'behind s':>9} {'cp CPU s':>9} {'cp RSS MB':>10} {'csms CPU s':>11} "
          f"{'csms RSS MB':>12}")
    for count in args.counts:
        for record in args.records:
            r = run(count, record, args.duration, args.stagger)
            print(f"{r['count']:>5} {r['record']:>6} {r['booted']:>7} {r['boot_s']:>7.1f} "
                  f"{r['samples']:>8} {r['late_p50']:>9.1f} {r['late_p99']:>7.1f} "
                  f"{r['behind']:>9.1f} {r['cp_cpu']:>9.1f} {r['cp_rss']:>10.0f} "
                  f"{r['csms_cpu']:>11.1f} {r['csms_rss']:>12.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
