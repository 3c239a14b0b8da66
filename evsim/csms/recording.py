"""What the central system records from MeterValues: metrics rows, and the anomalies and learned
patterns of each charge point's current.

The detector is fed in simulated seconds computed from the samples' own timestamps (wall seconds
times speed), never from when a message was processed, so a loaded central system decides late but
never differently (ARCHITECTURE.md, "Time").
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional, Protocol

from evsim.clock import Clock
from evsim.detection import fluctuation as detector
from evsim.timefmt import parse_ocpp_time

log = logging.getLogger("csms")

#: The measurands recorded, as (metric name, unit); per-phase values are not.
METRICS = {"Current.Import": ("current", "A"), "Voltage": ("voltage", "V"),
           "Power.Active.Import": ("power", "W"), "Energy.Active.Import.Register": ("energy", "Wh")}
KILO_UNITS = {"kW": "W", "kWh": "Wh"}
DEFAULT_MEASURAND = "Energy.Active.Import.Register"  # OCPP 1.6's default
SKIPPED_SHOWN = 300  # characters of skipped values in the one log line of a message


class Writer(Protocol):
    """The part of BankWriter the central system uses (a test passes a recording fake)."""

    def event(self, event_type: str, description: str, data: Any = None,
              charge_point_id: Optional[str] = None) -> None: ...

    def metric(self, name: str, value: float, unit: str, charge_point_id: Optional[str] = None,
               transaction_id: Optional[int] = None, timestamp: Any = None) -> None: ...

    def call(self, write: Any) -> None: ...


@dataclass(frozen=True)
class Reading:
    """One sample as it is stored: metric name, value in the stored unit, and when it was taken."""

    name: str
    value: float
    unit: str
    timestamp: datetime


def readings(meter_value: Iterable[dict]) -> tuple[list[Reading], list[str]]:
    """The samples of a MeterValues payload (snake_case keys) that are recorded, and a short
    description of each one skipped: a bad timestamp, or a value that is not a finite number.
    Measurands not in :data:`METRICS` and per-phase values are left out without a word."""
    kept: list[Reading] = []
    skipped: list[str] = []
    for value in meter_value:
        try:
            moment = parse_ocpp_time(value["timestamp"])
        except (TypeError, ValueError):
            skipped.append(f"timestamp {value['timestamp']!r}")
            continue
        for sample in value["sampled_value"]:
            measurand = sample.get("measurand", DEFAULT_MEASURAND)
            if measurand not in METRICS or sample.get("phase"):
                continue
            number = _finite(sample["value"], sample.get("unit"))
            if number is None:
                skipped.append(f"{measurand}={sample['value']!r}")
                continue
            name, unit = METRICS[measurand]
            kept.append(Reading(name, number, unit, moment))
    return kept, skipped


def _finite(text: str, unit: Optional[str]) -> Optional[float]:
    try:
        value = float(text)
    except ValueError:
        return None
    if unit in KILO_UNITS:
        value *= 1000
    return value if math.isfinite(value) else None


class CurrentAnalyser:
    """Feeds one charge point's Current.Import samples to the detector and records what it finds.

    ``fluctuation_detector`` is anything with ``update(t, amps)`` and ``close(t)`` returning a
    detection or None (see FluctuationDetector); without one, the samples are only counted. Only
    the open episode's anomaly id is kept, not the detections.
    """

    def __init__(self, charge_point_id: str, writer: Optional[Writer],
                 fluctuation_detector: Any = None, clock: Optional[Clock] = None) -> None:
        self.charge_point_id = charge_point_id
        self.writer = writer
        self.detector = fluctuation_detector
        self.clock = clock or Clock()
        self.samples = 0
        self._last_t: Optional[float] = None
        self._anomaly_id: Optional[int] = None

    def update(self, t: float, amps: float, transaction_id: Optional[int] = None) -> Any:
        """One sample at simulated time ``t``; returns the detection it caused, if any. A sample
        older than the last one (a queued one arriving late) is ignored."""
        if self._last_t is not None and t < self._last_t:
            return None
        self._last_t = t
        self.samples += 1
        if self.detector is None:
            return None
        return self._record(self.detector.update(t, amps), transaction_id)

    def close(self) -> Any:
        """End the open episode, if any (at shutdown); returns its final detection."""
        if self.detector is None or self._last_t is None:
            return None
        return self._record(self.detector.close(self._last_t), None)

    def _record(self, detection: Any, transaction_id: Optional[int]) -> Any:
        if detection is None:
            return None
        log.warning("%s: fluctuation %s: %s", self.charge_point_id, detection.kind,
                    detection.description)
        if self.writer is not None:
            moment = self.clock.now()
            self.writer.call(lambda bank: self._store(bank, detection, transaction_id, moment))
        return detection

    def _store(self, bank: Any, detection: Any, transaction_id: Optional[int],
               moment: datetime) -> None:
        """Runs in the writer thread, in order, so the anomaly id is there for what follows.

        The episode is learned as a pattern when it ends, with its final figures; until then
        the anomaly names the known pattern it looks like (None: a new one).
        """
        known = detector.match_pattern(bank.get_patterns(), detection)
        ended = detection.kind == "ended"
        if ended:
            name, parameters, confidence = detector.merge_pattern(known, detection)
            bank.learn_pattern(name, parameters, confidence)
        else:
            name = known["name"] if known else None
        fields = dict(severity=detection.severity, description=detection.description,
                      pattern={"name": name, **detection.pattern_parameters()})
        if not ended:  # an episode that ended by itself has the figures of a calm window
            fields.update(current_value=detection.current_a, expected_value=detection.expected_a,
                          deviation=detection.deviation_a)
        if detection.kind == "started":
            self._anomaly_id = bank.record_anomaly(
                detector.ANOMALY_TYPE, charge_point_id=self.charge_point_id,
                transaction_id=transaction_id, timestamp=moment, **fields)
        elif self._anomaly_id is not None:
            bank.update_anomaly(self._anomaly_id, **fields)
        if ended:
            self._anomaly_id = None


def new_detector() -> detector.FluctuationDetector:
    return detector.FluctuationDetector(detector.DetectorConfig())


def record_meter_values(writer: Writer, analyser: CurrentAnalyser, meter_value: Iterable[dict],
                        transaction_id: Optional[int], speed: float) -> list[Reading]:
    """Record one MeterValues message as metrics and feed its currents to the analyser; what is
    skipped is said in one log line. Returns the readings recorded."""
    charge_point_id = analyser.charge_point_id
    kept, skipped = readings(meter_value)
    for reading in kept:
        writer.metric(reading.name, reading.value, reading.unit, charge_point_id, transaction_id,
                      reading.timestamp)
        if reading.name == "current":
            analyser.update(reading.timestamp.timestamp() * speed, reading.value, transaction_id)
    if skipped:
        log.warning("%s: MeterValues: skipped bad timestamps and values not finite numbers: %s",
                    charge_point_id, ", ".join(skipped)[:SKIPPED_SHOWN])
    return kept


def record_transaction_data(writer: Writer, charge_point_id: str, transaction_id: int,
                            transaction_data: Iterable[dict]) -> list[Reading]:
    """A StopTransaction's transactionData as metrics of the transaction. The detector is not
    fed: these samples are the transaction's past, reported at its end."""
    kept, skipped = readings(transaction_data)
    for reading in kept:
        writer.metric(reading.name, reading.value, reading.unit, charge_point_id, transaction_id,
                      reading.timestamp)
    if skipped:
        log.warning("%s: StopTransaction: skipped bad timestamps and values not finite numbers: "
                    "%s", charge_point_id, ", ".join(skipped)[:SKIPPED_SHOWN])
    return kept
