"""plot_current.py: ground truth (labels) and detected episodes (anomalies) as bands, kept apart."""
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from evsim.bank import MemoryBank, format_timestamp
from evsim.plot import live, past
from evsim.plot.chart import (
    Band,
    History,
    LiveView,
    captions,
    detected_bands,
    ground_truth_bands,
)
from evsim.plot.draw import DETECTED, GROUND_TRUTH, draw, new_figure
from evsim.plot.main import build_parser, main

CP, OTHER, TX = "CP_7", "CP_8", 42


def stamp(seconds: float) -> str:
    """A stored timestamp ``seconds`` after a fixed origin; :func:`at` maps it back."""
    return format_timestamp(datetime(2024, 5, 1, 12, tzinfo=UTC) + timedelta(seconds=seconds))


def at(text: str) -> float:
    return (datetime.fromisoformat(text) - datetime(2024, 5, 1, 12, tzinfo=UTC)).total_seconds()


def label(kind: str, start: float, end, cp: str = CP) -> dict:
    return {"charge_point_id": cp, "anomaly_type": kind, "start": stamp(start),
            "end": None if end is None else stamp(end)}


def anomaly(kind: str, when: float, ended: float | None = None, cp: str = CP) -> dict:
    return {"charge_point_id": cp, "anomaly_type": kind, "timestamp": stamp(when),
            "severity": "MEDIUM", "end_time": None if ended is None else stamp(ended)}


# -- rows to bands, pure -----------------------------------------------------------------------

def test_labels_are_clipped_to_the_window_and_an_open_one_runs_to_its_end():
    labels = [label("METER_FREEZE", 5, 15), label("OVER_CURRENT", 20, 30),
              label("METER_VALUE_GAP", 95, 130), label("STATUS_FLAPPING", 80, None),
              label("ENERGY_MISMATCH", 0, 9), label("TIMESTAMP_SKEW", 101, 120)]
    assert ground_truth_bands(labels, at, (10.0, 100.0)) == [
        Band(10.0, 15.0, "METER_FREEZE"), Band(20.0, 30.0, "OVER_CURRENT"),
        Band(80.0, 100.0, "STATUS_FLAPPING"), Band(95.0, 100.0, "METER_VALUE_GAP")]


def test_bands_of_one_charge_point_leave_the_others_out():
    labels = [label("METER_FREEZE", 20, 30), label("METER_FREEZE", 20, 30, cp=OTHER)]
    anomalies = [anomaly("METER_FREEZE", 22), anomaly("METER_FREEZE", 23, cp=OTHER)]
    assert len(ground_truth_bands(labels, at, (0.0, 60.0))) == 2
    assert ground_truth_bands(labels, at, (0.0, 60.0), OTHER) == [
        Band(20.0, 30.0, "METER_FREEZE")]
    assert detected_bands(anomalies, at, (0.0, 60.0), CP) == [
        Band(22.0, None, "METER_FREEZE")]


def test_an_ended_episode_is_a_band_and_one_not_ended_a_marker():
    anomalies = [anomaly("CURRENT_FLUCTUATION", 30, 42), anomaly("METER_FREEZE", 50),
                 anomaly("OVER_CURRENT", 2, 22), anomaly("METER_VALUE_GAP", 3, 8),
                 anomaly("STATUS_FLAPPING", 95, 125)]
    assert detected_bands(anomalies, at, (10.0, 100.0)) == [
        Band(10.0, 22.0, "OVER_CURRENT"), Band(30.0, 42.0, "CURRENT_FLUCTUATION"),
        Band(50.0, None, "METER_FREEZE"), Band(95.0, 100.0, "STATUS_FLAPPING")]


def test_captions_name_a_kind_once_per_run_and_never_write_over_each_other():
    bands = [Band(float(t), t + 0.5, kind) for t, kind in enumerate("AABAAB")]
    assert captions(bands, float, 1.0) == ["A", None, "B", "A", None, "B"]
    assert captions(bands, float, 2.5) == ["A", None, None, "A", None, None]
    assert captions([Band(0.0, 1.0, "A"), Band(9.0, 10.0, "A")], float, 1.0) == ["A", None]
    many = [Band(t / 10, t / 10 + 0.05, f"K{t % 3}") for t in range(1000)]
    assert sum(text is not None for text in captions(many, float, 10.0)) == 10
    assert captions([], float, 1.0) == []


def test_live_view_shows_the_bands_of_its_charge_point_in_its_window():
    history = History(marked=(anomaly("METER_FREEZE", 70, 75),
                              anomaly("METER_FREEZE", 75, cp=OTHER)),
                      labels=(label("METER_FREEZE", 20, 80), label("OVER_CURRENT", 85, None),
                              label("METER_FREEZE", 60, 70, cp=OTHER)))
    chart = LiveView(window_s=60, charge_point_id=CP).chart(90.0, history, at)
    assert chart.ground_truth == [Band(30.0, 80.0, "METER_FREEZE"),
                                  Band(85.0, 90.0, "OVER_CURRENT")]
    assert chart.detected == [Band(70.0, 75.0, "METER_FREEZE")]
    assert chart.markers == [(70.0, "MEDIUM")]
    every = LiveView(window_s=60).chart(90.0, history, at)
    assert len(every.ground_truth) == 3 and len(every.detected) == 2


def test_history_reads_the_labels_that_overlap_the_window(db_path):
    now = datetime.now(UTC)
    with MemoryBank(db_path) as bank:
        for cp, kind, start, end in (
                (CP, "METER_FREEZE", timedelta(hours=2), timedelta(hours=1)),
                (CP, "OVER_CURRENT", timedelta(hours=1), timedelta(seconds=30)),
                (OTHER, "STATUS_FLAPPING", timedelta(seconds=20), None)):
            bank.record_label(cp, kind, now - start, None if end is None else now - end,
                              source="cp")
    history = live.read_history(str(db_path), since=now - timedelta(seconds=60))
    assert [row["anomaly_type"] for row in history.labels] == ["OVER_CURRENT", "STATUS_FLAPPING"]


# -- drawn, through --from-db ------------------------------------------------------------------

@pytest.fixture
def labelled_db(db_path):
    """A 60 s session with two labels of its own, one of another charge point, one
    before it; an anomaly whose episode ended and one still open."""
    begin = datetime.now(UTC) - timedelta(minutes=10)
    with MemoryBank(db_path) as bank:
        bank.start_session(CP, TX, start_time=begin, meter_start_wh=0)
        bank.record_metrics({"name": "current", "value": 16.0 + t % 8, "unit": "A",
                             "source": "csms", "charge_point_id": CP, "transaction_id": TX,
                             "timestamp": begin + timedelta(seconds=t)} for t in range(61))
        bank.record_label(CP, "CURRENT_FLUCTUATION", begin + timedelta(seconds=5),
                          begin + timedelta(seconds=25), {"amplitude": 14}, 7, "charger")
        bank.record_label(CP, "METER_FREEZE", begin + timedelta(seconds=40), None,
                          source="cp")
        bank.record_label(OTHER, "OVER_CURRENT", begin, begin + timedelta(seconds=30),
                          source="cp")
        bank.record_label(CP, "METER_VALUE_GAP", begin - timedelta(minutes=5),
                          begin - timedelta(minutes=4), source="cp")
        fluctuation = bank.record_anomaly("CURRENT_FLUCTUATION", "HIGH", "3 swings",
                                          charge_point_id=CP, transaction_id=TX,
                                          timestamp=begin + timedelta(seconds=11))
        bank.update_anomaly(fluctuation, end_time=begin + timedelta(seconds=21))
        bank.record_anomaly("METER_FREEZE", "MEDIUM", "energy register frozen",
                            charge_point_id=CP, transaction_id=TX,
                            timestamp=begin + timedelta(seconds=50))
        bank.end_session(CP, TX, end_time=begin + timedelta(seconds=60), meter_stop_wh=300)
    return db_path, begin.astimezone()


@pytest.fixture
def drawn(monkeypatch):
    """The figure and chart the --from-db path draws, as it drew them."""
    seen: dict = {}

    def draw_and_keep(fig, chart) -> None:
        draw(fig, chart)
        seen.update(fig=fig, chart=chart)
    monkeypatch.setattr(past, "draw", draw_and_keep)
    return seen


def test_from_db_draws_ground_truth_and_detected_episodes_apart(labelled_db, drawn, tmp_path):
    db, begin = labelled_db
    png = tmp_path / "bands.png"
    assert main(["--db", str(db), "--from-db", str(TX), "--output", str(png),
                 "--size", "900x500"]) == 0
    assert png.is_file() and png.stat().st_size > 0

    chart = drawn["chart"]
    second = timedelta(seconds=1)
    assert chart.ground_truth == [
        Band(begin + 5 * second, begin + 25 * second, "CURRENT_FLUCTUATION"),
        Band(begin + 40 * second, begin + 60 * second, "METER_FREEZE")]
    assert chart.detected == [
        Band(begin + 11 * second, begin + 21 * second, "CURRENT_FLUCTUATION"),
        Band(begin + 50 * second, None, "METER_FREEZE")]

    [ax, _panel] = drawn["fig"].axes
    hatched = [patch for patch in ax.patches if patch.get_hatch()]
    solid = [patch for patch in ax.patches if not patch.get_hatch()]
    assert len(hatched) == 2 and len(solid) == 1
    assert sum(line.get_marker() == ">" for line in ax.get_lines()) == 1
    texts = [text.get_text() for text in ax.texts]
    assert texts.count("CURRENT_FLUCTUATION") == 2 and texts.count("METER_FREEZE") == 2
    legend = drawn["fig"].axes[1].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == [GROUND_TRUTH, DETECTED]


def test_a_chart_without_bands_has_no_lane_and_no_legend():
    chart = LiveView(window_s=60).chart(30.0, History(), at)
    assert chart.ground_truth == [] and chart.detected == []
    fig = new_figure((640, 400))
    draw(fig, chart)
    ax, panel = fig.axes
    assert ax.get_legend() is None and panel.get_legend() is None and not ax.patches
    assert [text.get_text() for text in ax.texts] == [chart.waiting]


def test_many_bands_draw_with_captions_that_do_not_overlap(labelled_db):
    db, _ = labelled_db
    args = build_parser().parse_args(["--db", str(db), "--from-db", str(TX)])
    with MemoryBank(db, readonly=True) as bank:
        chart = past.past_chart(bank, args)
    start = chart.ground_truth[0].start
    chart.ground_truth = [Band(start + timedelta(seconds=t), start + timedelta(seconds=t + 0.5),
                               f"KIND_{t % 5}") for t in range(50)]
    fig = new_figure((900, 500))
    draw(fig, chart)
    ax, panel = fig.axes
    assert sum(bool(patch.get_hatch()) for patch in ax.patches) == 50
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in ax.texts
             if text.get_text().startswith("KIND_")]
    assert 2 <= len(boxes) < 50
    assert not any(a.overlaps(b) for a, b in itertools.pairwise(boxes))
    assert len(panel.get_legend().get_texts()) == 2
