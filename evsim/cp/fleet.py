"""Many charge points in one process (``cp.py --count N``): each its own :class:`Station`, with
its own connection, transaction lifecycle, outbox and reconnect backoff, and its own charger:
the same :class:`~evsim.charger.model.Charger` and :class:`~evsim.charger.node.ChargerNode` that
charger_module.py runs, in process, exchanging the same frames without a bus.

Boots are staggered by ``--stagger`` simulated seconds, so that a connection storm is a choice
(``--stagger 0``), not an accident. One log line a minute sums the fleet up; the per-message
lines of 2,000 charge points would be unreadable.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

import can

from evsim.canbus import frames
from evsim.charger.model import Charger
from evsim.charger.node import ChargerNode
from evsim.clock import Clock, Schedule, run_schedules
from evsim.cp import metering
from evsim.cp.station import Station

log = logging.getLogger("fleet")

SUMMARY_S = 60.0
ID_PREFIX = "CP_"
STAGGER_S = 0.05


def quiet(level: str) -> None:
    """At INFO, a fleet logs its summaries and what goes wrong, not each charge point's messages
    and each charger's ticks; DEBUG shows everything."""
    if logging.getLevelName(level) == logging.INFO:
        for name in ("cp", "charger"):
            logging.getLogger(name).setLevel(logging.WARNING)


def fleet_ids(prefix: str, count: int) -> list[str]:
    """``CP_0001`` ... : numbered from 1, at least four digits, so that they sort as numbers."""
    width = max(4, len(str(count)))
    return [f"{prefix}{number:0{width}d}" for number in range(1, count + 1)]


class InProcessBus:
    """The CAN bus between one charge point and its own charger, in process: a frame sent is
    handed to ``receive`` at once, decoded as a bus would deliver it."""

    up = True

    def __init__(self, receive: Callable[[frames.Frame], Any]) -> None:
        self.receive = receive

    async def send(self, msg: can.Message) -> bool:
        self.receive(frames.decode(msg))
        return True


def attach_charger(station: Station, clock: Clock, period_s: float,
                   ramp: float = 0.2) -> ChargerNode:
    """Give ``station`` a charger of its own, in process (see :func:`station_tasks`)."""
    node = ChargerNode(Charger(ramp=ramp), clock, period_s)
    station.charger.link = InProcessBus(node.on_frame)
    return node


def station_tasks(station: Station,
                  charger: ChargerNode | None = None) -> list[tuple[Coroutine, str]]:
    """What keeps one charge point going (and its in-process ``charger``), but its connection:
    with a charger in process, one task on one schedule (see :func:`station_schedules`); on a
    real bus, a task each, so that a slow bus delays no sample."""
    if charger is not None:
        return [(run_schedules(station_schedules(station, charger), station.clock),
                 f"{station.id} schedule")]
    return [(run_schedules([schedule], station.clock), f"{station.id} {name}")
            for name, schedule in _schedules(station, station.clock.sim())]


def station_schedules(station: Station, charger: ChargerNode) -> list[Schedule]:
    """The schedules of ``station`` and the 0x300 ticks of its ``charger``, all counted from
    the same moment, so that work due together wakes the task once."""
    start = station.clock.sim()
    station.charger.last_frame_at = start  # started with its charge point: not silent before
    schedules = [schedule for _, schedule in _schedules(station, start)]
    # half a period off the meter's second: which frame a sample reads must not depend on
    # which of two pieces of work due at once runs first
    schedules.append(charger.publish_schedule(InProcessBus(station.on_can_frame),
                                              charger.period_s / 2, start))
    return schedules


def _schedules(station: Station, start: float) -> list[tuple[str, Schedule]]:
    """The meter, the watchdog, the CAN keep-alive, the clock-aligned meter (and the injected
    status faults) of ``station`` from ``start``, by name."""
    named = [("meter", metering.meter_schedule(station, start)),
             ("watchdog", metering.watchdog_schedule(station, start)),
             ("CAN keep-alive", station.charger.keep_alive_schedule(start)),
             ("clock-aligned meter", metering.aligned_schedule(station, start))]
    if station.status_faults is not None and station.status_faults.windows:
        named.append(("injected status", metering.status_faults_schedule(station, start=start)))
    return named


async def boot_in_turn(stations: Sequence[Station], start: Callable[[Station], None],
                       clock: Clock, stagger_s: float) -> None:
    """``start`` each station, ``stagger_s`` simulated seconds apart (0: all at once)."""
    deadline = clock.sim()
    for index, station in enumerate(stations):
        start(station)
        if stagger_s > 0 and index + 1 < len(stations):
            deadline += stagger_s
            await clock.sleep(deadline - clock.sim())
    if len(stations) > 1:
        log.info("fleet: %d charge points started", len(stations))


def summary(stations: Iterable[Station]) -> str:
    """One line: how many are connected, and the connectors by status."""
    stations = list(stations)
    statuses = Counter(station.connector.status for station in stations)
    connected = sum(station.connected for station in stations)
    by_status = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    return f"fleet: {connected}/{len(stations)} connected; {by_status}"


async def report(stations: Sequence[Station], clock: Clock, every_s: float = SUMMARY_S) -> None:
    """:func:`summary` every ``every_s`` wall seconds."""
    while True:
        await clock.sleep(every_s * clock.speed)
        log.info("%s", summary(stations))
