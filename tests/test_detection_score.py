"""The score: labels against anomalies, per anomaly type and charge point."""
from datetime import UTC, datetime, timedelta

import pytest

from evsim.detection.score import HEADERS, score, table
from evsim.timefmt import format_timestamp

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def label(kind, start, end, cp="CP_1", speed=None):
    parameters = {"speed": speed} if speed else {}
    return {"charge_point_id": cp, "anomaly_type": kind, "start": T0 + timedelta(seconds=start),
            "end": None if end is None else T0 + timedelta(seconds=end),
            "parameters": parameters, "seed": 0, "source": "charger"}


def anomaly(kind, at, cp="CP_1"):
    return {"charge_point_id": cp, "anomaly_type": kind, "timestamp": T0 + timedelta(seconds=at)}


def test_true_and_false_positives_misses_and_latency():
    labels = [label("OVER_CURRENT", 100, 200), label("OVER_CURRENT", 500, 600),
              label("OVER_CURRENT", 900, 950)]
    anomalies = [anomaly("OVER_CURRENT", 110), anomaly("OVER_CURRENT", 130),  # a repeat
                 anomaly("OVER_CURRENT", 530), anomaly("OVER_CURRENT", 2000)]  # and a stray
    result = score(labels, anomalies)["OVER_CURRENT"]
    assert (result.labels, result.anomalies) == (3, 4)
    assert (result.true_positives, result.false_positives, result.duplicates, result.misses) \
        == (2, 2, 1, 1)
    assert result.precision == 0.5 and result.recall == pytest.approx(2 / 3)
    assert result.median_latency_s == 20 and result.worst_latency_s == 30


def test_matching_needs_the_same_type_and_charge_point_and_allows_a_late_decision():
    labels = [label("METER_VALUE_GAP", 100, 160)]
    scores = score(labels, [anomaly("METER_VALUE_GAP", 161, cp="CP_2"),
                            anomaly("METER_FREEZE", 150), anomaly("METER_VALUE_GAP", 161)])
    assert scores["METER_VALUE_GAP"].true_positives == 1
    assert scores["METER_VALUE_GAP"].false_positives == 1  # the one of CP_2
    assert scores["METER_FREEZE"].false_positives == 1 and scores["METER_FREEZE"].labels == 0
    assert score(labels, [anomaly("METER_VALUE_GAP", 160 + 61)])["METER_VALUE_GAP"].misses == 1
    assert score(labels, [anomaly("METER_VALUE_GAP", 98)])["METER_VALUE_GAP"].misses == 1


def test_latency_is_in_simulated_seconds_and_an_open_label_matches_to_the_end():
    labels = [label("STATUS_FLAPPING", 10, None, speed=10)]
    result = score(labels, [anomaly("STATUS_FLAPPING", 12)])["STATUS_FLAPPING"]
    assert result.latencies_s == [20.0]
    assert score(labels, [anomaly("STATUS_FLAPPING", 12)], speed=1)[
        "STATUS_FLAPPING"].latencies_s == [2.0]


def test_stored_iso_times_work_as_well_as_datetimes():
    stored = [{**label("TIMESTAMP_SKEW", 5, 50), "start": format_timestamp(T0 + timedelta(
        seconds=5)), "end": format_timestamp(T0 + timedelta(seconds=50))}]
    found = [{**anomaly("TIMESTAMP_SKEW", 9),
              "timestamp": format_timestamp(T0 + timedelta(seconds=9))}]
    result = score(stored, found)["TIMESTAMP_SKEW"]
    assert result.as_dict() == {"anomaly_type": "TIMESTAMP_SKEW", "labels": 1, "anomalies": 1,
                                "true_positives": 1, "false_positives": 0, "duplicates": 0,
                                "misses": 0, "precision": 1.0, "recall": 1.0,
                                "median_latency_s": 4.0, "worst_latency_s": 4.0}


def test_no_labels_no_anomalies_and_the_printed_table():
    assert score([], []) == {}
    rows = table(score([label("X", 0, 1)], []))
    assert rows == [["X", 1, 0, 0, 0, 1, "-", "0.00", "-", "-"]]
    assert len(HEADERS) == len(rows[0])
