"""memory_viewer.py as a subprocess on a database the test fills; its pure helpers in process."""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ROOT, script, wait_for

from evsim import cli
from evsim.bank import MemoryBank
from evsim.timefmt import local_time, parse_since
from evsim.viewer.format import WIDTH, fit_table, shorten
from evsim.viewer.main import build_parser

LONG_TEXT = "a description far too long for any terminal column " * 4
ENV = {**os.environ, "TZ": "UTC", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def now() -> datetime:
    """The time the test's data is made relative to: read by each test, never at import."""
    return datetime.now(UTC)


@pytest.fixture
def filled_db(db_path: Path, now: datetime) -> Path:
    """Events from two charge points (one 10 days old), anomalies, sessions, metrics, patterns."""
    with MemoryBank(db_path) as bank:
        bank.log_event("PROCESS_START", "csms", "csms started", {"port": 9000},
                       timestamp=now - timedelta(days=10))
        for i in range(6):
            cp = f"CP{i % 2 + 1}"
            bank.log_event("OCPP_MESSAGE", "csms", f"cp->csms CALL MeterValues #{i}",
                           {"action": "MeterValues", "payload": {"text": LONG_TEXT}}, cp,
                           timestamp=now - timedelta(minutes=30 - i))
        bank.log_event("CAN_FRAME", "cp", "set limit 100% of 16_A", {"id": "0x210"}, "CP1",
                       timestamp=now - timedelta(minutes=5))
        bank.log_event("CAN_FRAME", "o'brien", LONG_TEXT, {"id": "0x300"}, "CP2",
                       timestamp=now - timedelta(minutes=4))
        bank.record_anomaly("CURRENT_FLUCTUATION", "HIGH", "jump to 30 A " + LONG_TEXT, 30.0,
                            16.0, 87.5, {"rule": "delta"}, "CP1", 1,
                            timestamp=now - timedelta(minutes=20))
        bank.record_anomaly("CURRENT_FLUCTUATION", "LOW", "wobble", 16.4, 16.0, 2.5,
                            charge_point_id="CP2", timestamp=now - timedelta(minutes=3))
        bank.start_session("CP1", 1, start_time=now - timedelta(minutes=40), meter_start_wh=0)
        for minute, amps in enumerate([10.0, 16.0, 22.0]):
            bank.record_metric("current", amps, "A", "charger", "CP1", 1,
                               timestamp=now - timedelta(minutes=30 - minute))
        bank.record_metric("voltage", 230.0, "V", "cp", "CP1", 1, timestamp=now)
        bank.end_session("CP1", 1, end_time=now - timedelta(minutes=10), meter_stop_wh=4200,
                         stop_reason="EVDisconnected")
        bank.start_session("CP2", 2, start_time=now - timedelta(minutes=2))
        bank.learn_pattern("charging_profile_CP1", {"mean": 16.0, "note": LONG_TEXT}, 0.75)
    return db_path


def viewer(db: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(script("memory_viewer.py", "--db", str(db), *args), input=stdin,
                          capture_output=True, text=True, timeout=30, env=ENV, cwd=ROOT)


def ok(db: Path, *args: str, stdin: str = "") -> str:
    result = viewer(db, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def as_json(db: Path, *args: str) -> dict:
    return json.loads(ok(db, "--json", *args))


def descriptions(rows: list[dict]) -> list[str]:
    return [row["description"] for row in rows]


# -- flags ----------------------------------------------------------------------------------------

def test_summary_shows_the_totals(filled_db):
    out = ok(filled_db, "--summary")
    assert f"Database            {filled_db}" in out
    assert "Events              9\n" in out
    assert "OCPP_MESSAGE 6, CAN_FRAME 2, PROCESS_START 1" in out
    assert "Charge points       CP1, CP2" in out
    assert "Anomalies           2 (LOW 1, MEDIUM 0, HIGH 1, CRITICAL 0)" in out
    assert "LOW CURRENT_FLUCTUATION on CP2: wobble" in out
    assert "Sessions            2 (1 active)" in out
    assert "Energy delivered    4.20 kWh" in out


def test_every_table_fits_in_100_columns_and_shows_short_local_times(filled_db, now):
    out = ok(filled_db, "--summary", "--events", "--anomalies", "--sessions", "--patterns",
             "--stats")
    for title in ("Events (last 20, newest first)", "Anomalies (last 20, newest first)",
                  "Sessions (last 20, newest first)", "Learned patterns", "Metric statistics"):
        assert title in out
    too_wide = [line for line in out.splitlines() if len(line) > WIDTH]
    assert too_wide == []
    assert "…" in out, "long text is shortened"
    assert now.strftime("%m-%d %H:%M:%S") in out      # TZ=UTC in the subprocess
    assert "T" + now.strftime("%H:%M") not in out, "no raw ISO timestamps in tables"


def test_events_are_newest_first_and_limited(filled_db):
    out = ok(filled_db, "--events", "3")
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3
    assert "o'brien" in rows[0] and "100% of 16_A" in rows[1] and "MeterValues #5" in rows[2]
    assert descriptions(as_json(filled_db, "--events", "2")["events"])[1] \
        == "set limit 100% of 16_A"


@pytest.mark.parametrize("args, expected", [
    (("--type", "CAN_FRAME"), [LONG_TEXT, "set limit 100% of 16_A"]),
    (("--source", "cp"), ["set limit 100% of 16_A"]),
    (("--cp", "CP2", "--type", "OCPP_MESSAGE"),
     ["cp->csms CALL MeterValues #5", "cp->csms CALL MeterValues #3",
      "cp->csms CALL MeterValues #1"]),
    (("--since", "26m"), [LONG_TEXT, "set limit 100% of 16_A", "cp->csms CALL MeterValues #5"]),
    (("--since", lambda now: (now - timedelta(minutes=4, seconds=1)).isoformat()), [LONG_TEXT]),
    (("--since", lambda now: (now - timedelta(minutes=4, seconds=1)).strftime(
        "%Y-%m-%dT%H:%M:%S")), [LONG_TEXT]),                    # naive = local (TZ=UTC)
    (("--search", "meterValues #4"), ["cp->csms CALL MeterValues #4"]),
    (("--search", "%"), ["set limit 100% of 16_A"]),
    (("--search", "_A"), ["set limit 100% of 16_A"]),
    (("--source", "o'brien"), [LONG_TEXT]),
    (("--source", "csms' OR '1'='1"), []),
    (("--cp", "CP1\" OR 1=1 --"), []),
    (("--type", "%"), []),
])
def test_event_filters(filled_db, now, args, expected):
    args = [arg(now) if callable(arg) else arg for arg in args]
    assert descriptions(as_json(filled_db, "--events", "50", *args)["events"]) == expected


def test_anomaly_session_pattern_and_statistics_sections(filled_db):
    data = as_json(filled_db, "--anomalies", "--sessions", "--patterns", "--stats")
    assert set(data) == {"anomalies", "sessions", "patterns", "stats"}
    assert [a["severity"] for a in data["anomalies"]] == ["LOW", "HIGH"]
    assert [s["charge_point_id"] for s in data["sessions"]] == ["CP2", "CP1"]
    assert data["sessions"][1]["avg_current"] == 16.0
    assert data["patterns"][0]["parameters"]["mean"] == 16.0
    stats = {s["name"]: s for s in data["stats"]}
    assert stats["current"]["count"] == 3 and stats["current"]["latest"] == 22.0
    assert stats["voltage"]["unit"] == "V"

    assert descriptions(as_json(filled_db, "--anomalies", "--cp", "CP2")["anomalies"]) \
        == ["wobble"]
    assert descriptions(as_json(filled_db, "--anomalies", "--severity", "high")["anomalies"]) \
        [0].startswith("jump to 30 A")
    assert as_json(filled_db, "--anomalies", "--since", "10m")["anomalies"][0]["severity"] \
        == "LOW"
    assert as_json(filled_db, "--stats", "--cp", "CP2")["stats"] == []
    by_source = as_json(filled_db, "--stats", "--source", "cp")["stats"]
    assert [(s["name"], s["source"]) for s in by_source] == [("voltage", "cp")]

    table = ok(filled_db, "--sessions")
    cp1 = next(line for line in table.splitlines() if line.startswith("CP1"))
    assert "4200" in cp1 and "10/16/22" in cp1 and "EVDisconnected" in cp1
    assert "active" in next(line for line in table.splitlines() if line.startswith("CP2"))
    assert "0.75" in ok(filled_db, "--patterns")


def test_export_json_and_csv(filled_db, tmp_path):
    out = ok(filled_db, "--export", str(tmp_path / "all.json"))
    assert f"Exported 9 events, 2 anomalies, 2 sessions, 4 metrics, 1 patterns, 0 id_tags, " \
           f"0 labels to {tmp_path / 'all.json'}" in out
    exported = json.loads((tmp_path / "all.json").read_text())
    assert len(exported["events"]) == 9 and exported["patterns"][0]["confidence"] == 0.75

    ok(filled_db, "--export", str(tmp_path / "frames.csv"), "--type", "CAN_FRAME")
    with open(tmp_path / "frames.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["description"] for row in rows] == ["set limit 100% of 16_A", LONG_TEXT]
    assert json.loads(rows[0]["data"]) == {"id": "0x210"}

    failed = viewer(filled_db, "--export", str(tmp_path / "missing" / "x.json"))
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1
    assert "cannot export to" in failed.stderr


def test_export_refuses_the_database_and_its_files(filled_db, tmp_path):
    csv_named = tmp_path / "bank.csv"   # a database whose name would make the export CSV
    csv_named.write_bytes(filled_db.read_bytes())
    for db, target in ((filled_db, filled_db), (filled_db, f"{filled_db}-wal"),
                       (filled_db, f"{filled_db}-shm"), (filled_db, tmp_path / "." / "memory.db"),
                       (csv_named, csv_named)):
        content = Path(db).read_bytes()
        result = viewer(db, "--export", str(target), "--events", "1")
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert result.stderr == (f"memory_viewer: error: --export {target} is the MemoryBank "
                                 f"database {db} or one of its files: export to another file\n")
        assert Path(db).read_bytes() == content
    assert "Events              9" in ok(filled_db, "--summary")
    assert "Events              9" in ok(csv_named, "--summary")


def test_export_dataset_writes_one_csv_per_table_ready_for_pandas(filled_db, tmp_path, now):
    with MemoryBank(filled_db) as bank:
        bank.record_label("CP1", "CURRENT_FLUCTUATION", now - timedelta(minutes=21),
                          now - timedelta(minutes=19), {"kind": "oscillation", "speed": 1.0},
                          4, "charger")
    target = tmp_path / "dataset"
    out = ok(filled_db, "--export-dataset", str(target))
    assert out == (f"Exported 4 metrics, 9 events, 1 labels, 2 anomalies to {target} as CSV "
                   f"(no Parquet: pyarrow is not installed)\n")
    assert sorted(path.name for path in target.iterdir()) == [
        "anomalies.csv", "events.csv", "labels.csv", "metrics.csv"]
    with open(target / "labels.csv", newline="", encoding="utf-8") as handle:
        (label,) = csv.DictReader(handle)
    assert (label["charge_point_id"], label["anomaly_type"], label["seed"], label["source"]) == (
        "CP1", "CURRENT_FLUCTUATION", "4", "charger")
    assert json.loads(label["parameters"]) == {"kind": "oscillation", "speed": 1.0}
    assert label["end"] > label["start"]

    filtered = as_json(filled_db, "--export-dataset", str(tmp_path / "cp2"), "--cp", "CP2")
    assert filtered["export_dataset"] == {
        "path": str(tmp_path / "cp2"), "rows": {"metrics": 0, "events": 4, "labels": 0,
                                                 "anomalies": 1}, "formats": ["csv"]}
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_csv(target / "metrics.csv")
    assert list(frame.columns) == ["id", "timestamp", "name", "value", "unit", "source",
                                   "charge_point_id", "transaction_id"]
    assert frame["value"].tolist() == [10.0, 16.0, 22.0, 230.0]


def test_export_dataset_refuses_a_directory_that_is_not_empty(filled_db, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    (tmp_path / "afile").write_text("mine")
    for target, message in ((full, "is not empty: export the dataset to a new or empty "
                                   "directory"),
                            (tmp_path / "afile", "exists and is not a directory")):
        result = viewer(filled_db, "--export-dataset", str(target), "--summary")
        assert (result.returncode, result.stdout) == (2, ""), result.stderr
        assert result.stderr == f"memory_viewer: error: --export-dataset {target} {message}\n"
    assert [path.name for path in full.iterdir()] == ["notes.txt"]
    assert (full / "notes.txt").read_text() == (tmp_path / "afile").read_text() == "mine"


def test_score_without_labels_says_so_and_counts_the_anomalies_as_false(filled_db):
    out = ok(filled_db, "--score")
    assert "No labels (ground truth) to score" in out
    row = next(line for line in out.splitlines() if line.startswith("CURRENT_FLUCTUATION"))
    assert row.split() == ["CURRENT_FLUCTUATION", "0", "2", "0", "2", "0", "0.00", "-", "-", "-"]
    assert as_json(filled_db, "--score", "--cp", "CP2")["score"]["anomalies"] == 1


def test_no_flags_and_no_terminal_prints_the_summary(filled_db):
    out = ok(filled_db)
    assert out.startswith("Summary") and "Events              9" in out


# -- errors ---------------------------------------------------------------------------------------

def test_missing_database_is_one_line_exit_1_and_creates_nothing(tmp_path):
    missing = tmp_path / "nothing.db"
    for args in ((), ("--summary",), ("--menu",)):
        result = viewer(missing, *args, stdin="1\n")
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr == (f"memory_viewer: error: no MemoryBank database at {missing}: "
                                 f"run ./run_all.sh (or csms.py) to create it\n")
    assert list(tmp_path.iterdir()) == []


def test_missing_default_database_names_the_default_path(tmp_path):
    result = subprocess.run(script("memory_viewer.py", "--summary"), capture_output=True,
                            text=True, timeout=30, cwd=tmp_path,
                            env={**ENV, "EV_SIM_DB": ""})
    assert result.returncode == 1
    assert "no MemoryBank database at ev_charging_memory.db" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_database_is_one_line_exit_1(tmp_path):
    bogus = tmp_path / "bogus.db"
    bogus.write_text("not a database at all\n" * 40)
    result = viewer(bogus, "--summary")
    assert (result.returncode, result.stderr) == (
        1, f"memory_viewer: error: {bogus} is not a SQLite database\n")


@pytest.mark.parametrize("args, message", [
    (("--since", "yesterday"), "neither a duration"),
    (("--events", "many"), "not a whole number"),
    (("--events", "99999999999999999999"), "must be 0 to 9223372036854775807"),
    (("--anomalies", str(2**63)), "must be 0 to"),
    (("--severity", "HUGE"), "invalid choice"),
])
def test_bad_arguments_exit_2_without_a_traceback(filled_db, args, message):
    result = viewer(filled_db, *args)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


# -- the interactive menu -------------------------------------------------------------------------

def test_menu_driven_through_stdin(filled_db, tmp_path):
    export = tmp_path / "menu.json"
    answers = ["7x", "1",           # invalid choice re-prompts, then the summary
               "2", "lots", "99999999999999999999", "²", "2",  # bad numbers re-prompt
               "3", "",             # anomalies, default count
               "4", "1", "5", "6",
               "7", "MeterValues #2",
               "8", str(filled_db), f"{filled_db}-wal", str(export),  # not over the database
               "9", "7", "n",       # clean old data: refused
               "9", "7", "y",       # clean old data: confirmed
               "0"]
    out = ok(filled_db, "--menu", stdin="\n".join(answers) + "\n")
    assert "Invalid choice '7x': enter a number from 0 to 10." in out
    assert "Events              9" in out
    assert "Try again: not a whole number: 'lots'" in out
    assert "Try again: must be 0 to 9223372036854775807, got '99999999999999999999'" in out
    assert "Try again: not a whole number: '²'" in out
    assert out.count("How many events? [20]: ") == 4
    assert f"{filled_db} is the MemoryBank database {filled_db} or one of its files" in out
    assert f"{filled_db}-wal is the MemoryBank database" in out
    assert out.count("Export to file") == 3
    assert "Events (last 2, newest first)" in out
    assert "Anomalies (last 20, newest first)" in out
    assert "Sessions (last 1, newest first)" in out
    assert "charging_profile_CP1" in out and "Metric statistics" in out
    assert "Events containing 'MeterValues #2'" in out and "MeterValues #2 " in out
    assert f"to {export}" in out and json.loads(export.read_text())["events"]
    assert "Nothing deleted." in out
    assert "Deleted 1 events, 0 anomalies, 0 metrics, 0 sessions" in out
    assert out.count("0. Exit") == 12
    with MemoryBank(filled_db, readonly=True) as bank:
        assert bank.get_dashboard_summary()["total_events"] == 8


def test_menu_leaves_cleanly_on_end_of_input(filled_db):
    out = ok(filled_db, "--menu", stdin="1\n")
    assert "Events              9" in out and out.count("Choose 0-10") == 2


def test_menu_leaves_cleanly_on_ctrl_c(filled_db):
    proc = subprocess.Popen(script("memory_viewer.py", "--db", str(filled_db), "--menu"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stdout.read(1), "")),
                              daemon=True)
    reader.start()
    try:
        wait_for(lambda: "Choose 0-10" in "".join(seen), message="the menu prompt")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# -- pure helpers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, back", [
    ("90s", timedelta(seconds=90)), ("10m", timedelta(minutes=10)), ("2h", timedelta(hours=2)),
    ("3d", timedelta(days=3)), ("1w", timedelta(weeks=1)), ("1.5H", timedelta(hours=1.5)),
])
def test_parse_since_durations_are_that_long_before_now(text, back):
    since = parse_since(text)
    assert since.tzinfo == UTC
    assert abs(datetime.now(UTC) - back - since) < timedelta(seconds=5)


@pytest.mark.parametrize("text, expected", [
    ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
])
def test_parse_since_iso_times(text, expected):
    assert parse_since(text) == expected


def test_parse_since_takes_a_time_without_offset_as_local():
    assert parse_since("2024-05-01T12:00") == datetime(2024, 5, 1, 12, 0).astimezone()


@pytest.mark.parametrize("text", ["99999999999d", "1000000d", "0001-01-01T00:00:00+05:00"])
def test_parse_since_too_far_back_is_a_value_error(text):
    with pytest.raises(ValueError, match="too far back"):
        parse_since(text)


@pytest.mark.parametrize("text", ["", "10", "m10", "ten minutes", "2024-13-01", "-5m"])
def test_parse_since_rejects_nonsense(text):
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since(text)


def test_fit_table_cuts_the_free_text_column_to_the_width():
    rows = [("1", "x" * 50, "y" * 500), ("22", "short", "tiny")]
    table = fit_table(("ID", "Name", "Text"), rows, (8, 20, 1000), right=(0,), width=60)
    lines = table.splitlines()
    assert max(map(len, lines)) == 60
    assert lines[2].split()[1] == "x" * 19 + "…"
    assert lines[3].split() == ["22", "short", "tiny"]
    assert shorten("abcdef", 4) == "abc…" and shorten("abc", 4) == "abc"
    assert local_time(None) == ""


def test_since_is_a_usage_error_and_there_is_no_speed(capsys):
    parser = build_parser()
    with pytest.raises(argparse.ArgumentTypeError, match="too far back"):
        cli.since_argument("1000000d")
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--since", "soon"])
    assert stopped.value.code == 2 and "neither a duration" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--speed", "2"])
    assert stopped.value.code == 2
    assert "unrecognized arguments: --speed" in capsys.readouterr().err
