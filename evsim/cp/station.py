"""The charge point: one connector, its transactions, its charging profiles and its meter.

OCPP requests arrive here from the endpoint, CAN frames from the bridge; what the central system
must hear leaves through the outbox. Every transaction change is stored before it is acted on
(see :mod:`evsim.cp.store`), so a restart resumes where the last run stopped.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ocpp.v16.enums import (
    AuthorizationStatus,
    ChargingProfileStatus,
    ClearChargingProfileStatus,
    RemoteStartStopStatus,
)

from evsim.canbus import frames
from evsim.clock import Clock
from evsim.constants import CHARGER_PERIOD_S, CONNECTOR_ID, SILENT_PERIODS
from evsim.cp import metering
from evsim.cp.bridge import ChargerBridge, Link
from evsim.cp.config import Configuration
from evsim.cp.connector import Connector
from evsim.cp.meter import EnergyMeter
from evsim.cp.outbox import Message, Outbox
from evsim.cp.store import StateStore
from evsim.ocpp16 import profiles
from evsim.ocpp16.profiles import ProfileError, ProfileStore
from evsim.timefmt import ocpp_time, parse_ocpp_time

log = logging.getLogger("cp")

#: The reason a transaction gets when a restart finds it open: cp.py ended without stopping it.
CRASH_STOP_REASON = "PowerLoss"


class Recorder(Protocol):
    def event(self, event_type: str, description: str, data: Any = None,
              charge_point_id: str | None = None) -> None: ...

    def metric(self, name: str, value: float, unit: str, charge_point_id: str | None = None,
               transaction_id: int | None = None, timestamp: Any = None) -> None: ...


@dataclass
class Transaction:
    ref: int
    id_tag: str
    meter_start: int
    started_at: datetime
    transaction_id: int | None = None  # given by StartTransaction.conf


class Station:
    """The charge point's state and the rules that change it."""

    def __init__(self, charge_point_id: str, store: StateStore, clock: Clock, *,
                 writer: Recorder | None = None, link: Link | None = None,
                 voltage: float = 230.0, default_limit: float = 32.0,
                 charger_period: float = CHARGER_PERIOD_S) -> None:
        self.id = charge_point_id
        self.store = store
        self.clock = clock
        self.writer = writer
        self.voltage = voltage
        settings = store.settings(charge_point_id)
        self.config = Configuration(settings.get("configuration"))
        self.profiles = ProfileStore(default_limit, voltage=voltage, speed=clock.speed)
        self.meter = EnergyMeter(voltage, energy_wh=settings.get("energy_wh", 0.0),
                                 max_gap_s=SILENT_PERIODS * charger_period)
        self.connector = Connector()
        self.charger = ChargerBridge(self.meter, clock, charger_period, self.event, link)
        self.transactions: dict[int, Transaction] = {}
        self.transaction: Transaction | None = None
        self.outbox = Outbox(charge_point_id, store, self.config, clock, self._transaction_id,
                             self._answered)
        self.connected = False
        self.booted = False
        self._tasks: set[asyncio.Task] = set()

    def event(self, event_type: str, description: str, data: Any = None) -> None:
        if self.writer is not None:
            self.writer.event(event_type, description, data, self.id)

    def spawn(self, coroutine: Coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        settings = self.store.settings(self.id)
        stopped_at = settings.get("energy_at")
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

    # -- status ---------------------------------------------------------------------------------

    def report_status(self, always: bool = False) -> None:
        """A StatusNotification when the status changed (or ``always``), if connected."""
        status = self.connector.unreported()
        if always:
            status = self.connector.status
        if status is None or not self.connected:
            return
        error, info = self.connector.error
        self.outbox.put(Message("StatusNotification", {
            "connector_id": CONNECTOR_ID, "error_code": error, "status": status, "info": info,
            "timestamp": ocpp_time(self.clock.now())}))

    # -- CAN ------------------------------------------------------------------------------------

    def on_can_frame(self, frame: frames.Frame) -> None:
        if self.charger.on_frame(frame):
            self.connector.faulted = False
            self.report_status()

    def on_bus_up(self) -> None:
        self.spawn(self.charger.resync(self.limit_in_force(),
                                       self.connector.phase == "Charging"))

    def limit_in_force(self) -> float:
        start = self.transaction.started_at if self.transaction else None
        return min(self.profiles.limit(self.clock.now(), start), frames.MAX_AMPS)

    async def watch_charger(self) -> None:
        """Is the charger silent, and did the limit in force change (a schedule moved to its
        next period)? Not while the bus is down: the bus coming up re-syncs."""
        if self.charger.went_silent():
            self.connector.faulted = True
            self.report_status()
        if self.charger.up:
            await self.charger.apply_limit(self.limit_in_force())

    # -- OCPP requests --------------------------------------------------------------------------

    def remote_start(self, id_tag: str, connector_id: int | None,
                     charging_profile: dict | None) -> str:
        if connector_id not in (None, CONNECTOR_ID) or self.connector.status != "Available":
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
        self.connector.set_phase("Preparing")
        self.report_status()
        self.spawn(self.start_transaction(id_tag, profile))
        return RemoteStartStopStatus.accepted

    def remote_stop(self, transaction_id: int) -> str:
        tx = self.transaction
        if self.connector.phase != "Charging" or tx is None or tx.transaction_id != transaction_id:
            return RemoteStartStopStatus.rejected
        self.spawn(self.stop_transaction("Remote"))
        return RemoteStartStopStatus.accepted

    def local_stop(self) -> None:
        """The stop button on the charge point."""
        if self.connector.phase == "Charging":
            log.info("local stop requested")
            self.spawn(self.stop_transaction("Local"))

    async def set_charging_profile(self, connector_id: int, profile_data: dict) -> str:
        tx = self.transaction
        try:
            self.profiles.install(connector_id, profiles.parse(profile_data),
                                  tx.transaction_id if tx else None, tx is not None)
        except ProfileError as exc:
            log.warning("SetChargingProfile rejected: %s", exc)
            return ChargingProfileStatus.rejected
        await self.charger.apply_limit(self.limit_in_force(), force=True)
        return ChargingProfileStatus.accepted

    async def clear_charging_profile(self, **criteria: Any) -> str:
        removed = self.profiles.clear(criteria.get("id"), criteria.get("connector_id"),
                                      criteria.get("charging_profile_purpose"),
                                      criteria.get("stack_level"))
        await self.charger.apply_limit(self.limit_in_force(), force=True)
        return ClearChargingProfileStatus.accepted if removed else ClearChargingProfileStatus.unknown

    def change_configuration(self, key: str, value: str) -> str:
        status = self.config.change(key, value)
        if status == "Accepted":
            self.store.put(self.id, configuration=self.config.values)
        return status

    # -- transactions ---------------------------------------------------------------------------

    async def start_transaction(self, id_tag: str, profile: profiles.ChargingProfile | None
                                ) -> None:
        now = self.clock.now()
        payload = {"connector_id": CONNECTOR_ID, "id_tag": id_tag,
                   "meter_start": self.meter.register_wh, "timestamp": ocpp_time(now)}
        ref, stored_id = self.store.open_transaction(
            self.id, id_tag, payload["meter_start"], payload["timestamp"],
            ("StartTransaction", payload))
        tx = self.transactions[ref] = Transaction(ref, id_tag, payload["meter_start"], now)
        self.transaction = tx
        if profile is not None:
            self.profiles.install(CONNECTOR_ID, profile, None, transaction_running=True)
        await self.charger.apply_limit(self.limit_in_force())
        await self.charger.send(frames.start())
        self.outbox.put(Message("StartTransaction", payload, ref, stored_id))
        self.connector.set_phase("Charging")
        self.report_status()

    async def stop_transaction(self, reason: str) -> None:
        tx = self.transaction
        if tx is None or self.connector.phase != "Charging":
            return
        self.connector.set_phase("Finishing")
        await self.charger.send(frames.stop())
        self.report_status()
        self._queue_stop(tx, reason, self.clock.now())
        self.transaction = None
        self.profiles.end_transaction()
        await self.charger.apply_limit(self.limit_in_force())
        self.connector.set_phase("Available")
        self.report_status()

    def _queue_stop(self, tx: Transaction, reason: str, when: datetime) -> None:
        payload = {"meter_stop": self.meter.register_wh, "timestamp": ocpp_time(when),
                   "reason": reason, "id_tag": tx.id_tag}
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
            status = (result.id_tag_info or {}).get("status")
            log.info("transaction %s started, idTag %s", tx.transaction_id, status)
            if status != AuthorizationStatus.accepted and self.transaction is tx:
                self.spawn(self.stop_transaction("DeAuthorized"))
        elif message.action == "StopTransaction" and tx is not None:
            del self.transactions[tx.ref]
            self.store.forget_finished(self.id)

    async def shut_down(self, timeout: float) -> None:
        """End a running transaction and give the outbox ``timeout`` wall seconds to deliver it,
        so that a stopped site leaves no session open in the central system."""
        if self.connector.phase == "Charging":
            log.info("shutting down: stopping the transaction")
            await self.stop_transaction("Other")
        if self.connected:
            try:
                await asyncio.wait_for(self.outbox.empty(), timeout)
            except TimeoutError:
                log.warning("stopped with %d message(s) undelivered; they are kept for the "
                            "next start", len(self.outbox))

    # -- meter values ---------------------------------------------------------------------------

    def sample(self) -> None:
        """One MeterValues from the latest 0x300 frame (none while the charger is silent)."""
        tx = self.transaction
        if self.meter.amps is None or self.charger.silent or (tx is None and not self.connected):
            return
        now = self.clock.now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as OCPP carries it
        values = metering.readings(self.meter.amps, self.voltage, self.meter.energy_wh)
        payload = {"connector_id": CONNECTOR_ID, "meter_value": [metering.meter_value(now, values)]}
        register = {"energy_wh": self.meter.energy_wh, "energy_at": ocpp_time(now)}
        if tx is None:
            self.store.put(self.id, **register)
            self.outbox.put(Message("MeterValues", payload))
        else:
            stored_id = self.store.queue(self.id, "MeterValues", payload, tx.ref, **register)
            self.outbox.put(Message("MeterValues", payload, tx.ref, stored_id))
        if self.writer is not None:  # after the store: what is recorded was queued for sure
            for reading in values:
                self.writer.metric(reading.name, round(reading.value, 1), reading.unit, self.id,
                                   tx.transaction_id if tx else None, now)
