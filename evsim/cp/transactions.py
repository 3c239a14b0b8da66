"""A charge point's transactions (OCPP 1.6 §4.8, §4.10, §5.11, §5.12): remote and local starts,
stops with their reasons, the answers that give a transaction its id or take its authorization,
and the recovery of what an earlier run left open.

A mixin of :class:`evsim.cp.station.Station`, whose state it works on; every change is stored
before it is acted on (see :mod:`evsim.cp.store`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ocpp.v16.enums import AuthorizationStatus, RemoteStartStopStatus

from evsim.constants import CONNECTOR_ID
from evsim.cp.config import Configuration
from evsim.cp.outbox import Message
from evsim.ocpp16 import profiles
from evsim.ocpp16.profiles import ProfileError
from evsim.timefmt import ocpp_time, parse_ocpp_time

log = logging.getLogger("cp")

#: The reason a transaction gets when a restart finds it open: cp.py ended without stopping it.
CRASH_STOP_REASON = "PowerLoss"


@dataclass
class Transaction:
    ref: int
    id_tag: str
    meter_start: int
    started_at: datetime
    transaction_id: int | None = None  # given by StartTransaction.conf
    parent_id_tag: str | None = None
    deauthorized: bool = False  # not accepted, kept open (StopTransactionOnInvalidId false)
    data: list[dict] = field(default_factory=list)  # StopTxn*Data, for transactionData


class TransactionRules:
    """The transaction rules of :class:`Station` (``self`` is the station)."""

    # -- start-up after an earlier run ----------------------------------------------------------

    def recover(self) -> None:
        """Queue what an earlier run still owed, and close the transaction it left open as
        after a power loss, with the last register it stored; before any new work."""
        stored = self.store.transactions(self.id)
        for row in stored:
            self.transactions[row.ref] = Transaction(row.ref, row.id_tag, row.meter_start,
                                                     parse_ocpp_time(row.started_at),
                                                     row.transaction_id)
        queued = self.outbox.restore()
        stopped_at = self.store.settings(self.id).get("energy_at")
        for row in stored:
            if not row.stopped:
                tx = self.transactions[row.ref]
                log.warning("transaction %s was left open by the last run: stopping it (%s)",
                            tx.transaction_id or "(no id yet)", CRASH_STOP_REASON)
                self._queue_stop(tx, CRASH_STOP_REASON,
                                 parse_ocpp_time(stopped_at) if stopped_at else self.clock.now())
        if queued or any(not row.stopped for row in stored):
            self.event("RECOVERED", f"{self.id} resumed {queued} queued message(s)",
                       {"queued": queued, "closed": [r.ref for r in stored if not r.stopped]})

    # -- OCPP requests ----------------------------------------------------------------------------

    def can_start(self, id_tag: str, parent_id_tag: str | None) -> bool:
        return (self.transaction is None and not self.starting
                and self.connector.status in ("Available", "Preparing", "Reserved")
                and not self.connector.finishing
                and self.local.pending_tag in (None, id_tag)
                and self.reservations.allows(id_tag, parent_id_tag))

    def remote_start(self, id_tag: str, connector_id: int | None,
                     charging_profile: dict | None) -> str:
        if connector_id not in (None, CONNECTOR_ID) or \
                not self.can_start(id_tag, self.auth.parent_of(id_tag)):
            return RemoteStartStopStatus.rejected
        profile = None
        if charging_profile is not None:
            try:
                profile = profiles.parse(charging_profile)
            except ProfileError as exc:
                log.warning("RemoteStartTransaction rejected: %s", exc)
                return RemoteStartStopStatus.rejected
            if profile.purpose != "TxProfile":
                log.warning("RemoteStartTransaction rejected: its profile is not a TxProfile")
                return RemoteStartStopStatus.rejected
        self.starting = True
        if not self.connector.plugged:  # the scenario's car: plugged in for this transaction
            self.connector.plugged = self.connector.simulated_ev = True
        self.report_status()
        self.spawn(self._remote_start(id_tag, profile))
        return RemoteStartStopStatus.accepted

    async def _remote_start(self, id_tag: str, profile: profiles.ChargingProfile | None) -> None:
        parent = None
        if self.config["AuthorizeRemoteTxRequests"]:
            info = await self.auth.authorize(id_tag)
            if info.get("status") != AuthorizationStatus.accepted:
                log.info("remote start for %s not authorized (%s)", id_tag, info.get("status"))
                self.starting = False
                self.local.release_simulated_ev()
                return
            parent = info.get("parent_id_tag")
        await self.start_transaction(id_tag, profile, parent)

    def remote_stop(self, transaction_id: int) -> str:
        tx = self.transaction
        if tx is None or tx.transaction_id != transaction_id:
            return RemoteStartStopStatus.rejected
        self.spawn(self.stop_transaction("Remote"))
        return RemoteStartStopStatus.accepted

    def local_stop(self) -> None:
        """The stop button on the charge point."""
        if self.transaction is not None:
            log.info("local stop requested")
            self.spawn(self.stop_transaction("Local"))

    # -- transactions ---------------------------------------------------------------------------

    async def start_transaction(self, id_tag: str, profile: profiles.ChargingProfile | None = None,
                                parent_id_tag: str | None = None) -> None:
        self.starting = False
        self.local.started()
        now = self.clock.now()
        payload = {"connector_id": CONNECTOR_ID, "id_tag": id_tag,
                   "meter_start": self.register_wh, "timestamp": ocpp_time(self.sent_time(now))}
        reservation_id = self.reservations.consume()
        if reservation_id is not None:
            payload["reservation_id"] = reservation_id
        ref, stored_id = self.store.open_transaction(
            self.id, id_tag, payload["meter_start"], ocpp_time(now),
            ("StartTransaction", payload))
        tx = self.transactions[ref] = Transaction(ref, id_tag, payload["meter_start"], now,
                                                  parent_id_tag=parent_id_tag)
        self.transaction = tx
        if profile is not None:
            self.profiles.install(CONNECTOR_ID, profile, None, transaction_running=True)
        self.outbox.put(Message("StartTransaction", payload, ref, stored_id))
        self.connector.authorized = False
        self.connector.charging = True
        self.update_suspension()
        self.event("TRANSACTION_STARTED", f"transaction for {id_tag} started",
                   {"id_tag": id_tag, "reservation_id": reservation_id})
        await self.charger.apply_limit(self.limit_in_force())
        if self.transaction is tx:  # not stopped while the limit went out
            await self.charger.set_charging(True)

    async def stop_transaction(self, reason: str) -> None:
        tx = self.transaction
        if tx is None:
            return
        self.transaction = None
        self.connector.charging = self.connector.suspended_ev = False
        self.connector.suspended_evse = False
        self.connector.finishing = self.connector.plugged
        await self.charger.set_charging(False)
        self.report_status()
        self._queue_stop(tx, reason, self.clock.now())
        self.profiles.end_transaction()
        await self.charger.apply_limit(self.limit_in_force())
        self.local.release_simulated_ev()
        self.availability.apply()
        self.event("TRANSACTION_STOPPED", f"transaction {tx.transaction_id} stopped ({reason})",
                   {"transaction_id": tx.transaction_id, "reason": reason})

    def _queue_stop(self, tx: Transaction, reason: str, when: datetime) -> None:
        payload = {"meter_stop": self.register_wh, "timestamp": ocpp_time(self.sent_time(when)),
                   "reason": reason, "id_tag": tx.id_tag}
        if tx.data:
            payload["transaction_data"] = tx.data
        stored_id = self.store.close_transaction(self.id, tx.ref, ("StopTransaction", payload),
                                                 energy_wh=self.meter.energy_wh)
        self.outbox.put(Message("StopTransaction", payload, tx.ref, stored_id))

    def _transaction_id(self, ref: int) -> int | None:
        tx = self.transactions.get(ref)
        return tx.transaction_id if tx else None

    def _answered(self, message: Message, result: Any) -> None:
        """A message was answered (``result``) or given up on (None)."""
        tx = self.transactions.get(message.tx_ref) if message.tx_ref is not None else None
        if message.action == "StartTransaction" and tx is not None and result is not None:
            tx.transaction_id = result.transaction_id
            self.store.set_transaction_id(tx.ref, tx.transaction_id)
            info = result.id_tag_info or {}
            self.auth.remember(tx.id_tag, info)
            tx.parent_id_tag = tx.parent_id_tag or info.get("parent_id_tag")
            log.info("transaction %s started, idTag %s", tx.transaction_id, info.get("status"))
            if info.get("status") != AuthorizationStatus.accepted and self.transaction is tx:
                if self.config["StopTransactionOnInvalidId"]:
                    self.spawn(self.stop_transaction("DeAuthorized"))
                else:
                    tx.deauthorized = True
                    self.spawn(self.limit_changed())
        elif message.action == "StopTransaction" and tx is not None:
            if result is not None:
                self.auth.remember(tx.id_tag, result.id_tag_info)
            del self.transactions[tx.ref]
            self.store.forget_finished(self.id)
        elif message.action == "BootNotification" and result is not None and result.interval:
            self.config.values["HeartbeatInterval"] = min(result.interval,
                                                          Configuration.MAXIMUM["HeartbeatInterval"])

