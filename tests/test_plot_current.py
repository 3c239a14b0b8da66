"""plot_current.py: headless against a live bus and the charger module, and --from-db."""
import itertools
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import can
import numpy
import pytest
from conftest import free_port, port_open, script, start, stop, wait_for
from PIL import Image

from evsim.bank import MemoryBank
from evsim.canbus import frames
from evsim.canbus.bus import bus_config
from evsim.clock import FakeClock
from evsim.detection.signals import charger_signal, seed_commands
from evsim.plot import live, past
from evsim.plot.chart import History, LiveView
from evsim.plot.draw import ALARM_RED
from evsim.plot.main import build_parser, main

SPEED = 10.0


def png_size(path: Path) -> tuple[int, int]:
    """The pixel size of a complete, valid PNG (fails the test otherwise)."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        image.load()
        return image.size


ALARM_RGB = tuple(bytes.fromhex(ALARM_RED.lstrip("#")))


def alarm_pixels(path: Path) -> int:
    """How many pixels of the PNG have the red of the anomaly indicator."""
    with Image.open(path) as image:
        pixels = numpy.asarray(image.convert("RGB"))
    return int((pixels == ALARM_RGB).all(axis=-1).sum())


def alarm_shown(path: Path) -> bool:
    return alarm_pixels(path) > 500


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
    png, db = tmp_path / "current.png", tmp_path / "absent.db"
    charger = start(script("charger_module.py", "--speed", str(SPEED), "--period", "1",
                           "--ramp", "0.2", "--can-interface", "remote",
                           "--can-channel", bus_server))
    plot = start(script("plot_current.py", "--headless", "--output", str(png),
                        "--size", "640x400", "--refresh", "0.3", "--speed", str(SPEED),
                        "--db", str(db), "--can-interface", "remote",
                        "--can-channel", bus_server))
    try:
        wait_for(png.exists, timeout=30, message="the first PNG")
        assert not alarm_shown(png)
        scenario = threading.Thread(target=drive_seed_scenario, args=(bus_server, 4, SPEED))
        scenario.start()

        def alarm_drawn() -> bool:
            # read while being rewritten: never half written, however often it is read
            assert png_size(png) == (640, 400)
            return alarm_shown(png)
        try:  # the alarm lasts from cycle two to 20 s after the last swing: look from the start
            wait_for(alarm_drawn, timeout=60, interval=0.05,
                     message="the red indicator of the plotter's detector on the seed scenario")
        finally:
            scenario.join()
    finally:
        code, output = stop(plot)
        stop(charger)
    assert code == 0, output
    assert "detector started" in output
    assert "Traceback" not in output
    assert int(output.split("received ")[1].split()[0]) >= 10
    assert png_size(png) == (640, 400)
    assert not db.exists(), "the plotter opens the MemoryBank read-only, never creates it"
    assert not list(tmp_path.glob("*.partial"))


def test_waits_for_the_bus_with_one_hint_and_falls_back_to_headless(tmp_path):
    port = free_port()
    url = f"ws://127.0.0.1:{port}/"
    png = tmp_path / "current.png"
    plot = start(script("plot_current.py", "--output", str(png), "--refresh", "0.2",
                        "--can-interface", "remote", "--can-channel", url),
                 env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    server = None
    try:
        # the first PNG comes after the first attempt at the bus (it is made before the figure)
        wait_for(png.exists, timeout=30, message="the PNG of the waiting plotter")
        assert png_size(png) == (1000, 600) and not alarm_shown(png)
        server = start([sys.executable, "-m", "can_remote", "--interface", "virtual",
                        "--channel", "0", "--host", "127.0.0.1", "--port", str(port)])
        wait_for(lambda: port_open(port), timeout=30, message="the bus server")
        bus = can.Bus(interface="remote", channel=url)
        try:
            levels = itertools.cycle((0.0, 0.0, 40.0, 40.0))  # two samples a level

            def fluctuation_drawn() -> bool:
                bus.send(frames.measured_current(next(levels)))
                return alarm_shown(png)
            wait_for(fluctuation_drawn, timeout=60, interval=0.2,
                     message="the plotter to reconnect and draw what it receives")
        finally:
            bus.shutdown()
    finally:
        code, output = stop(plot)
        if server:
            stop(server)
    assert code == 0, output
    lines = output.splitlines()
    assert sum("no display" in line for line in lines) == 1
    assert sum("not reachable" in line and "start it with" in line for line in lines) == 1, \
        "one hint, then quiet retries"
    assert "connected" in output and "receiving 0x300" in output
    assert "Traceback" not in output


def test_sigint_ignored_at_start_stays_ignored(tmp_path):
    """As a background child of run_all.sh --headless: Ctrl-C in the terminal is the script's
    to handle (it stops its children in order), so the plotter must not stop on it."""
    png = tmp_path / "current.png"
    plot = start(script("plot_current.py", "--headless", "--output", str(png), "--refresh", "0.1",
                        "--db", str(tmp_path / "absent.db"), "--can-interface", "remote",
                        "--can-channel", f"ws://127.0.0.1:{free_port()}/"),
                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for(png.exists, timeout=30, message="the first PNG")
        plot.send_signal(signal.SIGINT)
        rewrites = set()

        def rewritten_or_exited() -> bool:
            stat = png.stat()
            rewrites.add((stat.st_ino, stat.st_mtime_ns))
            return plot.poll() is not None or len(rewrites) > 4
        wait_for(rewritten_or_exited, timeout=30, message="PNG rewrites after SIGINT")
        assert plot.poll() is None, "SIGINT stopped the plotter"
    finally:
        code, output = stop(plot)
    assert code == 0 and "Traceback" not in output, output


# -- --from-db, in process ---------------------------------------------------------------------

CP, TX = "CP_7", 42


@pytest.fixture
def filled_db(db_path):
    """A session of the seed's fluctuation, its anomaly, and another charge point's session."""
    begin = datetime.now(UTC) - timedelta(minutes=10)
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
    assert main(["--db", str(filled_db), "--from-db", str(TX), "--cp", CP,
                              "--output", str(session_png), "--size", "800x500"]) == 0
    assert png_size(session_png) == (800, 500)
    assert main(["--db", str(filled_db), "--from-db", "--since", "1h",
                              "--output", str(range_png)]) == 0
    assert png_size(range_png) == (1000, 600)


def test_from_db_chart_holds_the_session_and_its_anomaly(filled_db):
    args = build_parser().parse_args(["--db", str(filled_db), "--from-db", str(TX),
                                                   "--cp", CP])
    with MemoryBank(filled_db, readonly=True) as bank:
        chart = past.past_chart(bank, args)
    [(name, _xs, amps)] = chart.series
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
    assert main(["--db", str(filled_db), "--output", str(png), *argv]) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not png.exists()


@pytest.mark.parametrize("mode", [["--headless", "--duration", "1"], ["--from-db", "1"]])
def test_an_output_that_cannot_be_written_is_refused_up_front(tmp_path, capsys, mode):
    for output, message in ((tmp_path / "no" / "x.png", "does not exist"),
                            (tmp_path, "is a directory")):
        assert main([*mode, "--output", str(output),
                                  "--db", str(tmp_path / "absent.db")]) == 2
        assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_from_db_without_a_database_says_so_and_creates_nothing(tmp_path, capsys):
    db = tmp_path / "missing.db"
    assert main(["--db", str(db), "--from-db", "--since", "1h",
                              "--output", str(tmp_path / "x.png")]) == 1
    assert "no MemoryBank database" in capsys.readouterr().err and not db.exists()


# -- the chart model, pure ---------------------------------------------------------------------

def test_live_view_keeps_the_window_and_raises_the_alarm_on_the_seed_shape():
    view = LiveView(window_s=30)
    for t, amps in charger_signal(seed_commands(3), 24):
        view.add(t, amps)
    stamp = datetime.now(UTC).isoformat()
    history = History.of([{"timestamp": stamp, "severity": "HIGH", "charge_point_id": "CP_1"}])
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


def test_history_reads_a_count_the_latest_few_and_those_in_the_window(db_path):
    now = datetime.now(UTC)
    with MemoryBank(db_path) as bank:
        for minute in range(40):
            bank.record_anomaly("CURRENT_FLUCTUATION", "LOW", f"old {minute}",
                                timestamp=now - timedelta(hours=1, minutes=minute))
        for second in (30, 5):
            bank.record_anomaly("CURRENT_FLUCTUATION", "HIGH", f"{second} s ago",
                                charge_point_id="CP_1", timestamp=now - timedelta(seconds=second))
    history = live.read_history(str(db_path), since=now - timedelta(seconds=60))
    assert history.total == 42 and history.problem is None
    assert [a["description"] for a in history.latest] == ["5 s ago", "30 s ago", "old 0",
                                                          "old 1", "old 2"]
    assert [a["description"] for a in history.marked] == ["5 s ago", "30 s ago"]
    assert history.lines()[0] == "MemoryBank: 42 anomalies" and len(history.lines()) == 6

    missing = live.read_history(str(db_path.with_name("absent.db")), since=now)
    assert missing.total == 0 and "no MemoryBank database" in missing.problem
    assert not db_path.with_name("absent.db").exists()


def test_waiting_view_says_so():
    chart = LiveView(60).chart(5.0, History(), lambda _: 0.0)
    assert chart.waiting.startswith("waiting for CAN data") and chart.alarm is None


def test_no_display_is_detected(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        assert "no display" in live.gui_unavailable()


async def test_timeline_puts_samples_and_stored_stamps_on_simulated_time():
    clock = FakeClock(speed=10)
    timeline = live.Timeline(clock)
    start = clock.now()
    await clock.advance(30)  # simulated seconds: 3 wall seconds at speed 10
    assert timeline.now() == pytest.approx(30.0)
    stamp = (start + timedelta(seconds=2)).isoformat()
    assert timeline.to_x(stamp) == pytest.approx(20.0)
    assert timeline.wall(20.0) == start + timedelta(seconds=2)


def test_receiver_feeds_the_view_from_its_own_event_loop_and_stops(bus_server):
    view, stop_event = LiveView(window_s=60), threading.Event()
    receiver = live.Receiver(bus_config("remote", bus_server), view,
                             live.Timeline(FakeClock()), stop_event, retry_interval=0.1)
    assert "not reachable yet" in receiver.status
    receiver.start()
    try:
        wait_for(lambda: "connected" in receiver.status, timeout=30, message="the link up")
        with can.Bus(interface="remote", channel=bus_server) as bus:
            bus.send(frames.start())  # not 0x300: not a sample
            bus.send(can.Message(arbitration_id=0x300, data=b"\x01", is_extended_id=False))
            for amps in (0.0, 12.5, 36.0):
                bus.send(frames.measured_current(amps))
            wait_for(lambda: view.received >= 3, timeout=30, message="three samples")
    finally:
        stop_event.set()
        assert receiver.join(timeout=30), "the receiver thread ended"
    assert [a for _, a in view.samples] == [0.0, 12.5, 36.0]
    assert receiver.failure is None


def test_a_receiver_whose_link_dies_says_why_and_stops_the_plot(monkeypatch):
    class BrokenLink:
        up = False

        def __init__(self, *args, **kwargs) -> None:
            pass

        async def run(self) -> None:
            raise OSError("adapter unplugged")

        def close(self) -> None:
            pass
    monkeypatch.setattr(live, "CanLink", BrokenLink)
    stop_event = threading.Event()
    receiver = live.Receiver({"interface": "virtual", "channel": "x"}, LiveView(60),
                             live.Timeline(FakeClock()), stop_event)
    receiver.start()
    assert receiver.join(timeout=30) and stop_event.is_set()
    assert receiver.failure == "CAN receiver failed: OSError: adapter unplugged"
