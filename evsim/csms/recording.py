"""What the central system records from MeterValues and StopTransaction: metrics rows; and the
samples the analysis of each charge point takes from MeterValues (:mod:`evsim.csms.analysis`).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional, Protocol

from evsim.detection.observations import CURRENT, ENERGY, OFFERED, POWER, VOLTAGE, MeterSample
from evsim.timefmt import parse_ocpp_time

log = logging.getLogger("csms")

#: The measurands recorded, as (metric name, unit); per-phase values are not.
METRICS = {"Current.Import": ("current", "A"), "Voltage": ("voltage", "V"),
           "Power.Active.Import": ("power", "W"), "Energy.Active.Import.Register": ("energy", "Wh")}
#: The measurands the analysis reads (Current.Offered too: the limit the charge point offers).
ANALYSED = (CURRENT, OFFERED, VOLTAGE, POWER, ENERGY)
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


def meter_samples(meter_value: Iterable[dict], received: datetime,
                  transaction_id: Optional[int] = None) -> list[MeterSample]:
    """The samples of a MeterValues payload (snake_case keys) as the analyser takes them: one per
    timestamp (entries that share one are merged), with the measurands it reads (main phase,
    kilo units scaled), Current.Offered included; an entry without any of them is left out, as
    are bad timestamps and values that are not finite numbers (:func:`readings` names them)."""
    merged: dict[datetime, dict[str, float]] = {}
    for value in meter_value:
        try:
            moment = parse_ocpp_time(value["timestamp"])
        except (TypeError, ValueError):
            continue
        for sample in value["sampled_value"]:
            measurand = sample.get("measurand", DEFAULT_MEASURAND)
            if measurand not in ANALYSED or sample.get("phase"):
                continue
            number = _finite(sample["value"], sample.get("unit"))
            if number is not None:
                merged.setdefault(moment, {})[measurand] = number
    return [MeterSample(moment, received, measurands, transaction_id)
            for moment, measurands in merged.items()]


def record_meter_values(writer: Writer, charge_point_id: str, meter_value: Iterable[dict],
                        transaction_id: Optional[int]) -> list[Reading]:
    """Record one MeterValues message as metrics; what is skipped is said in one log line.
    Returns the readings recorded."""
    kept, skipped = readings(meter_value)
    for reading in kept:
        writer.metric(reading.name, reading.value, reading.unit, charge_point_id, transaction_id,
                      reading.timestamp)
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
