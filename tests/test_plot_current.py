"""plot_current.py: headless against a live bus and the charger module, and --from-db."""
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import can
import pytest
from PIL import Image

import frames
import plot_current
from benchmarks.detector import charger_signal, seed_commands
from conftest import ROOT, free_port, port_open, script, start, stop, wait_for
from memory_bank import MemoryBank
from plot_current import History, LiveView

SPEED = 10.0


def png_size(path: Path) -> tuple[int, int]:
    """The pixel size of a complete, valid PNG (fails the test otherwise)."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        image.load()
        return image.size


def start_logged(cmd: list[str], log: Path, env: dict = None) -> subprocess.Popen:
    """Start a process whose output goes to ``log``, so the test can watch it as it runs."""
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
                                env={**(env or os.environ), "PYTHONUNBUFFERED": "1"})


def drive_seed_scenario(url: str, cycles: int, speed: float) -> None:
    """Send the seed's fluctuation commands on the bus, on the scenario's own (scaled) clock."""
    steps = []
    for cycle in range(cycles):
        base = cycle * 8
        steps += [(base, frames.set_limit(0)), (base + 2, frames.set_limit(100)),
                  (base + 3, frames.start()), (base + 5, frames.stop())]
    bus = can.Bus(interface="remote", channel=url)
    try:
        begin = time.monotonic()
        for at, message in steps:
            time.sleep(max(0.0, begin + at / speed - time.monotonic()))  # scenario timing
            bus.send(message)
    finally:
        bus.shutdown()


def test_headless_png_from_a_live_bus_with_the_charger_module(bus_server, tmp_path):
    png, log, db = tmp_path / "current.png", tmp_path / "plot.log", tmp_path / "absent.db"
    charger = start(script("charger_module.py", "--speed", str(SPEED), "--period", "1",
                           "--ramp", "0.2", "--can-interface", "remote",
                           "--can-channel", bus_server))
    plot = start_logged(script("plot_current.py", "--headless", "--output", str(png),
                               "--size", "640x400", "--refresh", "0.3", "--speed", str(SPEED),
                               "--db", str(db), "--can-interface", "remote",
                               "--can-channel", bus_server), log)
    try:
        wait_for(png.exists, timeout=20, message="the first PNG")
        scenario = threading.Thread(target=drive_seed_scenario, args=(bus_server, 4, SPEED))
        scenario.start()
        while scenario.is_alive():
            assert png_size(png) == (640, 400)  # never half written, however often it is read
            scenario.join(timeout=0.05)
        wait_for(lambda: "detector started" in log.read_text(), timeout=10,
                 message="the plotter's detector to fire on the seed scenario")
    finally:
        code, _ = stop(plot)
        stop(charger)
    output = log.read_text()
    assert code == 0, output
    assert "Traceback" not in output
    assert int(output.split("received ")[1].split()[0]) >= 10
    assert png_size(png) == (640, 400)
    assert not db.exists(), "the plotter opens the MemoryBank read-only, never creates it"
    assert not list(tmp_path.glob("*.partial"))


def test_waits_for_the_bus_with_one_hint_and_falls_back_to_headless(tmp_path):
    port = free_port()
    url = f"ws://127.0.0.1:{port}/"
    png, log = tmp_path / "current.png", tmp_path / "plot.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    plot = start_logged(script("plot_current.py", "--output", str(png), "--refresh", "0.2",
                               "--can-interface", "remote", "--can-channel", url), log, env)
    server = None
    try:
        wait_for(png.exists, timeout=20, message="the PNG of the waiting plotter")
        assert png_size(png) == (1000, 600)
        wait_for(lambda: "start it with" in log.read_text(), message="the hint")
        server = start([sys.executable, "-m", "can_remote", "--interface", "virtual",
                        "--channel", "0", "--host", "127.0.0.1", "--port", str(port)])
        wait_for(lambda: port_open(port), message="the bus server")
        wait_for(lambda: "connected" in log.read_text(), timeout=10, message="the reconnect")
        bus = can.Bus(interface="remote", channel=url)
        try:
            def received_some() -> bool:
                bus.send(frames.measured_current(12.5))
                return "first: 12.5 A" in log.read_text()
            wait_for(received_some, timeout=10, interval=0.2, message="a 0x300 frame")
        finally:
            bus.shutdown()
    finally:
        code, _ = stop(plot)
        if server:
            stop(server)
    output = log.read_text()
    assert code == 0, output
    lines = output.splitlines()
    assert sum("no display" in line for line in lines) == 1
    assert sum("not reachable" in line for line in lines) == 1, "one hint, then quiet retries"
    assert "Traceback" not in output


# -- --from-db, in process ---------------------------------------------------------------------

CP, TX = "CP_7", 42


@pytest.fixture
def filled_db(db_path):
    """A session of the seed's fluctuation, its anomaly, and another charge point's session."""
    begin = datetime.now(timezone.utc) - timedelta(minutes=10)
    samples = charger_signal(seed_commands(4), 32)
    with MemoryBank(db_path) as bank:
        bank.start_session(CP, TX, start_time=begin, meter_start_wh=0)
        bank.record_metrics({"name": "current", "value": amps, "unit": "A", "source": "csms",
                             "charge_point_id": CP, "transaction_id": TX,
                             "timestamp": begin + timedelta(seconds=t)} for t, amps in samples)
        bank.record_anomaly("CURRENT_FLUCTUATION", "MEDIUM", "3 swings", current_value=20,
                            charge_point_id=CP, transaction_id=TX,
                            timestamp=begin + timedelta(seconds=11))
        bank.end_session(CP, TX, end_time=begin + timedelta(seconds=32), meter_stop_wh=200)
        bank.start_session("CP_8", TX, start_time=begin, meter_start_wh=0)
        bank.record_metrics({"name": "current", "value": 32.0, "unit": "A", "source": "csms",
                             "charge_point_id": "CP_8", "transaction_id": TX,
                             "timestamp": begin + timedelta(seconds=t)} for t in range(32))
    return db_path


def test_from_db_draws_a_session_and_a_time_range(filled_db, tmp_path):
    session_png, range_png = tmp_path / "session.png", tmp_path / "range.png"
    assert plot_current.main(["--db", str(filled_db), "--from-db", str(TX), "--cp", CP,
                              "--output", str(session_png), "--size", "800x500"]) == 0
    assert png_size(session_png) == (800, 500)
    assert plot_current.main(["--db", str(filled_db), "--from-db", "--since", "1h",
                              "--output", str(range_png)]) == 0
    assert png_size(range_png) == (1000, 600)


def test_from_db_chart_holds_the_session_and_its_anomaly(filled_db):
    args = plot_current.build_parser().parse_args(["--db", str(filled_db), "--from-db", str(TX),
                                                   "--cp", CP])
    with MemoryBank(filled_db, readonly=True) as bank:
        chart = plot_current.past_chart(bank, args)
    [(name, xs, amps)] = chart.series
    assert name == CP and len(amps) == 33 and max(amps) == pytest.approx(36.0)
    assert [severity for _, severity in chart.markers] == ["MEDIUM"]
    assert chart.alarm.startswith("1 ANOMALY") and "MEDIUM" in chart.history[1]


@pytest.mark.parametrize("argv, code, message", [
    (["--from-db", "999"], 1, "no session with transaction id 999"),
    (["--from-db", str(TX)], 1, "on several charge points (CP_7, CP_8): choose one with --cp"),
    (["--from-db"], 2, "needs a session's transaction id or --since"),
    (["--since", "1h"], 2, "go with --from-db"),
    (["--from-db", "--since", "1h", "--cp", "nobody"], 1, "no current samples"),
])
def test_from_db_bad_requests_are_one_line(filled_db, tmp_path, capsys, argv, code, message):
    png = tmp_path / "x.png"
    assert plot_current.main(["--db", str(filled_db), "--output", str(png), *argv]) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not png.exists()


@pytest.mark.parametrize("mode", [["--headless", "--duration", "1"], ["--from-db", "1"]])
def test_an_output_that_cannot_be_written_is_refused_up_front(tmp_path, capsys, mode):
    for output, message in ((tmp_path / "no" / "x.png", "does not exist"),
                            (tmp_path, "is a directory")):
        assert plot_current.main([*mode, "--output", str(output),
                                  "--db", str(tmp_path / "absent.db")]) == 2
        assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_from_db_without_a_database_says_so_and_creates_nothing(tmp_path, capsys):
    db = tmp_path / "missing.db"
    assert plot_current.main(["--db", str(db), "--from-db", "--since", "1h",
                              "--output", str(tmp_path / "x.png")]) == 1
    assert "no MemoryBank database" in capsys.readouterr().err and not db.exists()


# -- the chart model, pure ---------------------------------------------------------------------

def test_live_view_keeps_the_window_and_raises_the_alarm_on_the_seed_shape():
    view = LiveView(window_s=30)
    for t, amps in charger_signal(seed_commands(3), 24):
        view.add(t, amps)
    stamp = datetime.now(timezone.utc).isoformat()
    history = History(({"timestamp": stamp, "severity": "HIGH", "charge_point_id": "CP_1"},))
    chart = view.chart(24.0, history, to_x=lambda _: 20.0)
    [(_, xs, amps)] = chart.series
    assert min(xs) >= 0 and max(xs) == 24 and chart.xlim == (0.0, 30)
    assert chart.alarm.startswith("FLUCTUATION HIGH") and "period 8.0 s" in chart.alarm
    assert chart.markers == [(20.0, "HIGH")] and chart.waiting is None
    assert chart.stats[3] == "max    36.0 A" and chart.episodes == [(2.0, 24.0)]
    assert "1 anomaly" in chart.history[0] and "HIGH" in chart.history[1]
    later = view.chart(90.0, History(problem="no MemoryBank database at x.db"), lambda _: 20.0)
    assert later.xlim == (60.0, 90.0) and later.markers == []
    assert later.history[0] == "MemoryBank (retrying):"


def test_waiting_view_says_so():
    chart = LiveView(60).chart(5.0, History(), lambda _: 0.0)
    assert chart.waiting.startswith("waiting for CAN data") and chart.alarm is None


def test_no_display_is_detected(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        assert "no display" in plot_current.gui_unavailable()
