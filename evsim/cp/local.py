"""What a person does at the charge point: plug a cable in or out, present an idTag, set the
EV's own current limit, and (as a test engineer) put the connector in a fault and clear it.

Each action raises :class:`Conflict` when it does not fit the connector's state (the API answers
409) and ValueError for a value that is not one (400).
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ocpp.v16.enums import AuthorizationStatus

from evsim.cp.connector import ERROR_CODES

if TYPE_CHECKING:
    from evsim.cp.station import Station

log = logging.getLogger("cp")


class Conflict(Exception):
    """The action does not fit the connector's state: the reason, in one line."""


class LocalActions:
    def __init__(self, station: Station) -> None:
        self.station = station
        self.pending_tag: str | None = None  # accepted, waiting for the cable
        self.pending_parent: str | None = None
        self._timeout: asyncio.Task | None = None

    @property
    def connector(self):
        return self.station.connector

    def _record(self, action: str, data: dict[str, Any] | None = None) -> None:
        log.info("local: %s %s", action, data or "")
        self.station.event("CP_LOCAL", f"connector 1 {action}", data)

    # -- the cable ------------------------------------------------------------------------------

    async def plug_in(self) -> dict[str, Any]:
        if self.connector.plugged:
            raise Conflict("a cable is already plugged in")
        self.connector.plugged = True
        self._record("plug-in")
        tx = self.station.transaction
        if tx is not None:  # back after an EV-side disconnect that did not stop it
            self.station.update_suspension()
        elif self.pending_tag is not None:
            await self.station.start_transaction(self.pending_tag, None, self.pending_parent)
        self.station.report_status()
        return self.station_state()

    async def unplug(self) -> dict[str, Any]:
        """The cable out on the EV side: stops the transaction when
        StopTransactionOnEVSideDisconnect (reason EVDisconnected), else suspends it."""
        if not self.connector.plugged or self.connector.simulated_ev:
            raise Conflict("no cable is plugged in")
        self._record("unplug")
        if self.station.transaction is not None and \
                self.station.config["StopTransactionOnEVSideDisconnect"]:
            await self.station.stop_transaction("EVDisconnected")
        self.connector.plugged = False
        self.connector.finishing = False
        self.station.update_suspension()
        self.station.report_status()
        return self.station_state()

    def release_simulated_ev(self) -> None:
        """The scenario's car leaves once its transaction ends (or never started)."""
        if self.connector.simulated_ev:
            self.connector.plugged = self.connector.simulated_ev = False
            self.connector.finishing = False
        self.station.report_status()

    # -- the idTag ------------------------------------------------------------------------------

    async def present_id_tag(self, id_tag: str) -> dict[str, Any]:
        """Stop the transaction it (or its parent) started, else authorize and start (or wait
        for the cable, up to ConnectionTimeOut)."""
        station = self.station
        if not isinstance(id_tag, str) or not 0 < len(id_tag) <= 20:
            raise ValueError("idTag must be a string of 1 to 20 characters")
        tx = station.transaction
        if tx is not None:
            parent = station.auth.parent_of(id_tag)
            if id_tag != tx.id_tag and (parent is None or parent != tx.parent_id_tag):
                raise Conflict("a transaction of another idTag runs on connector 1")
            self._record("present-id-tag", {"idTag": id_tag, "outcome": "stop"})
            await station.stop_transaction("Local")
            return {"outcome": "stopped", **self.station_state()}
        if self.connector.status not in ("Available", "Preparing", "Reserved") or \
                self.connector.finishing or station.starting:
            raise Conflict(f"connector 1 is {self.connector.status}")
        info = await station.auth.authorize(id_tag)
        status = info.get("status")
        outcome = "rejected"
        if status == AuthorizationStatus.accepted:
            parent = info.get("parent_id_tag")
            if not station.reservations.allows(id_tag, parent):
                raise Conflict("connector 1 is reserved for another idTag")
            if station.transaction is not None or station.starting:
                raise Conflict("a transaction started meanwhile")
            if self.connector.plugged:
                outcome = "started"
                await station.start_transaction(id_tag, None, parent)
            else:
                outcome = "authorized"
                self._wait_for_cable(id_tag, parent)
        self._record("present-id-tag", {"idTag": id_tag, "status": status, "outcome": outcome})
        return {"outcome": outcome, "idTagInfo": info, **self.station_state()}

    def _wait_for_cable(self, id_tag: str, parent: str | None) -> None:
        self.pending_tag, self.pending_parent = id_tag, parent
        self.connector.authorized = True
        self.station.report_status()
        if self._timeout is not None:
            self._timeout.cancel()
        self._timeout = self.station.spawn(self._connection_timeout())

    async def _connection_timeout(self) -> None:
        await self.station.clock.sleep(self.station.config["ConnectionTimeOut"])
        if self.pending_tag is not None and self.station.transaction is None:
            log.info("no cable within ConnectionTimeOut: authorization of %s dropped",
                     self.pending_tag)
            self._timeout = None
            self.forget()

    def started(self) -> None:
        """A transaction started: nothing waits for the cable any more."""
        if self._timeout is not None and self._timeout is not asyncio.current_task():
            self._timeout.cancel()
        self._timeout = None
        self.pending_tag = self.pending_parent = None

    def forget(self) -> None:
        self.started()
        self.connector.authorized = False
        self.station.report_status()

    # -- the EV and faults ----------------------------------------------------------------------

    async def set_ev_limit(self, max_current: Any) -> dict[str, Any]:
        if max_current is not None and (isinstance(max_current, bool) or
                                        not isinstance(max_current, int | float) or
                                        not 0 <= max_current <= 1000):
            raise ValueError("maxCurrent must be a number of amperes from 0 to 1000, or null")
        self.station.ev_max_current = float(max_current) if max_current is not None else None
        self._record("ev", {"maxCurrent": max_current})
        await self.station.limit_changed()
        return self.station_state()

    async def fault(self, error_code: Any, info: Any = None) -> dict[str, Any]:
        if error_code not in ERROR_CODES or error_code == "NoError":
            raise ValueError(f"errorCode must be an OCPP 1.6 error code other than NoError, "
                             f"got {error_code!r}")
        if info is not None and (not isinstance(info, str) or len(info) > 50):
            raise ValueError("info must be a string of at most 50 characters")
        if self.connector.fault is not None:
            raise Conflict(f"connector 1 is already faulted ({self.connector.fault[0]})")
        self.connector.fault = (error_code, info)
        self._record("fault", {"errorCode": error_code, "info": info})
        self.station.report_status()
        if self.station.transaction is not None:
            await self.station.stop_transaction("Other")
        return self.station_state()

    async def clear_fault(self) -> dict[str, Any]:
        if self.connector.fault is None:
            raise Conflict("connector 1 has no fault to clear")
        self.connector.fault = None
        self._record("clear-fault")
        self.station.report_status()
        return self.station_state()

    def station_state(self) -> dict[str, Any]:
        c = self.connector
        return {"connectorStatus": c.status, "plugged": c.plugged, "errorCode": c.error[0]}
