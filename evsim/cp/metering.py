"""What the charge point measures and when: MeterValues readings, and the periodic work that
takes them and watches the charger."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from evsim.timefmt import ocpp_time

if TYPE_CHECKING:
    from evsim.cp.station import Station


class Reading(NamedTuple):
    measurand: str
    unit: str
    name: str  # the MemoryBank metric
    value: float


def readings(amps: float, voltage: float, energy_wh: float) -> list[Reading]:
    return [Reading("Current.Import", "A", "current", amps),
            Reading("Voltage", "V", "voltage", voltage),
            Reading("Power.Active.Import", "W", "power", amps * voltage),
            Reading("Energy.Active.Import.Register", "Wh", "energy", energy_wh)]


def meter_value(moment: datetime, values: list[Reading]) -> dict:
    """One MeterValue as OCPP carries it (sampledValue keys in camelCase)."""
    return {"timestamp": ocpp_time(moment),
            "sampledValue": [{"value": f"{r.value:.1f}", "context": "Sample.Periodic",
                              "measurand": r.measurand, "unit": r.unit} for r in values]}


async def run_meter(station: Station) -> None:
    """MeterValues every MeterValueSampleInterval, on a schedule that late samples do not
    shift; while it is 0 (no sampled data), look again every second whether it changed."""
    clock, config = station.clock, station.config
    due = clock.sim()
    while True:
        interval = config["MeterValueSampleInterval"] or 1
        due += interval
        await clock.sleep(due - clock.sim())
        late = clock.sim() - due
        if late > interval:
            due += late  # after a stall, skip the missed samples rather than bunch them
        if config["MeterValueSampleInterval"]:
            station.sample()


async def run_watchdog(station: Station) -> None:
    """Twice a charger period: see :meth:`Station.watch_charger`."""
    while True:
        await station.clock.sleep(station.charger.period_s / 2)
        await station.watch_charger()
