"""plot_current.py --cp: any charge point's current, followed live from the MemoryBank."""
from __future__ import annotations

import math
import subprocess
import threading
from datetime import UTC, datetime, timedelta

import pytest
from conftest import ROOT, script

from evsim.bank import MemoryBank, format_timestamp
from evsim.clock import FakeClock
from evsim.plot import follow, live
from evsim.plot.chart import Band, LiveView
from evsim.plot.draw import draw, new_figure
from evsim.plot.main import build_parser, main

CP, OTHER = "CP_0042", "CP_0001"
SPEED = 10.0
START = datetime(2026, 3, 1, 8, tzinfo=UTC)


def stamp(wall_seconds: float) -> str:
    """A stored timestamp ``wall_seconds`` after the plot started."""
    return format_timestamp(START + timedelta(seconds=wall_seconds))


def current(wall_seconds: float, amps: float, cp: str = CP, source: str = "csms",
            name: str = "current") -> dict:
    return dict(name=name, value=amps, unit="A", source=source, charge_point_id=cp,
                transaction_id=7, timestamp=START + timedelta(seconds=wall_seconds))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(speed=SPEED, start=START)


@pytest.fixture
def timeline(clock) -> live.Timeline:
    return live.Timeline(clock)


def args_of(*argv: str):
    return build_parser().parse_args(list(argv))


# -- which source ----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, source", [
    ((), "can"), (("--cp", CP), "db"), (("--cp", CP, "--source", "can"), "can"),
    (("--source", "can"), "can")])
def test_cp_follows_the_memorybank_unless_the_bus_is_asked_for(argv, source):
    assert follow.source_of(args_of(*argv)) == source


@pytest.mark.parametrize("argv, message", [
    (("--source", "db"), "--source db follows one charge point: give --cp ID"),
    (("--from-db", "3", "--source", "db"), "--source is for the live view")])
def test_a_source_that_cannot_be_is_a_usage_error(argv, message, capsys, tmp_path):
    assert main(["--db", str(tmp_path / "x.db"), *argv]) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        args_of("--source", "serial")


# -- rows to samples, pure ------------------------------------------------------------------------

async def test_rows_land_on_the_simulated_axis_at_the_runs_speed(clock, timeline):
    rows = [{"timestamp": stamp(2.0), "value": 16.0}, {"timestamp": stamp(0.5), "value": 8.0},
            {"timestamp": stamp(3.0), "value": 32}]
    assert follow.on_axis(rows, timeline.to_x, -math.inf) == [(5.0, 8.0), (20.0, 16.0),
                                                             (30.0, 32.0)]
    assert follow.on_axis(rows, timeline.to_x, 20.0) == [(30.0, 32.0)]
    assert follow.on_axis([], timeline.to_x, 0.0) == []
    await clock.advance(30.0)
    assert timeline.now() == pytest.approx(30.0), "3 wall seconds at speed 10"


# -- polled from a real MemoryBank ----------------------------------------------------------------

def test_each_poll_reads_only_what_was_written_since_of_its_charge_point(db_path, timeline):
    with MemoryBank(db_path) as bank:
        bank.record_metrics([current(-5.0, 99.0)])  # before the plot: no place on its axis
    view = LiveView(60, charge_point_id=CP, feed=follow.recorded_feed(CP))
    follower = follow.Follower(str(db_path), CP, view, timeline.to_x)
    follower.start()
    assert view.received == 0 and follower.status == "0 samples from csms"

    with MemoryBank(db_path) as bank:
        bank.record_metrics([current(1.0, 6.0), current(1.0, 6.5, source="cp"),
                             current(1.0, 20.0, cp=OTHER), current(1.0, 230.0, name="voltage"),
                             current(2.0, 12.0)])
        top = bank.last_metric_id()
    follower.poll()
    assert list(view.samples) == [(10.0, 6.0), (20.0, 12.0)]
    assert follower.after_id == top

    follower.poll()
    assert view.received == 2, "nothing new, nothing read twice"
    with MemoryBank(db_path) as bank:
        bank.record_metrics([current(3.0, 18.0), current(1.5, 9.0), current(2.0, 12.0),
                             current(4.0, 0.0, cp=OTHER)])
        top = bank.last_metric_id()
    follower.poll()
    assert list(view.samples) == [(10.0, 6.0), (20.0, 12.0), (30.0, 18.0)]
    assert follower.late == 2 and follower.status == "3 samples from csms, 2 late ones left out"
    assert follower.after_id == top, "the rows of others are not read again either"


def test_a_bank_made_after_the_plot_started_is_read_from_its_first_row(db_path, timeline):
    view = LiveView(60, charge_point_id=CP, feed=follow.recorded_feed(CP))
    follower = follow.Follower(str(db_path), CP, view, timeline.to_x)
    follower.start()
    assert follower.status.startswith("MemoryBank: no MemoryBank database at")
    assert not db_path.exists(), "looking never creates it"
    with MemoryBank(db_path) as bank:
        bank.record_metrics([current(0.5, 10.0), current(1.0, 11.0)])
    follower.poll()
    assert list(view.samples) == [(5.0, 10.0), (10.0, 11.0)] and follower.problem is None


async def test_a_followed_charge_point_is_drawn_with_its_anomalies_and_bands(db_path, clock,
                                                                           timeline):
    """As live() makes each frame: poll, then the chart with the MemoryBank's history."""
    MemoryBank(db_path).close()
    args = args_of("--db", str(db_path), "--cp", CP, "--window", "60")
    view, follower, source = live.open_source(args, timeline, threading.Event())
    assert source == f"the current of {CP} from the MemoryBank"
    follower.start()
    with MemoryBank(db_path) as bank:
        bank.record_metrics(current(t / 20, 36.0 if (t // 8) % 2 else 0.0) for t in range(80))
        bank.record_metrics(current(t / 20, 16.0, cp=OTHER) for t in range(80))
        mine = bank.record_anomaly("CURRENT_FLUCTUATION", "HIGH", "swings", charge_point_id=CP,
                                   timestamp=START + timedelta(seconds=2.5))
        bank.update_anomaly(mine, end_time=START + timedelta(seconds=3.5))
        bank.record_anomaly("OVER_CURRENT", "MEDIUM", "not mine", charge_point_id=OTHER,
                            timestamp=START + timedelta(seconds=3))
        bank.record_label(CP, "CURRENT_FLUCTUATION", START + timedelta(seconds=2),
                          START + timedelta(seconds=4), source="csms")
    await clock.advance(40.0)
    follower.poll()
    now = timeline.now()
    history = live.read_history(str(db_path), timeline.wall(view.window_start(now)))
    chart = view.chart(now, history, timeline.to_x)

    assert chart.title == f"Current of {CP} (MemoryBank, csms), last 60 s"
    [(label, xs, amps)] = chart.series
    assert label == f"{CP} current" and len(xs) == 80 and set(amps) == {0.0, 36.0}
    assert xs[:3] == [0.0, 0.5, 1.0] and chart.waiting is None
    assert chart.markers == [(25.0, "HIGH")]
    assert chart.detected == [Band(25.0, 35.0, "CURRENT_FLUCTUATION")]
    assert chart.ground_truth == [Band(20.0, 40.0, "CURRENT_FLUCTUATION")]
    assert chart.alarm and chart.alarm.startswith("FLUCTUATION"), "the detector saw the swings"

    fig = new_figure((800, 480))
    draw(fig, chart)
    ax = fig.axes[0]
    assert ax.get_title(loc="left") == chart.title and list(ax.get_lines()[0].get_ydata()) == amps


def test_waiting_for_a_charge_point_says_which(db_path, timeline):
    MemoryBank(db_path).close()
    view, follower, _ = live.open_source(args_of("--db", str(db_path), "--cp", CP), timeline,
                                         threading.Event())
    follower.start()
    view.set_status(follower.status)
    chart = view.chart(5.0, live.History(), timeline.to_x)
    assert chart.waiting == f"waiting for {CP}'s current\n0 samples from csms"


def test_following_needs_no_can_bus(db_path, tmp_path):
    """The whole command: no bus is running, and none is asked for."""
    with MemoryBank(db_path) as bank:
        bank.record_metric("current", 16.0, "A", "csms", CP)
    png = tmp_path / "follow.png"
    result = subprocess.run(
        script("plot_current.py", "--db", str(db_path), "--cp", CP, "--headless", "--output",
               str(png), "--duration", "1", "--speed", "10", "--refresh", "0.05",
               "--can-interface", "remote", "--can-channel", "ws://127.0.0.1:9/"),
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert f"plotting the current of {CP} from the MemoryBank" in result.stderr
    assert f"current samples of {CP}" in result.stderr and png.stat().st_size > 0
