"""The score of a MemoryBank's anomalies against its labels (ground truth), as
``memory_viewer.py --score`` computes it, on a real SQLite file with hand-made labels and
anomalies whose figures are worked out by hand below."""
from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ROOT, script

from evsim.bank import MemoryBank
from evsim.viewer import scoring
from evsim.viewer.main import build_parser
from evsim.viewer.sections import Viewer

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ENV = {**os.environ, "TZ": "UTC", "PYTHONUNBUFFERED": "1"}


def at(seconds: float) -> datetime:
    """``seconds`` of wall-clock time after T0."""
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def scored_db(db_path: Path) -> Path:
    """A run at speed 10 (the cp's PROCESS_START says so; a csms started later at speed 5):

    METER_FREEZE, labels without a speed of their own (so 10, from the cp's start):
      L1 CP1 10-20 s: anomalies at 11 s (true positive, latency 1 s x 10 = 10 simulated s)
         and 12 s (a second anomaly of one episode: a false positive, a duplicate);
      L2 CP1 100-110 s: an anomaly at 103.5 s (true positive, latency 35 s);
      L3 CP2 10-20 s: nothing on CP2 (a miss; CP1's anomalies are not CP2's).
      -> 3 labels, 3 anomalies, TP 2, FP 1, missed 1, precision = recall = 2/3,
         median latency (10 + 35) / 2 = 22.5 s, worst 35 s.
    OVER_CURRENT, a label whose parameters say speed 1 (its own speed wins):
      L4 CP1 200-260 s: an anomaly at 214 s -> TP 1, latency 14 s.
    STATUS_FLAPPING: an anomaly at 300 s and no label -> FP 1, precision 0, recall none.
    """
    with MemoryBank(db_path) as bank:
        bank.log_event("PROCESS_START", "cp", "cp CP1 started", {"speed": 10.0}, "CP1",
                       timestamp=at(-5))
        bank.log_event("PROCESS_START", "csms", "csms started", {"speed": 5.0},
                       timestamp=at(-1))
        freeze = {"kind": "meter-freeze", "after": 30.0, "for": 60.0}
        bank.record_label("CP1", "METER_FREEZE", at(10), at(20), freeze, 1, "cp")
        bank.record_label("CP1", "METER_FREEZE", at(100), at(110), freeze, 1, "cp")
        bank.record_label("CP2", "METER_FREEZE", at(10), at(20), freeze, 1, "cp")
        bank.record_label("CP1", "OVER_CURRENT", at(200), at(260),
                          {"kind": "over-current", "speed": 1.0}, 1, "charger")
        for seconds in (11, 12, 103.5):
            bank.record_anomaly("METER_FREEZE", "HIGH", "frozen", charge_point_id="CP1",
                                timestamp=at(seconds))
        bank.record_anomaly("OVER_CURRENT", "HIGH", "over", charge_point_id="CP1",
                            timestamp=at(214))
        bank.record_anomaly("STATUS_FLAPPING", "MEDIUM", "flap", charge_point_id="CP1",
                            timestamp=at(300))
    return db_path


def score_of(db: Path, *args: str) -> dict:
    args = build_parser().parse_args(["--db", str(db), "--score", *args])
    with MemoryBank(db, readonly=True) as bank:
        return Viewer(bank, args).score()


def by_type(result: dict) -> dict[str, dict]:
    return {kind["anomaly_type"]: kind for kind in result["kinds"]}


def test_the_score_per_type_matches_the_hand_worked_figures(scored_db):
    result = score_of(scored_db)
    assert (result["labels"], result["anomalies"]) == (4, 5)
    kinds = by_type(result)
    assert list(kinds) == ["METER_FREEZE", "OVER_CURRENT", "STATUS_FLAPPING"]
    assert kinds["METER_FREEZE"] == {
        "anomaly_type": "METER_FREEZE", "labels": 3, "anomalies": 3, "true_positives": 2,
        "false_positives": 1, "duplicates": 1, "misses": 1, "precision": 0.667,
        "recall": 0.667, "median_latency_s": 22.5, "worst_latency_s": 35.0}
    assert kinds["OVER_CURRENT"] == {
        "anomaly_type": "OVER_CURRENT", "labels": 1, "anomalies": 1, "true_positives": 1,
        "false_positives": 0, "duplicates": 0, "misses": 0, "precision": 1.0, "recall": 1.0,
        "median_latency_s": 14.0, "worst_latency_s": 14.0}
    assert kinds["STATUS_FLAPPING"] == {
        "anomaly_type": "STATUS_FLAPPING", "labels": 0, "anomalies": 1, "true_positives": 0,
        "false_positives": 1, "duplicates": 0, "misses": 0, "precision": 0.0, "recall": None,
        "median_latency_s": None, "worst_latency_s": None}


def test_cp_filter_scores_one_charge_point(scored_db):
    kinds = by_type(score_of(scored_db, "--cp", "CP2"))
    assert kinds == {"METER_FREEZE": {
        "anomaly_type": "METER_FREEZE", "labels": 1, "anomalies": 0, "true_positives": 0,
        "false_positives": 0, "duplicates": 0, "misses": 1, "precision": None, "recall": 0.0,
        "median_latency_s": None, "worst_latency_s": None}}


def test_since_leaves_out_the_episodes_of_labels_that_started_before(scored_db):
    """Since 11.5 s: L1 and L3 started before, so they are not scored, and the anomaly at 12 s
    (in L1's window) is L1's, not a false positive; L2 and L4 are scored."""
    result = score_of(scored_db, "--since", at(11.5).isoformat())
    kinds = by_type(result)
    assert (result["labels"], result["anomalies"]) == (2, 3)
    assert {name: (k["labels"], k["true_positives"], k["false_positives"], k["misses"])
            for name, k in kinds.items()} == {"METER_FREEZE": (1, 1, 0, 0),
                                              "OVER_CURRENT": (1, 1, 0, 0),
                                              "STATUS_FLAPPING": (0, 0, 1, 0)}
    assert kinds["METER_FREEZE"]["median_latency_s"] == 35.0


def test_speed_comes_from_the_label_then_its_own_process_then_any_process():
    starts = scoring.run_speeds([
        {"timestamp": "2026-03-01T12:00:00.000000Z", "source": "cp", "data": {"speed": 10}},
        {"timestamp": "2026-03-01T12:00:05.000000Z", "source": "csms", "data": {"speed": 5}},
        {"timestamp": "2026-03-01T12:00:06.000000Z", "source": "charger", "data": {}},
        {"timestamp": "2026-03-01T12:00:07.000000Z", "source": "x", "data": "not a dict"}])
    assert [speed for _, _, speed in starts] == [10.0, 5.0]
    labels = scoring.with_speed([
        {"start": "2026-03-01T12:00:10Z", "source": "cp", "parameters": {"speed": 2.0}},
        {"start": "2026-03-01T12:00:10Z", "source": "cp", "parameters": {"kind": "k"}},
        {"start": "2026-03-01T12:00:10Z", "source": "charger", "parameters": None},
        {"start": "2026-03-01T11:00:00Z", "source": "cp", "parameters": {}}], starts)
    assert [label["parameters"].get("speed") for label in labels] == [2.0, 10.0, 5.0, None]
    assert labels[1]["parameters"]["kind"] == "k"


def run_viewer(db: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(script("memory_viewer.py", "--db", str(db), *args),
                          capture_output=True, text=True, timeout=30, env=ENV, cwd=ROOT)


def test_score_on_the_command_line_as_json_and_as_a_table(scored_db):
    result = run_viewer(scored_db, "--score", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["score"] == score_of(scored_db)
    result = run_viewer(scored_db, "--score")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Score:") and "No labels" not in result.stdout
    row = next(line for line in lines if line.startswith("METER_FREEZE")).split()
    assert row == ["METER_FREEZE", "3", "3", "2", "1", "1", "0.67", "0.67", "22.5", "35.0"]
    row = next(line for line in lines if line.startswith("STATUS_FLAPPING")).split()
    assert row == ["STATUS_FLAPPING", "0", "1", "0", "1", "0", "0.00", "-", "-", "-"]
    assert max(map(len, lines)) <= 100


def test_an_empty_bank_has_no_labels_to_score(db_path):
    MemoryBank(db_path).close()
    result = run_viewer(db_path, "--score")
    assert result.returncode == 0, result.stderr
    assert "No labels (ground truth) to score" in result.stdout
    assert "Traceback" not in result.stderr
    result = run_viewer(db_path, "--score", "--json")
    assert json.loads(result.stdout)["score"] == {"labels": 0, "anomalies": 0, "kinds": []}
