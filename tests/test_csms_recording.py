"""What the central system records from MeterValues: readings, and anomalies and learned patterns
in a real MemoryBank file."""
from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from evsim.bank import MemoryBank
from evsim.bank.writer import BankWriter
from evsim.clock import FakeClock
from evsim.csms.analysis import ChargePointAnalysis
from evsim.csms.recording import Reading, meter_samples, readings, record_meter_values
from evsim.detection.observations import MeterSample
from evsim.timefmt import format_timestamp

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


def test_a_message_with_skipped_values_is_one_log_line_and_good_samples_are_analysed(caplog):
    writer = Metrics()
    analysis = ChargePointAnalysis("CP_1", None, FakeClock())
    meter_value = [{"timestamp": "bad", "sampled_value": []},
                   {"timestamp": "2026-01-01T00:00:01Z", "sampled_value": [
                       {"value": "NaN", "measurand": "Current.Import"},
                       {"value": "3", "measurand": "Current.Import"}]}]
    with caplog.at_level(logging.WARNING, logger="csms"):
        kept = record_meter_values(writer, "CP_1", meter_value, 4)
        analysis.meter_values(1, meter_value, 4)
    assert [r.value for r in kept] == [3.0] and analysis.samples == 1
    assert writer.rows == [("current", 3.0, "A", "CP_1", 4, AT)]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "'bad'" in line and "'NaN'" in line and line.startswith("CP_1: MeterValues")


def test_meter_samples_merge_one_timestamp_and_keep_current_offered():
    received = datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)
    samples = meter_samples([
        {"timestamp": "2026-01-01T00:00:01Z", "sampled_value": [
            {"value": "16", "measurand": "Current.Import", "unit": "A"},
            {"value": "5", "measurand": "Current.Import", "unit": "A", "phase": "L1"}]},
        {"timestamp": "2026-01-01T00:00:01Z", "sampled_value": [
            {"value": "1.5", "unit": "kWh"},
            {"value": "16", "measurand": "Current.Offered", "unit": "A"},
            {"value": "80", "measurand": "SoC"}]},
        {"timestamp": "2026-01-01T00:00:02Z", "sampled_value": [{"value": "7", "measurand": "SoC"}]},
    ], received, 9)
    assert samples == [MeterSample(AT, received, {"Current.Import": 16.0, "Current.Offered": 16.0,
                                                  "Energy.Active.Import.Register": 1500.0}, 9)]


def sample(t: float, amps: float, tx: int | None = None) -> MeterSample:
    """A sample taken ``t`` simulated seconds (speed 1) after AT and received at once."""
    moment = AT + timedelta(seconds=t)
    return MeterSample(moment, moment, {"Current.Import": amps}, tx)


def fluctuate(analysis: ChargePointAnalysis, start: int, end: int, tx: int | None = None) -> list:
    """The seed's shape, one sample a second: 36 A for 2 s of every 8."""
    return [f for t in range(start, end)
            for f in analysis.sample(sample(t, 36.0 if t % 8 in (4, 5) else 0.0, tx))]


def written(writer: BankWriter) -> None:
    """Wait until the writer has stored everything queued so far."""
    done = threading.Event()
    writer.call(lambda bank: done.set())
    assert done.wait(30)


def test_an_episode_is_learned_when_it_ends_with_its_final_figures(db_path):
    writer = BankWriter(str(db_path), "csms")
    analysis = ChargePointAnalysis("CP_X", writer, FakeClock())
    fluctuate(analysis, 0, 64)
    analysis.sample(sample(64, 0.0))
    calm = [f for t in range(65, 90) for f in analysis.sample(sample(t, 0.0))]
    first = [f.detection for f in calm]
    assert [d.kind for d in first] == ["ended"] and first[0].swings > 3
    fluctuate(analysis, 90, 130)
    written(writer)
    with MemoryBank(db_path, readonly=True) as bank:
        (pattern,) = bank.get_patterns()
        second_started = bank.get_anomalies()[0]
    assert pattern["occurrences"] == 1 and pattern["parameters"]["swings"]["mean"] == \
        first[0].swings
    assert second_started["pattern"]["name"] == pattern["name"]  # recognised, not yet learned
    (second_end,) = [f.detection for f in analysis.close()]  # shutdown: ended and learned
    assert analysis.close() == []  # once
    writer.close()
    with MemoryBank(db_path, readonly=True) as bank:
        (pattern,) = bank.get_patterns()
        anomalies = bank.get_anomalies()
    assert pattern["occurrences"] == 2
    assert anomalies[1]["timestamp"] < anomalies[1]["end_time"] <= \
        format_timestamp(AT + timedelta(seconds=89))  # when the calm decided it
    assert anomalies[0]["end_time"] is not None  # at shutdown, by the central system's clock
    assert pattern["parameters"]["swings"]["n"] == 2
    assert pattern["parameters"]["swings"]["max"] == max(first[0].swings, second_end.swings)
    for anomaly, ended in zip(anomalies, (second_end, first[0])):
        assert anomaly["anomaly_type"] == "CURRENT_FLUCTUATION"
        assert anomaly["pattern"] == {"name": pattern["name"], **ended.pattern_parameters()}
        assert anomaly["description"] == ended.description
        assert anomaly["description"].startswith("current fluctuation ended")
        assert anomaly["deviation"] > 10  # from the episode, not the calm window it ended in


def test_the_analysis_records_an_anomaly_and_learns_the_pattern(db_path):
    clock = FakeClock()
    writer = BankWriter(str(db_path), "csms")
    analysis = ChargePointAnalysis("CP_X", writer, clock)
    steady = ChargePointAnalysis("CP_Y", writer, clock)
    findings = fluctuate(analysis, 0, 60, tx=7)
    calm = [f for t in range(60) for f in steady.sample(sample(t, 32.0))]
    ended = analysis.close()
    writer.close()
    kinds = [f.kind for f in findings + ended]
    assert kinds[0] == "started" and kinds[-1] == "ended" and calm == []
    assert {f.anomaly_type for f in findings + ended} == {"CURRENT_FLUCTUATION"}
    with MemoryBank(db_path, readonly=True) as bank:
        anomalies = bank.get_anomalies()
        assert [(a["anomaly_type"], a["charge_point_id"], a["transaction_id"]) for a in anomalies] \
            == [("CURRENT_FLUCTUATION", "CP_X", 7)]
        # recorded at the receive time of the sample that decided it
        assert anomalies[0]["timestamp"] == format_timestamp(findings[0].received)
        patterns = bank.get_patterns()
        assert len(patterns) == 1 and patterns[0]["occurrences"] == 1


def test_samples_too_close_on_the_timeline_are_not_analysed():
    analysis = ChargePointAnalysis("CP", None, FakeClock())
    for t in (0.0, 0.01, 0.06, 0.06, 1.0):
        analysis.sample(sample(t, 1.0))
    assert (analysis.samples, analysis.dropped) == (3, 2)
    analysis.close()
    assert analysis.sample(sample(2.0, 1.0)) == [] and analysis.samples == 3  # closed
