"""One real site per process that injects an anomaly (run_all.sh --headless, real processes on
free loopback ports): the label and the anomaly reach the MemoryBank, and
``memory_viewer.py --score --json`` scores the kind as found once, with no false positive.

Every decision is taken in simulated time (the faults' windows, the detectors), so a slow
machine only takes longer; the deadlines are wall-clock and generous."""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import script, wait_for
from test_run_all import RUN_ALL, processes_of, site_args, stop_site

from evsim.bank import MemoryBank, MemoryBankError

SPEED = "20"
DEADLINE_S = 90.0


def recorded(db: Path, anomaly_type: str, source: str) -> bool:
    """The label of ``anomaly_type`` from ``source`` (written once it has ended) and an anomaly
    of that type are both in the MemoryBank."""
    if not db.exists():
        return False
    try:
        with MemoryBank(db, readonly=True) as bank:
            return bool(bank.get_labels(anomaly_type=anomaly_type, source=source)
                        and bank.get_anomalies(anomaly_type=anomaly_type))
    except MemoryBankError:  # the first process is still making the database
        return False


@contextmanager
def site(workdir: Path, *args: str) -> Iterator[tuple[Path, subprocess.Popen]]:
    """run_all.sh --headless with ``args``; yields (its MemoryBank, run_all.sh). Stopped however
    the test ends, every process of it gone."""
    db = workdir / "bank.db"
    run = subprocess.Popen([RUN_ALL, "--headless", *site_args(workdir), "--db", str(db),
                            "--speed", SPEED, "--seed", "3", *args],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield db, run
    finally:
        if run.returncode is None:
            stop_site(workdir, run)
        assert processes_of(workdir) == []


def stop_cleanly(workdir: Path, run: subprocess.Popen) -> None:
    """Every process ends on SIGTERM and run_all.sh exits 0."""
    stopped, out = stop_site(workdir, run)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert run.returncode == 0, out


def score_of(db: Path, anomaly_type: str) -> dict[str, Any]:
    """The score of ``anomaly_type`` as ``memory_viewer.py --score --json`` prints it."""
    result = subprocess.run(script("memory_viewer.py", "--db", str(db), "--score", "--json"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    kinds = json.loads(result.stdout)["score"]["kinds"]
    return next(kind for kind in kinds if kind["anomaly_type"] == anomaly_type)


def run_and_score(workdir: Path, anomaly_type: str, source: str, *args: str) -> None:
    """A site with ``args`` until ``source``'s label of ``anomaly_type`` and an anomaly of it are
    recorded; then stopped, scored, and found once, with no false positive and no miss."""
    with site(workdir, *args) as (db, run):
        wait_for(lambda: recorded(db, anomaly_type, source) or run.poll() is not None,
                 timeout=DEADLINE_S, interval=0.2, message=f"{anomaly_type} labelled and found")
        assert run.poll() is None, run.communicate()[0]
        stop_cleanly(workdir, run)
    score = score_of(db, anomaly_type)
    assert score["true_positives"] >= 1, score
    assert (score["false_positives"], score["misses"]) == (0, 0), score


def test_a_charger_dropout_is_labelled_found_and_scored(tmp_path):
    run_and_score(tmp_path, "ZERO_CURRENT_WHILE_CHARGING", "charger", "--scenario", "normal",
                  "--inject", "dropout:after=5,for=20")


def test_a_charge_point_meter_freeze_is_labelled_found_and_scored(tmp_path):
    run_and_score(tmp_path, "METER_FREEZE", "cp", "--scenario", "normal",
                  "--inject", "meter-freeze:after=5,for=20")


def test_the_fluctuation_scenario_is_labelled_found_and_scored(tmp_path):
    run_and_score(tmp_path, "CURRENT_FLUCTUATION", "csms", "--scenario", "fluctuation",
                  "--cycles", "4")
