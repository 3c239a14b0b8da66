"""Reservation (OCPP 1.6 §5.13, §5.3): ReserveNow holds the connector for one idTag (or any idTag
of its parent) until the expiry date; CancelReservation, the expiry or the reserved transaction's
start ends it. The reservation is kept in the state file, so a restart keeps it.

The expiry date is a wall-clock instant (an absolute date the central system chose): a timer ends
the reservation then (and the watchdog checks it too, for one restored from the state file).
"""
from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ocpp.v16.enums import CancelReservationStatus, ReservationStatus

from evsim.timefmt import ocpp_time, parse_ocpp_time

if TYPE_CHECKING:
    from evsim.cp.station import Station


@dataclass
class Reservation:
    reservation_id: int
    connector_id: int
    expiry_date: str
    id_tag: str
    parent_id_tag: str | None = None

    @property
    def expiry(self) -> datetime:
        return parse_ocpp_time(self.expiry_date)

    def allows(self, id_tag: str, parent_id_tag: str | None) -> bool:
        """The reserved idTag, or one with the reservation's parent idTag."""
        return id_tag == self.id_tag or (self.parent_id_tag is not None
                                         and parent_id_tag == self.parent_id_tag)


class Reservations:
    """The one reservation a one-connector charge point can hold."""

    def __init__(self, station: Station, stored: dict[str, Any] | None) -> None:
        self.station = station
        self.current: Reservation | None = Reservation(**stored) if stored else None
        self._timer: asyncio.Task | None = None
        station.connector.reserved = self.current is not None

    def reserve(self, connector_id: int, expiry_date: str, id_tag: str, reservation_id: int,
                parent_id_tag: str | None = None) -> str:
        station = self.station
        zero = station.config.READ_ONLY["ReserveConnectorZeroSupported"] == "true"
        if connector_id not in (0, 1) or (connector_id == 0 and not zero):
            return ReservationStatus.rejected
        try:
            if parse_ocpp_time(expiry_date) <= station.clock.now():
                return ReservationStatus.rejected
        except ValueError:
            return ReservationStatus.rejected
        replacing = self.current is not None and self.current.reservation_id == reservation_id
        status = station.connector.status
        if status == "Faulted":
            return ReservationStatus.faulted
        if status == "Unavailable":
            return ReservationStatus.unavailable
        if not replacing and (self.current is not None or status != "Available"):
            return ReservationStatus.occupied
        if replacing and status not in ("Available", "Reserved"):
            return ReservationStatus.occupied
        self._set(Reservation(reservation_id, connector_id, ocpp_time(parse_ocpp_time(
            expiry_date)), id_tag, parent_id_tag))
        station.event("RESERVED", f"{station.id} reserved for {id_tag} until {expiry_date}",
                      asdict(self.current))
        return ReservationStatus.accepted

    def cancel(self, reservation_id: int) -> str:
        if self.current is None or self.current.reservation_id != reservation_id:
            return CancelReservationStatus.rejected
        self._set(None)
        return CancelReservationStatus.accepted

    def expire(self, now: datetime) -> None:
        """End the reservation once its expiry date is reached."""
        if self.current is not None and self.current.expiry <= now:
            self.station.event("RESERVATION_EXPIRED",
                               f"reservation {self.current.reservation_id} expired")
            self._set(None)

    def allows(self, id_tag: str, parent_id_tag: str | None) -> bool:
        """May ``id_tag`` use the connector? Yes when it is not reserved for another."""
        return self.current is None or self.current.allows(id_tag, parent_id_tag)

    def consume(self) -> int | None:
        """A transaction starts on the reserved connector: the reservation ends; its id."""
        if self.current is None:
            return None
        reservation_id = self.current.reservation_id
        self._set(None, report=False)
        return reservation_id

    async def _expire_at(self, reservation: Reservation) -> None:
        clock = self.station.clock
        await clock.sleep((reservation.expiry - clock.now()).total_seconds() * clock.speed)
        if self.current is reservation:
            self.expire(clock.now())

    def _set(self, reservation: Reservation | None, report: bool = True) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = self.station.spawn(self._expire_at(reservation)) if reservation else None
        self.current = reservation
        self.station.connector.reserved = reservation is not None
        self.station.store.put(self.station.id,
                               reservation=asdict(reservation) if reservation else None)
        if report:
            self.station.report_status()
