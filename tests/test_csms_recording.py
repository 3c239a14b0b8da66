"""What the central system records from MeterValues: readings, and anomalies and learned patterns
in a real MemoryBank file."""
from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from evsim.bank import MemoryBank
from evsim.bank.writer import BankWriter
from evsim.clock import FakeClock
from evsim.csms.recording import CurrentAnalyser, Reading, readings, record_meter_values
from evsim.detection import fluctuation as detector

AT = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)


def test_readings_scale_kilo_units_and_skip_what_is_not_a_finite_number():
    kept, skipped = readings([
        {"timestamp": "2026-01-01T00:00:01Z", "sampled_value": [
            {"value": "2.3", "measurand": "Power.Active.Import", "unit": "kW"},
            {"value": "12.5", "unit": "kWh"},
            {"value": "230", "measurand": "Voltage", "unit": "V"},
            {"value": "1e306", "measurand": "Power.Active.Import", "unit": "kW"},
            {"value": "NaN", "measurand": "Current.Import", "unit": "A"},
            {"value": "Infinity", "measurand": "Voltage"},
            {"value": "lots", "measurand": "Current.Import"},
            {"value": "7", "measurand": "SoC"}]},
        {"timestamp": "2026-01-01T01:00:01+01:00", "sampled_value": [
            {"value": "16", "measurand": "Current.Import", "unit": "A"}]},
        {"timestamp": "2026-13-01T00:00:00Z", "sampled_value": [
            {"value": "16", "measurand": "Current.Import", "unit": "A"}]}])
    assert kept == [Reading("power", 2300.0, "W", AT), Reading("energy", 12500.0, "Wh", AT),
                    Reading("voltage", 230.0, "V", AT), Reading("current", 16.0, "A", AT)]
    assert skipped == ["Power.Active.Import='1e306'", "Current.Import='NaN'",
                       "Voltage='Infinity'", "Current.Import='lots'",
                       "timestamp '2026-13-01T00:00:00Z'"]


class Metrics:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def metric(self, *args) -> None:
        self.rows.append(args)


def test_a_message_with_skipped_values_is_one_log_line(caplog):
    writer = Metrics()
    analyser = CurrentAnalyser("CP_1", None, None, FakeClock())
    meter_value = [{"timestamp": "bad", "sampled_value": []},
                   {"timestamp": "2026-01-01T00:00:01Z", "sampled_value": [
                       {"value": "NaN", "measurand": "Current.Import"},
                       {"value": "3", "measurand": "Current.Import"}]}]
    with caplog.at_level(logging.WARNING, logger="csms"):
        kept = record_meter_values(writer, analyser, meter_value, 4, speed=1.0)
    assert [r.value for r in kept] == [3.0] and analyser.samples == 1
    assert writer.rows == [("current", 3.0, "A", "CP_1", 4, AT)]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "'bad'" in line and "'NaN'" in line and line.startswith("CP_1: MeterValues")


def fluctuate(analyser: CurrentAnalyser, start: int, end: int, **kwargs) -> list:
    """The seed's shape, one sample a second: 36 A for 2 s of every 8."""
    return [analyser.update(float(t), 36.0 if t % 8 in (4, 5) else 0.0, **kwargs)
            for t in range(start, end)]


def written(writer: BankWriter) -> None:
    """Wait until the writer has stored everything queued so far."""
    done = threading.Event()
    writer.call(lambda bank: done.set())
    assert done.wait(30)


def test_an_episode_is_learned_when_it_ends_with_its_final_figures(db_path):
    writer = BankWriter(str(db_path), "csms")
    analyser = CurrentAnalyser("CP_X", writer, detector.FluctuationDetector(), FakeClock())
    fluctuate(analyser, 0, 64)
    analyser.update(64.0, 0.0)
    calm = [analyser.update(float(t), 0.0) for t in range(65, 90)]
    first = [d for d in calm if d is not None]
    assert [d.kind for d in first] == ["ended"] and first[0].swings > 3
    fluctuate(analyser, 90, 130)
    written(writer)
    with MemoryBank(db_path, readonly=True) as bank:
        (pattern,) = bank.get_patterns()
        second_started = bank.get_anomalies()[0]
    assert pattern["occurrences"] == 1 and pattern["parameters"]["swings"]["mean"] == \
        first[0].swings
    assert second_started["pattern"]["name"] == pattern["name"]  # recognised, not yet learned
    second_end = analyser.close()  # shutdown: the open episode ends and is learned
    writer.close()
    with MemoryBank(db_path, readonly=True) as bank:
        (pattern,) = bank.get_patterns()
        anomalies = bank.get_anomalies()
    assert pattern["occurrences"] == 2
    assert pattern["parameters"]["swings"]["n"] == 2
    assert pattern["parameters"]["swings"]["max"] == max(first[0].swings, second_end.swings)
    for anomaly, ended in zip(anomalies, (second_end, first[0])):
        assert anomaly["pattern"] == {"name": pattern["name"], **ended.pattern_parameters()}
        assert anomaly["description"] == ended.description
        assert anomaly["description"].startswith("current fluctuation ended")
        assert anomaly["deviation"] > 10  # from the episode, not the calm window it ended in


def test_current_analyser_records_an_anomaly_and_learns_the_pattern(db_path):
    clock = FakeClock()
    writer = BankWriter(str(db_path), "csms")
    analyser = CurrentAnalyser("CP_X", writer, detector.FluctuationDetector(), clock)
    steady = CurrentAnalyser("CP_Y", writer, detector.FluctuationDetector(), clock)
    detections = fluctuate(analyser, 0, 60, transaction_id=7)
    calm = [steady.update(float(t), 32.0) for t in range(60)]
    ended = analyser.close()
    writer.close()
    kinds = [d.kind for d in detections if d is not None] + [ended.kind]
    assert kinds[0] == "started" and kinds[-1] == "ended" and not any(calm)
    assert analyser.update(1.0, 0.0) is None  # out of order
    with MemoryBank(db_path, readonly=True) as bank:
        anomalies = bank.get_anomalies()
        assert [(a["anomaly_type"], a["charge_point_id"], a["transaction_id"]) for a in anomalies] \
            == [("CURRENT_FLUCTUATION", "CP_X", 7)]
        assert anomalies[0]["timestamp"] == "2026-01-01T00:00:00.000000Z"  # the injected clock
        patterns = bank.get_patterns()
        assert len(patterns) == 1 and patterns[0]["occurrences"] == 1


def test_analyser_without_a_detector_only_counts():
    analyser = CurrentAnalyser("CP", None, None, FakeClock())
    assert analyser.update(0.0, 1.0) is None and analyser.samples == 1
    assert analyser.close() is None
