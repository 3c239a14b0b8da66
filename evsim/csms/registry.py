"""What the central system knows of each charge point across its connections.

A charge point keeps its record (transaction, scenario progress, analysis) when it
reconnects; a second connection with the same id replaces the first. Transaction ids continue from
the MemoryBank's highest, so they are unique across restarts. Everything kept is bounded, for a
process that runs for days: a short window of finished transaction ids per charge point, and at
most ``max_stations`` records (the one disconnected longest ago goes first).
"""
from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from evsim.csms.analysis import ChargePointAnalysis
from evsim.csms.scenario import ScenarioRunner

#: Finished transaction ids remembered per charge point: a repeated StopTransaction (one whose
#: answer was lost) comes soon after the first.
FINISHED_KEPT = 32
#: Transactions a charge point may have open at once before the oldest is forgotten (it has one
#: connector; more only if it lost track of one).
OPEN_KEPT = 8
MAX_STATIONS = 10_000
#: StartTransactions remembered per charge point, to answer a repeated one with the same id.
STARTS_KEPT = 16

#: What a StopTransaction means for the record: a session to close, one closed already, or a
#: transaction this central system did not start for that charge point.
STOP_RECORD, STOP_REPEATED, STOP_UNKNOWN = "record", "repeated", "unknown"


class RecentIds:
    """A set that keeps only the ``size`` members added last."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._order: deque[Hashable] = deque()
        self._members: set[Hashable] = set()

    def add(self, member: Hashable) -> None:
        if member in self._members:
            return
        self._order.append(member)
        self._members.add(member)
        if len(self._order) > self.size:
            self._members.discard(self._order.popleft())

    def discard(self, member: Hashable) -> None:
        if member in self._members:
            self._members.remove(member)
            self._order.remove(member)

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def __len__(self) -> int:
        return len(self._members)


@dataclass(eq=False)
class Station:
    """One charge point: its current connection (``link``, None while away), the transaction it
    runs, the scenario's progress and the analysis of what it sends; for the control API, what it
    last said of itself (``boot``, each connector's status, the last report of each kind, the
    last message) and whether the API paused its scenario."""

    id: str
    analyser: ChargePointAnalysis
    runner: Optional[ScenarioRunner] = None
    link: Any = None
    transaction_id: Optional[int] = None
    open: RecentIds = field(default_factory=lambda: RecentIds(OPEN_KEPT))
    finished: RecentIds = field(default_factory=lambda: RecentIds(FINISHED_KEPT))
    scenario_task: Optional[asyncio.Task] = None
    boot: Optional[dict] = None
    connectors: dict[int, dict] = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)
    last_message: Optional[dict] = None
    paused: bool = False
    starts: OrderedDict = field(default_factory=OrderedDict)
    on_connector: dict[int, int] = field(default_factory=dict)

    def knows_connector(self, connector_id: int) -> bool:
        """Whether a transaction may run on ``connector_id``: 1 or more, and one the charge
        point reported a status for, if it reported any (until then, any of them)."""
        reported = [number for number in self.connectors if number > 0]
        return connector_id > 0 and (not reported or connector_id in reported)

    @property
    def idle(self) -> bool:
        """Neither connected nor driving a scenario: its record may be dropped."""
        return self.link is None and (self.scenario_task is None or self.scenario_task.done())


class Registry:
    """Every charge point's :class:`Station`, their connections and the transaction ids.

    ``new_station(charge_point_id)`` makes the record of a charge point seen for the first time.
    """

    def __init__(self, new_station: Callable[[str], Station], first_transaction_id: int = 1,
                 max_stations: int = MAX_STATIONS) -> None:
        self.new_station = new_station
        self.first_transaction_id = first_transaction_id
        self.max_stations = max_stations
        self._stations: dict[str, Station] = {}  # the one disconnected longest ago first
        self._transaction_ids = itertools.count(first_transaction_id)

    def __iter__(self) -> Iterator[Station]:
        return iter(list(self._stations.values()))

    def __len__(self) -> int:
        return len(self._stations)

    def get(self, charge_point_id: str) -> Optional[Station]:
        return self._stations.get(charge_point_id)

    def station(self, charge_point_id: str) -> Station:
        """The record of a charge point, made on first sight."""
        station = self._stations.get(charge_point_id)
        if station is None:
            if len(self._stations) >= self.max_stations:
                self._drop_one()
            station = self._stations[charge_point_id] = self.new_station(charge_point_id)
        return station

    def _drop_one(self) -> None:
        """Forget the idle record that has been idle longest; its open episode ends now."""
        for station in self._stations.values():
            if station.idle:
                del self._stations[station.id]
                station.analyser.close()
                return

    def connect(self, station: Station, link: Any) -> Any:
        """``link`` is the charge point's connection from now on; returns the connection it
        replaces (None if it had none), for the caller to close."""
        previous, station.link = station.link, link
        return previous

    def disconnect(self, station: Station, link: Any) -> bool:
        """``link`` closed. False if a newer connection had replaced it already."""
        if station.link is not link:
            return False
        station.link = None
        if self._stations.get(station.id) is station:  # the newest disconnected goes last
            self._stations[station.id] = self._stations.pop(station.id)
        return True

    def start_transaction(self, station: Station, connector_id: int = 1) -> int:
        """A new transaction id, unique across restarts; it is the charge point's transaction
        on ``connector_id``."""
        transaction_id = next(self._transaction_ids)
        station.open.add(transaction_id)
        station.transaction_id = transaction_id
        station.on_connector[connector_id] = transaction_id
        return transaction_id

    @staticmethod
    def remember_start(station: Station, start: Hashable, answer: Any) -> None:
        """The answer given to a StartTransaction, by what identifies it (charge point, idTag,
        meterStart, timestamp), for :meth:`repeated_start`."""
        station.starts[start] = answer
        while len(station.starts) > STARTS_KEPT:
            station.starts.popitem(last=False)

    @staticmethod
    def repeated_start(station: Station, start: Hashable) -> Any:
        """The answer already given to this very StartTransaction (its answer was lost, or the
        central system restarted after recording it), or None."""
        return station.starts.get(start)

    @staticmethod
    def open_on(station: Station, connector_id: int) -> Optional[int]:
        """The transaction still open on ``connector_id``, which a new start there replaces."""
        transaction_id = station.on_connector.get(connector_id)
        return transaction_id if transaction_id in station.open else None

    def stop_transaction(self, station: Station, transaction_id: int) -> str:
        """Whether a StopTransaction closes a session (:data:`STOP_RECORD`): one for a
        transaction issued to this charge point since this process started, or before it (below
        ``first_transaction_id``, whose session the MemoryBank has)."""
        if station.transaction_id == transaction_id:
            station.transaction_id = None
        for connector_id, open_id in list(station.on_connector.items()):
            if open_id == transaction_id:
                del station.on_connector[connector_id]
        if transaction_id in station.finished:
            return STOP_REPEATED
        if transaction_id in station.open:
            station.open.discard(transaction_id)
        elif not 0 < transaction_id < self.first_transaction_id:
            return STOP_UNKNOWN
        station.finished.add(transaction_id)
        return STOP_RECORD

    @staticmethod
    def adopt_transaction(station: Station, transaction_id: Optional[int]) -> None:
        """MeterValues name a transaction: if the charge point has none here, it is one started
        before a restart, and the scenario may stop it."""
        if (transaction_id is not None and station.transaction_id is None
                and transaction_id not in station.finished):
            station.transaction_id = transaction_id
