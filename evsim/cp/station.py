"""The charge point: one connector, its transactions and its meter, and the feature profiles
around them (each in a module of its own).

OCPP requests arrive here from the endpoint, CAN frames from the bridge, a person's actions from
:mod:`evsim.cp.local`; what the central system must hear leaves through the outbox. Every
transaction change is stored before it is acted on (see :mod:`evsim.cp.store`), so a restart
resumes where the last run stopped.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from evsim.canbus import frames
from evsim.clock import Clock
from evsim.constants import CHARGER_PERIOD_S, CONNECTOR_ID, SILENT_PERIODS
from evsim.cp import metering
from evsim.cp.authorization import Authorization
from evsim.cp.availability import Availability
from evsim.cp.bridge import ChargerBridge, Link
from evsim.cp.certificates import Certificates
from evsim.cp.config import Configuration
from evsim.cp.connector import Connector
from evsim.cp.diagnostics import Diagnostics
from evsim.cp.firmware import Firmware
from evsim.cp.local import LocalActions
from evsim.cp.meter import EnergyMeter
from evsim.cp.outbox import Message, Outbox
from evsim.cp.recording import Recorder, records_traffic
from evsim.cp.reservations import Reservations
from evsim.cp.smart_charging import SmartCharging
from evsim.cp.store import StateStore
from evsim.cp.transactions import CRASH_STOP_REASON, Transaction, TransactionRules
from evsim.cp.triggers import Triggers
from evsim.faults.kinds import FaultSpec
from evsim.faults.labels import OnLabel
from evsim.faults.meter import MeterFaults, Reading, StatusFaults, charge_point_faults
from evsim.ocpp16.endpoint import one_line
from evsim.ocpp16.profiles import ProfileStore
from evsim.timefmt import ocpp_time

log = logging.getLogger("cp")

__all__ = ["CRASH_STOP_REASON", "Station", "Transaction"]
VENDOR, MODEL = "EVChargingSim", "SimCP-1"
#: The errorCode and info of a Faulted that only an injected ``status-flap`` shows.
FLAP_ERROR: tuple[str, str | None] = ("OtherError", None)
FIRMWARE_VERSION = "1.0.0"


class Station(TransactionRules):
    """The charge point's state and the rules that change it. ``files`` is the folder for its
    key and certificates (None: they stay in memory)."""

    def __init__(self, charge_point_id: str, store: StateStore, clock: Clock, *,
                 writer: Recorder | None = None, link: Link | None = None,
                 voltage: float = 230.0, default_limit: float = 32.0,
                 charger_period: float = CHARGER_PERIOD_S, files: Path | None = None) -> None:
        self.id = charge_point_id
        self.store = store
        self.clock = clock
        self.writer = writer
        self.records_traffic = records_traffic(writer)
        self.voltage = voltage
        settings = store.settings(charge_point_id)
        self.config = Configuration(settings.get("configuration"))
        self.firmware_version = settings.get("firmware_version", FIRMWARE_VERSION)
        self.profiles = ProfileStore(default_limit, voltage=voltage, speed=clock.speed)
        self.meter = EnergyMeter(voltage, energy_wh=settings.get("energy_wh", 0.0),
                                 max_gap_s=clock.silence(SILENT_PERIODS * charger_period))
        self.connector = Connector()
        self.charger = ChargerBridge(self.meter, clock, charger_period, self.event, link)
        self.transactions: dict[int, Transaction] = {}
        self.transaction: Transaction | None = None
        self.outbox = Outbox(charge_point_id, store, self.config, clock, self._transaction_id,
                             self._answered, self.event)
        self.connected = False
        self.booted = False
        self.starting = False  # a start was accepted and the transaction is not yet open
        self.ev_max_current: float | None = None
        self.restart = asyncio.Event()  # set: close the connection and boot again
        self.hard_reboot = False
        self._tasks: set[asyncio.Task] = set()
        self.auth = Authorization(self, settings)
        self.reservations = Reservations(self, settings.get("reservation"))
        self.availability = Availability(self, settings.get("availability"))
        self.smart = SmartCharging(self, self.profiles, settings.get("charging_profiles"))
        self.triggers = Triggers(self)
        self.firmware = Firmware(self)
        self.diagnostics = Diagnostics(self)
        self.certificates = Certificates(self, settings, files)
        self.local = LocalActions(self)
        self.meter_faults: MeterFaults | None = None  # --inject: see inject()
        self.status_faults: StatusFaults | None = None
        self.register_offset_wh = 0.0  # what the injected faults moved the sent register by

    def event(self, event_type: str, description: str, data: Any = None) -> None:
        if self.writer is not None:
            self.writer.event(event_type, description, data, self.id)

    def spawn(self, coroutine: Coroutine) -> asyncio.Task:
        """Run ``coroutine`` in the background; if it dies, one log line says which and why."""
        task = asyncio.create_task(coroutine, name=getattr(coroutine, "__qualname__", None))
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed: %s", task.get_name(), one_line(task.exception()))

    def send(self, action: str, **payload: Any) -> None:
        """Queue a message that is only worth sending now (dropped when offline)."""
        if self.connected:
            self.outbox.put(Message(action, payload))

    def security_event(self, event_type: str, tech_info: str | None = None) -> None:
        """A SecurityEventNotification, kept until delivered (see Diagnostics.security_event)."""
        self.diagnostics.security_event(event_type, tech_info)

    def send_boot_notification(self) -> None:
        self.send("BootNotification", **self.boot_payload())

    def boot_payload(self) -> dict[str, str]:
        return {"charge_point_model": MODEL, "charge_point_vendor": VENDOR,
                "firmware_version": self.firmware_version}

    # -- injected faults (--inject) -------------------------------------------------------------

    def inject(self, specs: Sequence[FaultSpec], on_label: OnLabel, seed: int | None) -> None:
        """Have the charge point misreport as ``specs`` say (meter, clock and status faults);
        each fault hands its ground truth to ``on_label``. Without a call nothing changes."""
        self.meter_faults, self.status_faults = charge_point_faults(
            specs, charge_point_id=self.id, on_label=on_label, seed=seed,
            speed=self.clock.speed, source="cp")

    def close_faults(self) -> None:
        """Shutdown: the injected faults hand over the labels still open."""
        for faults in (self.meter_faults, self.status_faults):
            if faults is not None:
                faults.close(self.clock.sim(), self.clock.now())

    def sent_time(self, now: datetime | None = None) -> datetime:
        """A timestamp the charge point sends, as its clock (skewed by a fault) has it."""
        now = now or self.clock.now()
        if self.meter_faults is None:
            return now
        return self.meter_faults.timestamp(self.clock.sim(), now)

    def reading(self, now: datetime) -> Reading | None:
        """What to send for a sample of the meter taken ``now``: its timestamp, current and
        register, as the injected faults alter them; None: send nothing (a meter gap)."""
        amps, energy_wh = self.meter.amps or 0.0, self.meter.energy_wh
        if self.meter_faults is None:
            return Reading(now, amps, energy_wh)
        sent = self.meter_faults.apply(self.clock.sim(), now, amps, energy_wh,
                                       self.transaction is not None)
        if sent is not None:
            self.register_offset_wh = sent.energy_wh - energy_wh
        return sent

    @property
    def register_wh(self) -> int:
        """The register as meterStart/meterStop carry it (whole Wh), moved as the MeterValues'
        is by an injected fault: a real meter carries on from where it was."""
        if not self.register_offset_wh:
            return self.meter.register_wh
        return int(max(0.0, self.meter.energy_wh + self.register_offset_wh))

    # -- status ---------------------------------------------------------------------------------

    def shown_status(self) -> str:
        """The connector's status as the charge point reports it (an injected flap alters it)."""
        status = self.connector.status
        if self.status_faults is None:
            return status
        return self.status_faults.status(self.clock.sim(), self.clock.now(), status)

    def report_status(self, always: bool = False) -> None:
        """A StatusNotification when the status changed (or ``always``), if connected."""
        shown = self.shown_status()
        status = self.connector.unreported(shown)
        if always:
            status = shown
            self.availability.report_zero()
        if status is None or not self.connected:
            return
        error, info = self.connector.error
        if status == "Faulted" and error == "NoError":
            error, info = FLAP_ERROR
        self.event("STATUS", f"connector {CONNECTOR_ID} {status}", {"error_code": error})
        self.send("StatusNotification", connector_id=CONNECTOR_ID, error_code=error,
                  status=status, info=info, timestamp=ocpp_time(self.sent_time()))

    # -- CAN and the limit ----------------------------------------------------------------------

    def on_can_frame(self, frame: frames.Frame) -> None:
        if self.charger.on_frame(frame):  # back after silence: it may have restarted
            self.connector.silent = False
            self.report_status()
            self.on_bus_up()

    def on_bus_up(self) -> None:
        self.spawn(self.charger.resync(self.limit_in_force(), self.transaction is not None))

    def limit_in_force(self, scheduled: float | None = None) -> float:
        """The composite schedule's limit (``scheduled``: worked out already, see
        :meth:`scheduled_limit`), capped by the EV's own (0 for a deauthorized one)."""
        tx = self.transaction
        if tx is not None and tx.deauthorized:
            return 0.0
        limit = min(self.scheduled_limit() if scheduled is None else scheduled, frames.MAX_AMPS)
        return min(limit, self.ev_max_current) if self.ev_max_current is not None else limit

    def scheduled_limit(self, now: datetime | None = None) -> float:
        """What the charging profiles put in force at ``now`` (default: now)."""
        tx = self.transaction
        return self.profiles.limit(now or self.clock.now(), tx.started_at if tx else None)

    def update_suspension(self, scheduled: float | None = None) -> None:
        tx = self.transaction
        self.connector.suspended_evse = tx is not None and (
            tx.deauthorized or (self.scheduled_limit() if scheduled is None else scheduled) <= 0)
        self.connector.suspended_ev = tx is not None and (
            not self.connector.plugged or self.ev_max_current == 0)
        self.report_status()

    async def limit_changed(self) -> None:
        self.update_suspension()
        await self.charger.apply_limit(self.limit_in_force(), force=True)

    async def watch_charger(self) -> None:
        """Is the charger silent, did a reservation expire, and did the limit in force change
        (a schedule moved to its next period)? No limit while the bus is down: the bus coming
        up re-syncs."""
        if self.charger.went_silent():
            self.connector.silent = True
            self.report_status()
        now = self.clock.now()
        self.reservations.expire(now)
        scheduled = self.scheduled_limit(now)  # once a look: a fleet looks 2,000 times a second
        self.update_suspension(scheduled)
        if self.charger.up:
            await self.charger.apply_limit(self.limit_in_force(scheduled))

    # -- configuration --------------------------------------------------------------------------

    def change_configuration(self, key: str, value: str) -> str:
        status = self.config.change(key, value)
        if status == "Accepted":
            self.store.put(self.id, configuration=self.config.values)
            if key in ("SecurityProfile", "AuthorizationKey"):
                self.security_event("ReconfigurationOfSecurityParameters", f"{key} changed")
        return status

    # -- reboot and shutdown --------------------------------------------------------------------

    def reboot(self, hard: bool = False) -> None:
        """Have the connection closed and the charge point boot again (Reset, a firmware
        install); the connection calls :meth:`rebooted` once it is closed."""
        self.hard_reboot = hard
        self.restart.set()

    def rebooted(self) -> None:
        """Back from a reboot: boot again; a hard one also forgets what RAM held."""
        self.restart.clear()
        self.booted = False
        self.connector.reported = None
        self.availability.rebooted()
        self.firmware.rebooted()
        if self.hard_reboot:
            self.local.forget()
            self.spawn(self.charger.resync(self.limit_in_force(), False))
        self.event("REBOOTED", f"{self.id} rebooted ({'hard' if self.hard_reboot else 'soft'})")

    async def shut_down(self, timeout: float) -> None:
        """End a running transaction and give the outbox ``timeout`` wall seconds to deliver it,
        so that a stopped site leaves no session open in the central system."""
        if self.transaction is not None:
            log.info("shutting down: stopping the transaction")
            await self.stop_transaction("Other")
        if self.connected:
            try:
                await asyncio.wait_for(self.outbox.empty(), timeout)
            except TimeoutError:
                log.warning("stopped with %d message(s) undelivered; they are kept for the "
                            "next start", len(self.outbox))

    def sample(self) -> None:
        """One periodic MeterValues (see :func:`metering.take_sample`)."""
        metering.take_sample(self)
