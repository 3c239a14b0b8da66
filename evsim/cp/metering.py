"""What the charge point measures and when: MeterValues readings (the measurands the
configuration names), the periodic work that takes them (sampled every MeterValueSampleInterval,
clock-aligned every ClockAlignedDataInterval) and the watchdog of the charger."""
from __future__ import annotations

import math
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from evsim.clock import Schedule, run_schedules
from evsim.constants import CONNECTOR_ID
from evsim.cp.outbox import Message
from evsim.timefmt import ocpp_time

if TYPE_CHECKING:
    from evsim.cp.station import Station

#: The most meter values a StopTransaction's transactionData carries (the latest are kept).
MAX_TRANSACTION_DATA = 100
#: The measurands that need the limit in force (a composite schedule: worked out only for them).
OFFERED = frozenset({"Current.Offered", "Power.Offered"})


class Reading(NamedTuple):
    measurand: str
    unit: str
    name: str  # the MemoryBank metric
    value: float


def readings(amps: float, voltage: float, energy_wh: float, offered: float | None = None,
             measurands: list[str] | None = None) -> list[Reading]:
    """The readings of ``measurands`` (default: current, voltage, power, energy)."""
    all_readings = [Reading("Current.Import", "A", "current", amps),
                    Reading("Voltage", "V", "voltage", voltage),
                    Reading("Power.Active.Import", "W", "power", amps * voltage),
                    Reading("Energy.Active.Import.Register", "Wh", "energy", energy_wh)]
    if offered is not None:
        all_readings += [Reading("Current.Offered", "A", "current_offered", offered),
                         Reading("Power.Offered", "W", "power_offered", offered * voltage)]
    if measurands is None:
        return all_readings[:4]
    by_name = {r.measurand: r for r in all_readings}
    return [by_name[m] for m in measurands if m in by_name]


def meter_value(moment: datetime, values: list[Reading], context: str = "Sample.Periodic"
                ) -> dict:
    """One MeterValue as OCPP carries it (sampledValue keys in camelCase)."""
    return {"timestamp": ocpp_time(moment),
            "sampledValue": [{"value": f"{r.value:.1f}", "context": context,
                              "measurand": r.measurand, "unit": r.unit} for r in values]}


def station_readings(station: Station, key: str, amps: float | None = None,
                     energy_wh: float | None = None) -> list[Reading]:
    """The readings of the measurands that ``key`` names: the meter's, or ``amps`` and
    ``energy_wh`` as an injected fault has them sent."""
    measurands = station.config.measurands(key)
    offered = station.limit_in_force() if OFFERED.intersection(measurands) else None
    return readings(station.meter.amps or 0.0 if amps is None else amps, station.voltage,
                    station.meter.energy_wh if energy_wh is None else energy_wh,
                    offered, measurands)


def take_sample(station: Station, context: str = "Sample.Periodic") -> None:
    """One MeterValues from the latest 0x300 frame (none while the charger is silent), with the
    measurands of MeterValuesSampledData (MeterValuesAlignedData for Sample.Clock); an injected
    fault may alter its timestamp and register, or leave it unsent."""
    tx = station.transaction
    if station.meter.amps is None or station.charger.silent or (tx is None and
                                                                 not station.connected):
        return
    now = station.clock.now()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as OCPP carries it
    register = {"energy_wh": station.meter.energy_wh, "energy_at": ocpp_time(now)}
    sent = station.reading(now)
    if sent is None:  # a meter gap: nothing measured is sent
        station.store.put(station.id, **register)
        return
    moment = sent.timestamp
    aligned = context == "Sample.Clock"
    values = station_readings(station, "MeterValuesAlignedData" if aligned
                              else "MeterValuesSampledData", sent.amps, sent.energy_wh)
    if tx is not None and context != "Trigger":
        extra = station_readings(station, "StopTxnAlignedData" if aligned else
                                 "StopTxnSampledData", sent.amps, sent.energy_wh)
        if extra:
            tx.data = [*tx.data, meter_value(moment, extra, context)][-MAX_TRANSACTION_DATA:]
    if not values:
        station.store.put(station.id, **register)
        return
    payload = {"connector_id": CONNECTOR_ID, "meter_value": [meter_value(moment, values, context)]}
    if tx is None:
        station.store.put(station.id, **register)
        station.outbox.put(Message("MeterValues", payload))
    else:
        stored_id = station.store.queue(station.id, "MeterValues", payload, tx.ref, **register)
        station.outbox.put(Message("MeterValues", payload, tx.ref, stored_id))
    if station.records_traffic:  # after the commit: what is recorded was queued for sure
        station.store.after_commit(partial(record, station, values,
                                           tx.transaction_id if tx else None, moment))


def record(station: Station, values: list[Reading], transaction_id: int | None,
           moment: datetime) -> None:
    """The MemoryBank's metrics of one sample."""
    for reading in values:
        station.writer.metric(reading.name, round(reading.value, 1), reading.unit, station.id,
                              transaction_id, moment)


async def run_meter(station: Station) -> None:
    """:func:`meter_schedule` in a task of its own."""
    await run_schedules([meter_schedule(station)], station.clock)


async def meter_schedule(station: Station, start: float | None = None) -> Schedule:
    """MeterValues every MeterValueSampleInterval from ``start`` (default: now), on a schedule
    that late samples do not shift; while it is 0 (no sampled data), look again every second
    whether it changed."""
    clock, config = station.clock, station.config
    due = clock.sim() if start is None else start
    while True:
        interval = config["MeterValueSampleInterval"] or 1
        due += interval
        yield due
        late = clock.sim() - due
        if late > interval:
            due += late  # after a stall, skip the missed samples rather than bunch them
        if config["MeterValueSampleInterval"]:
            station.sample()


async def run_aligned(station: Station) -> None:
    """:func:`aligned_schedule` in a task of its own."""
    await run_schedules([aligned_schedule(station)], station.clock)


async def aligned_schedule(station: Station, start: float | None = None) -> Schedule:
    """Clock-aligned MeterValues (context Sample.Clock) every ClockAlignedDataInterval
    simulated seconds, at multiples of it since midnight UTC; while it is 0, none (looked at
    again every second from ``start``)."""
    clock = station.clock
    idle = clock.sim() if start is None else start
    while True:
        interval = station.config["ClockAlignedDataInterval"]
        if not interval:
            idle = max(idle + 1, clock.sim())
            yield idle
            continue
        sim_now = clock.now().timestamp() * clock.speed
        yield clock.sim() + math.floor(sim_now / interval + 1) * interval - sim_now
        idle = clock.sim()
        if station.config["ClockAlignedDataInterval"] == interval:
            take_sample(station, "Sample.Clock")


async def run_status_faults(station: Station, period_s: float = 0.5) -> None:
    """:func:`status_faults_schedule` in a task of its own."""
    await run_schedules([status_faults_schedule(station, period_s)], station.clock)


async def status_faults_schedule(station: Station, period_s: float = 0.5,
                                 start: float | None = None) -> Schedule:
    """With an injected ``status-flap``: the shown status looked at every ``period_s`` simulated
    seconds, a StatusNotification for each change (the watchdog alone may look less often)."""
    clock = station.clock
    due = clock.sim() if start is None else start
    while True:
        due += period_s
        yield due
        station.report_status()
        due = max(due, clock.sim() - period_s)  # late: no catching up


async def run_watchdog(station: Station) -> None:
    """:func:`watchdog_schedule` in a task of its own."""
    await run_schedules([watchdog_schedule(station)], station.clock)


async def watchdog_schedule(station: Station, start: float | None = None) -> Schedule:
    """Twice a charger period: see :meth:`Station.watch_charger`."""
    clock = station.clock
    due = clock.sim() if start is None else start
    while True:
        due += station.charger.period_s / 2
        yield due
        await station.watch_charger()
        due = max(due, clock.sim() - station.charger.period_s / 2)  # late: no catching up
