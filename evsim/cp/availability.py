"""What takes a connector or the whole charge point out of service: ChangeAvailability (OCPP 1.6
§5.2), UnlockConnector (§5.18) and Reset (§5.14).

An Inoperative change waits for the running transaction (Scheduled); the availability is kept in
the state file, so it holds after a reset or a restart. A Soft reset stops the transaction with
reason SoftReset, gives the StopTransaction a chance to be delivered, then the connection is
closed and the charge point boots again; a Hard reset does the same without waiting, as a power
cycle (the StopTransaction, kept in the state file, goes after the next BootNotification).
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ocpp.v16.enums import AvailabilityStatus, ResetStatus, UnlockStatus

from evsim.constants import RESPONSE_TIMEOUT_S
from evsim.timefmt import ocpp_time

if TYPE_CHECKING:
    from evsim.cp.station import Station

log = logging.getLogger("cp")

OPERATIVE, INOPERATIVE = "Operative", "Inoperative"


class Availability:
    """The availability wanted for connector 0 (the whole charge point) and connector 1."""

    def __init__(self, station: Station, stored: dict[str, str] | None) -> None:
        self.station = station
        self.wanted = {0: OPERATIVE, 1: OPERATIVE}
        for key, value in (stored or {}).items():
            if int(key) in self.wanted and value in (OPERATIVE, INOPERATIVE):
                self.wanted[int(key)] = value
        self.reported_zero = "Available"  # what a central system assumes until told
        self.resetting = False
        self.apply(report=False)

    @property
    def zero_status(self) -> str:
        """Connector 0's status: the charge point as a whole."""
        return "Unavailable" if self.wanted[0] == INOPERATIVE else "Available"

    def change(self, connector_id: int, kind: str) -> str:
        """ChangeAvailability: Accepted, Scheduled (after the transaction) or Rejected."""
        if connector_id not in self.wanted or kind not in (OPERATIVE, INOPERATIVE):
            return AvailabilityStatus.rejected
        self.wanted[connector_id] = kind
        self.station.store.put(self.station.id, availability={str(k): v for k, v in
                                                              self.wanted.items()})
        self.station.event("AVAILABILITY", f"connector {connector_id} {kind}",
                           {"connector_id": connector_id, "type": kind})
        if kind == INOPERATIVE and self.station.transaction is not None:
            return AvailabilityStatus.scheduled
        self.apply()
        return AvailabilityStatus.accepted

    def apply(self, report: bool = True) -> None:
        """Put the wanted availability in force (a transaction that ran has ended)."""
        self.station.connector.inoperative = INOPERATIVE in self.wanted.values()
        if report:
            self.report_zero()
            self.station.report_status()

    def report_zero(self, always: bool = False) -> None:
        """A StatusNotification for connector 0 when its status changed (or ``always``)."""
        station = self.station
        status = self.zero_status
        if not station.connected or (status == self.reported_zero and not always):
            return
        self.reported_zero = status
        station.send("StatusNotification", connector_id=0, error_code="NoError", status=status,
                     timestamp=ocpp_time(station.sent_time()))

    # -- UnlockConnector ------------------------------------------------------------------------

    async def unlock(self, connector_id: int) -> str:
        """Stop the transaction on the connector (reason UnlockCommand) and release the cable."""
        station = self.station
        if connector_id != 1:
            return UnlockStatus.unlock_failed
        if station.connector.fault and station.connector.fault[0] == "ConnectorLockFailure":
            return UnlockStatus.unlock_failed
        if station.transaction is not None:
            await station.stop_transaction("UnlockCommand")
        station.event("UNLOCKED", "connector 1 unlocked")
        return UnlockStatus.unlocked

    # -- Reset ----------------------------------------------------------------------------------

    def reset(self, kind: str) -> str:
        """Accept a Reset; :meth:`run_reset` carries it out once the answer is sent."""
        if self.resetting or kind not in ("Soft", "Hard"):
            return ResetStatus.rejected
        self.resetting = True
        return ResetStatus.accepted

    async def run_reset(self, kind: str) -> None:
        station = self.station
        log.warning("%s reset", kind)
        station.event("RESET", f"{kind} reset", {"type": kind})
        station.security_event("ResetOrReboot", f"{kind} reset requested by the central system")
        if station.transaction is not None:
            await station.stop_transaction(f"{kind}Reset")
        if kind == "Soft":
            await self.deliver_then_reboot()
        else:
            station.reboot(hard=True)

    async def deliver_then_reboot(self) -> None:
        """A graceful reboot: what is queued goes first (a response timeout at most)."""
        station = self.station
        if station.connected:
            try:
                await asyncio.wait_for(station.outbox.empty(), RESPONSE_TIMEOUT_S)
            except TimeoutError:
                log.warning("rebooting with %d message(s) undelivered; the transaction "
                            "messages are kept", len(station.outbox))
        station.reboot()

    def rebooted(self) -> None:
        self.resetting = False
        self.reported_zero = "Available"

    def state(self) -> dict[str, Any]:
        return {str(k): v for k, v in self.wanted.items()}
