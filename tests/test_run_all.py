"""run_all.sh end to end: the whole site as real processes, headless and in tmux."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, free_port, port_open, wait_for

RUN_ALL = str(ROOT / "run_all.sh")


@pytest.fixture(autouse=True)
def default_db_in_the_workdir(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_all.sh's own default: ev_charging_memory.db in the site's work directory."""
    monkeypatch.delenv("EV_SIM_DB", raising=False)


SITES: dict[Path, tuple[int, int]] = {}


def site_args(workdir: Path) -> list[str]:
    """Arguments for a site of its own: a work directory and free ports, remembered for it."""
    SITES[workdir] = (free_port(), free_port())
    port, bus_port = SITES[workdir]
    return ["--workdir", str(workdir), "--port", str(port), "--bus-port", str(bus_port),
            "--api-port", str(free_port()), "--cp-api-port", str(free_port())]


def processes_of(workdir: Path) -> list[str]:
    """Command lines of the Python processes still running that belong to that site."""
    port, bus_port = SITES[workdir]
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "python" in line and
            (f"127.0.0.1:{bus_port}/" in line or f"--port {bus_port}" in line
             or f"--port {port}" in line or f"127.0.0.1:{port}" in line)]


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def run_headless(workdir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([RUN_ALL, "--headless", *site_args(workdir), *args], capture_output=True,
                          text=True, timeout=timeout)


def stop_site(workdir: Path, run: subprocess.Popen) -> tuple[subprocess.CompletedProcess, str]:
    """``run_all.sh --stop``, and run_all.sh's output once it has exited (killed if it has not
    within a minute)."""
    stopped = subprocess.run([RUN_ALL, "--stop", "--workdir", str(workdir)], capture_output=True,
                             text=True, timeout=60)
    try:
        out, _ = run.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        run.kill()
        out, _ = run.communicate()
    return stopped, out


def test_fluctuation_site_records_the_anomaly(tmp_path):
    result = run_headless(tmp_path, "--duration", "12", "--speed", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    db = tmp_path / "ev_charging_memory.db"
    events = " ".join(r[0] for r in rows(db, "SELECT description FROM events"))
    assert "BootNotification" in events and "MeterValues" in events
    sessions = rows(db, "SELECT energy_wh, stop_reason FROM sessions WHERE end_time IS NOT NULL")
    assert len([energy for energy, _ in sessions if energy > 0]) >= 2, sessions
    assert rows(db, "SELECT COUNT(*) FROM sessions WHERE end_time IS NULL") == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM anomalies WHERE anomaly_type = 'CURRENT_FLUCTUATION'")[0][0] >= 1
    assert rows(db, "SELECT COUNT(*) FROM patterns")[0][0] >= 1
    png = tmp_path / "plots" / "current.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Summary" in result.stdout
    assert processes_of(tmp_path) == []


def test_normal_site_with_a_fleet_has_sessions_and_no_anomaly(tmp_path):
    result = run_headless(tmp_path, "--duration", "8", "--speed", "10", "--scenario", "normal",
                          "--fleet", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "and a fleet of 5" in result.stdout
    db = tmp_path / "ev_charging_memory.db"
    assert rows(db, "SELECT DISTINCT charge_point_id FROM sessions ORDER BY 1") == [
        ("CP_0001",), ("CP_0002",), ("CP_0003",), ("CP_0004",), ("CP_0005",), ("CP_1",)]
    assert rows(db, "SELECT COUNT(*) FROM sessions WHERE end_time IS NULL") == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM metrics WHERE name = 'current' AND value > 30")[0][0] >= 3
    assert rows(db, "SELECT COUNT(*) FROM anomalies")[0][0] == 0
    # the fleet records its state; its samples are the central system's to record
    assert rows(db, "SELECT DISTINCT charge_point_id FROM metrics WHERE source = 'cp'") == \
        [("CP_1",)]
    assert processes_of(tmp_path) == []


def test_stop_stops_a_running_site_and_a_second_start_is_refused(tmp_path):
    args = site_args(tmp_path)
    first = subprocess.Popen([RUN_ALL, "--headless", *args, "--speed", "10"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (tmp_path / ".run" / "run_all.pid").exists() or first.poll() is not None,
                 timeout=90, message="the site to start")
        assert first.poll() is None
        assert len(processes_of(tmp_path)) == 5
        second = subprocess.run([RUN_ALL, "--headless", *args], capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 1 and "already running" in second.stderr
        stopped = subprocess.run([RUN_ALL, "--stop", "--workdir", str(tmp_path)],
                                 capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert processes_of(tmp_path) == []
    assert not port_open(int(args[args.index("--port") + 1]))


def test_a_busy_port_is_refused_before_anything_starts(tmp_path):
    busy = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", busy))
        blocker.listen()
        args = site_args(tmp_path)
        args[args.index("--port") + 1] = str(busy)
        result = subprocess.run([RUN_ALL, "--headless", *args], capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 1
    assert f"port {busy} on 127.0.0.1 is in use" in result.stderr
    assert processes_of(tmp_path) == []


def test_a_process_that_cannot_start_fails_the_run_with_its_log(tmp_path):
    bad_db = tmp_path / "no" / "such" / "dir" / "x.db"
    result = run_headless(tmp_path, "--db", str(bad_db))
    assert result.returncode == 1
    # the charger and csms both open the database: the first to die is named, with its log
    failed = re.search(r"run_all.sh: error: (charger|csms) exited during start-up", result.stderr)
    assert failed, result.stderr
    assert f"last lines of {tmp_path}/logs/{failed.group(1)}.log" in result.stderr
    assert "MemoryBank" in result.stderr
    assert processes_of(tmp_path) == []


def test_ctrl_c_stops_every_process_in_order_and_closes_the_session(tmp_path):
    args = site_args(tmp_path)
    site = subprocess.Popen([RUN_ALL, "--headless", *args, "--speed", "10", "--scenario", "normal"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        db = tmp_path / "ev_charging_memory.db"
        wait_for(lambda: ((tmp_path / ".run" / "run_all.pid").exists() and db.exists()
                 and rows(db, "SELECT COUNT(*) FROM sessions")[0][0] == 1)
                 or site.poll() is not None, timeout=90, message="a running session")
        os.killpg(site.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
        output, _ = site.communicate(timeout=60)
    finally:
        if site.poll() is None:
            site.kill()
    assert site.returncode == 0, output
    assert "Summary" in output and "unexpectedly" not in output
    assert rows(db, "SELECT COUNT(*), COUNT(end_time) FROM sessions") == [(1, 1)]
    assert processes_of(tmp_path) == []


def test_stop_leaves_alone_a_process_that_only_reuses_a_recorded_pid(tmp_path):
    (tmp_path / ".run").mkdir()
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        for name in ("run_all", "csms"):
            (tmp_path / ".run" / f"{name}.pid").write_text(f"{stranger.pid}\n")
        result = subprocess.run([RUN_ALL, "--stop", "--workdir", str(tmp_path)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("args", [["--speed", "fast"], ["--speed", "0"], ["--port", "0"],
                                  ["--bus-port", "70000"], ["--duration", "-1"],
                                  ["--workdir", "--headless"], ["--bogus"], ["--seed", "x"],
                                  ["--inject"], ["--fleet", "0"], ["--fleet", "many"],
                                  ["--scenario", "normal", "--scenario-mix", "normal=1"],
                                  ["--fleet", "3", "--secure"]])
def test_bad_arguments_exit_2(args):
    result = subprocess.run([RUN_ALL, *args], capture_output=True, text=True)
    assert result.returncode == 2 and args[0] in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_injections_go_to_the_process_that_owns_them(tmp_path):
    args = site_args(tmp_path)
    site = subprocess.Popen([RUN_ALL, "--headless", *args, "--speed", "10", "--scenario",
                             "normal", "--seed", "5", "--inject", "dropout:after=1,for=2",
                             "--inject", "meter-gap:after=1,for=20"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    logs = tmp_path / "logs"
    try:
        def cp_log() -> str:
            path = logs / "cp.log"
            return path.read_text() if path.exists() else ""
        wait_for(lambda: "label CP_1 METER_VALUE_GAP" in cp_log() or site.poll() is not None,
                 timeout=90, message="the meter gap's label")
        assert site.poll() is None
        stopped, out = stop_site(tmp_path, site)
        assert stopped.returncode == 0, stopped.stderr
    finally:
        if site.poll() is None:
            site.kill()
    assert site.returncode == 0, out
    charger = (logs / "charger.log").read_text()
    cp = cp_log()
    assert "injecting dropout:after=1,for=2 (seed 5, charge point CP_1)" in charger
    assert "injecting meter-gap:after=1,for=20 (seed 5, charge point CP_1)" in cp
    assert "meter-gap" not in charger and "dropout" not in cp
    assert "Traceback" not in charger + cp


@pytest.mark.parametrize("spec, error", [
    ("teleport", "unknown fault kind 'teleport': valid kinds are oscillation"),
    ("meter-gap:for=x", "bad value 'x' for meter-gap for")])
def test_a_bad_injection_is_one_line_and_exit_2_before_anything_starts(tmp_path, spec, error):
    result = run_headless(tmp_path, "--inject", "dropout", "--inject", spec, timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and error in result.stderr
    assert "meter-freeze" in result.stderr or "valid parameters" in result.stderr
    assert not (tmp_path / "logs").exists() and not (tmp_path / ".run").exists()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tmux_mode_opens_one_window_per_process(tmp_path):
    env = {**os.environ, "TMUX_TMPDIR": str(tmp_path)}
    env.pop("TMUX", None)
    workdir = tmp_path / "site"
    started = subprocess.run([RUN_ALL, "--tmux", *site_args(workdir), "--speed", "10"],
                             capture_output=True, text=True, timeout=90, env=env,
                             stdin=subprocess.DEVNULL)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        windows = subprocess.run(["tmux", "list-windows", "-t", "ev-sim", "-F", "#{window_name}"],
                                 capture_output=True, text=True, env=env).stdout.split()
        assert windows == ["bus", "charger", "csms", "cp", "plot"]
        wait_for(lambda: len(processes_of(workdir)) >= 5, timeout=10, message="five processes")
    finally:
        stopped = subprocess.run([RUN_ALL, "--stop", "--workdir", str(workdir)], env=env,
                                 capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0
    assert subprocess.run(["tmux", "has-session", "-t", "ev-sim"], env=env,
                          capture_output=True).returncode != 0
    assert processes_of(workdir) == []


def test_a_process_that_dies_is_started_again_and_the_others_carry_on(tmp_path):
    args = site_args(tmp_path)
    site = subprocess.Popen([RUN_ALL, "--headless", *args, "--speed", "10", "--scenario",
                             "normal"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    db = tmp_path / "ev_charging_memory.db"
    pid_file = tmp_path / ".run" / "csms.pid"
    try:
        wait_for(lambda: ((tmp_path / ".run" / "run_all.pid").exists() and db.exists()
                          and rows(db, "SELECT COUNT(*) FROM sessions")[0][0] >= 1)
                 or site.poll() is not None, timeout=90, message="a running session")
        assert site.poll() is None
        killed = int(pid_file.read_text())
        os.kill(killed, signal.SIGKILL)

        def restarted() -> bool:
            return rows(db, "SELECT COUNT(*) FROM events WHERE event_type = 'PROCESS_RESTART' "
                            "AND source = 'csms'")[0][0] == 1

        wait_for(lambda: restarted() or site.poll() is not None, timeout=90,
                 message="csms started again")
        assert site.poll() is None
        assert int(pid_file.read_text()) != killed
        # the charge point, still running, connects to the new central system
        wait_for(lambda: rows(db, "SELECT COUNT(*) FROM events WHERE event_type = 'CONNECTED' "
                                  "AND source = 'csms'")[0][0] >= 2, timeout=90,
                 message="the charge point back")
        stopped, out = stop_site(tmp_path, site)
        assert stopped.returncode == 0, stopped.stderr
    finally:
        if site.poll() is None:
            site.kill()
    assert site.returncode == 0, out
    assert "csms stopped unexpectedly; starting it again in 1 s (restart 1 of 5" in out
    assert processes_of(tmp_path) == []
