#!/usr/bin/env python3
"""The OCPP 1.6J charge point: one connector, bridged to the charger module over CAN.

Talks OCPP 1.6J to the central system (boot, heartbeat, status, transactions, smart charging,
meter values, configuration), drives the charger with CAN 0x200/0x201/0x210 and meters the
current it publishes on 0x300. Transaction messages survive a lost connection (OCPP 1.6 §3.7).
"""
from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional
from urllib.parse import quote

import can
import websockets
from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import (
    Action,
    AuthorizationStatus,
    ChargingProfileStatus,
    ClearChargingProfileStatus,
    ConfigurationStatus,
    DataTransferStatus,
    RegistrationStatus,
    RemoteStartStopStatus,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.uri import parse_uri

from evsim import cli
from evsim.bank import MemoryBankError, utc_now
from evsim.bank.writer import BankWriter
from evsim.canbus import bus as canbus
from evsim.canbus import frames
from evsim.cp.meter import EnergyMeter
from evsim.ocpp16 import endpoint as ocpp16
from evsim.ocpp16 import profiles as charging_profiles
from evsim.ocpp16.profiles import ProfileError, ProfileStore, iso

log = logging.getLogger("cp")

DEFAULT_URL = "ws://127.0.0.1:9000"
CONNECTOR = 1
SILENT_PERIODS = 3
RESPONSE_TIMEOUT = 10.0
VENDOR, MODEL = "EVChargingSim", "SimCP-1"


class Configuration:
    """The configuration keys this charge point supports (Get/ChangeConfiguration)."""

    WRITABLE = {"HeartbeatInterval": 60, "MeterValueSampleInterval": 1,
                "TransactionMessageAttempts": 3, "TransactionMessageRetryInterval": 10}
    READ_ONLY = {"NumberOfConnectors": "1", "AuthorizeRemoteTxRequests": "false",
                 "SupportedFeatureProfiles": "Core,SmartCharging",
                 "MeterValuesSampledData": "Current.Import,Voltage,Power.Active.Import,"
                                           "Energy.Active.Import.Register",
                 "ChargeProfileMaxStackLevel": str(charging_profiles.MAX_STACK_LEVEL),
                 "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
                 "ChargingScheduleMaxPeriods": str(charging_profiles.MAX_PERIODS),
                 "MaxChargingProfilesInstalled": str(charging_profiles.MAX_PROFILES)}
    #: Intervals may be 0: no heartbeat; for MeterValueSampleInterval, no sampled data (OCPP 1.6).
    MINIMUM = {"TransactionMessageAttempts": 1}
    #: A day at most: a longer sleep than asyncio can schedule would kill the task using it.
    MAXIMUM = {"HeartbeatInterval": 86400, "MeterValueSampleInterval": 86400,
               "TransactionMessageAttempts": 100, "TransactionMessageRetryInterval": 86400}

    def __init__(self) -> None:
        self.values = dict(self.WRITABLE)

    def __getitem__(self, key: str) -> int:
        return self.values[key]

    def get(self, keys: Optional[Sequence[str]] = None) -> tuple[list[dict], list[str]]:
        """(known keys as GetConfiguration.conf lists them, unknown keys)."""
        wanted = list(keys) if keys else [*self.values, *self.READ_ONLY]
        known, unknown = [], []
        for key in wanted:
            if key in self.values:
                known.append({"key": key, "readonly": False, "value": str(self.values[key])})
            elif key in self.READ_ONLY:
                known.append({"key": key, "readonly": True, "value": self.READ_ONLY[key]})
            else:
                unknown.append(key)
        return known, unknown

    def change(self, key: str, value: str) -> str:
        if key in self.READ_ONLY:
            return ConfigurationStatus.rejected
        if key not in self.values:
            return ConfigurationStatus.not_supported
        try:
            number = int(value)
        except ValueError:
            return ConfigurationStatus.rejected
        if not self.MINIMUM.get(key, 0) <= number <= self.MAXIMUM[key]:
            return ConfigurationStatus.rejected
        self.values[key] = number
        return ConfigurationStatus.accepted


class Backoff:
    """Reconnect delays: exponential, capped, with jitter so a fleet does not reconnect in step."""

    def __init__(self, base: float = 1.0, cap: float = 30.0,
                 rng: Callable[[], float] = random.random) -> None:
        self.base, self.cap, self.rng = base, cap, rng
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2 ** self.failures)
        self.failures += 1
        return delay * (0.5 + 0.5 * self.rng())

    def reset(self) -> None:
        self.failures = 0


@dataclass
class Transaction:
    id_tag: str
    meter_start: int
    started_at: datetime
    transaction_id: Optional[int] = None  # given by StartTransaction.conf


@dataclass
class Outgoing:
    """A CALL waiting its turn. ``build`` makes the request when it is sent, so a message queued
    offline carries the transaction id the central system gave in the meantime; None drops it."""

    build: Callable[[], Any]
    transactional: bool
    on_result: Optional[Callable[[Any], None]] = None
    attempts: int = 0


class CanLink:
    """The charge point's CAN node: a reader thread hands frames to the asyncio loop; frames are
    sent in order from one thread. A lost bus is reopened."""

    def __init__(self, config: dict, loop: asyncio.AbstractEventLoop,
                 on_frame: Callable[[frames.Frame], None], on_up: Callable[[], None]) -> None:
        self.config = config
        self._loop, self._on_frame, self._on_up = loop, on_frame, on_up
        self._bus: Optional[can.BusABC] = None
        self._stop = threading.Event()
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="can-send")
        self._reader = threading.Thread(target=self._read, name="can-read", daemon=True)

    def start(self) -> None:
        self._reader.start()

    @property
    def up(self) -> bool:
        return self._bus is not None

    async def send(self, msg: can.Message) -> bool:
        return await self._loop.run_in_executor(self._sender, self._send, msg)

    def _send(self, msg: can.Message) -> bool:
        bus = self._bus
        if bus is None:
            log.warning("CAN 0x%03X not sent: the bus is down", msg.arbitration_id)
            return False
        try:
            bus.send(msg)
            return True
        except canbus.BUS_ERRORS as exc:
            log.warning("CAN 0x%03X not sent: %s", msg.arbitration_id, exc)
            return False

    def _read(self) -> None:
        canbus.keep_open(self.config, self._session, self._stop)

    def _session(self, bus: can.BusABC) -> None:
        self._bus = bus
        self._loop.call_soon_threadsafe(self._on_up)
        try:
            while not self._stop.is_set():
                msg = bus.recv(0.2)
                if msg is not None:
                    self._dispatch(msg)
        finally:
            self._bus = None

    def _dispatch(self, msg: can.Message) -> None:
        frame = frames.decode_or_log(msg, log)
        if frame is not None and frame.arbitration_id == frames.MEASURED_CURRENT:
            self._loop.call_soon_threadsafe(self._on_frame, frame)

    def close(self) -> None:
        self._stop.set()
        if self._reader.is_alive():
            self._reader.join(5)
        self._sender.shutdown(wait=True)


class Station:
    """The charge point: connector state, transaction, profiles, meter and the outbox of CALLs.

    ``clock`` gives monotonic wall seconds; simulated seconds are those times ``speed``.
    """

    def __init__(self, charge_point_id: str, writer: Optional[BankWriter] = None, *,
                 speed: float = 1.0, voltage: float = 230.0, default_limit: float = 32.0,
                 charger_period: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.id = charge_point_id
        self.writer = writer
        self.speed = speed
        self.voltage = voltage
        self.charger_period = charger_period
        self.clock = clock
        self.config = Configuration()
        self.profiles = ProfileStore(default_limit, voltage=voltage, speed=speed)
        silent_s = SILENT_PERIODS * charger_period
        self.meter = EnergyMeter(voltage, max_gap_s=silent_s)
        self.can: Optional[CanLink] = None
        self.transaction: Optional[Transaction] = None
        self.phase = "Available"
        self.faulted = False
        self.reported_status: Optional[str] = None
        self.last_frame_at = clock()
        self.sent_limit: Optional[float] = None
        self._limit_lock = asyncio.Lock()
        self.outbox: deque[Outgoing] = deque()
        self._outbox_changed = asyncio.Event()
        self.booted = False
        self.connected = False
        self._tasks: set[asyncio.Task] = set()

    # -- recording ---------------------------------------------------------------------------

    def event(self, event_type: str, description: str, data: Any = None) -> None:
        if self.writer is not None:
            self.writer.event(event_type, description, data, self.id)

    # -- status ------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        return "Faulted" if self.faulted else self.phase

    def _report_status(self) -> None:
        status = self.status
        if status == self.reported_status:
            return
        self.reported_status = status
        if self.connected:
            self._enqueue_status()

    def _enqueue_status(self) -> None:
        status = self.status
        error, info = ("OtherError", "charger silent: no 0x300 frame for "
                       f"{SILENT_PERIODS} periods") if self.faulted else ("NoError", None)
        self.enqueue(Outgoing(lambda: call.StatusNotification(
            connector_id=CONNECTOR, error_code=error, status=status, info=info,
            timestamp=iso(utc_now())), transactional=False))

    # -- CAN ---------------------------------------------------------------------------------

    def on_can_frame(self, frame: frames.Frame) -> None:
        self.meter.update(self.clock() * self.speed, frame.amps)
        self.last_frame_at = self.clock()
        if self.faulted:
            self.faulted = False
            log.info("charger publishing again")
            self._report_status()

    def check_silence(self) -> None:
        silent_for = (self.clock() - self.last_frame_at) * self.speed
        if not self.faulted and silent_for > SILENT_PERIODS * self.charger_period:
            self.faulted = True
            log.warning("charger silent for %.1f s (simulated): Faulted", silent_for)
            self._report_status()

    def on_bus_up(self) -> None:
        """A (re)opened bus: tell the charger the limit in force, and to charge if it should."""
        self.sent_limit = None
        self._spawn(self._resync_charger())

    async def _resync_charger(self) -> None:
        await self.apply_limit()
        if self.phase == "Charging":
            await self.send_can(frames.start())

    async def send_can(self, msg: can.Message) -> bool:
        if self.can is None or not await self.can.send(msg):
            return False
        frame = frames.decode(msg)
        amps = f" {frame.amps:.1f} A" if frame.amps is not None else ""
        log.info("CAN sent 0x%03X %s%s", msg.arbitration_id, frame.name, amps)
        self.event("CAN_FRAME", f"cp->charger 0x{msg.arbitration_id:03X} {frame.name}{amps}",
                   {"id": f"0x{msg.arbitration_id:03X}", "name": frame.name, "amps": frame.amps})
        return True

    def limit_in_force(self) -> float:
        start = self.transaction.started_at if self.transaction else None
        return min(self.profiles.limit(utc_now(), start), frames.MAX_AMPS)

    async def apply_limit(self, force: bool = False) -> None:
        """Send 0x210 when the limit in force changed (or always, with ``force``); one at a
        time, so two callers do not both send the same change."""
        async with self._limit_lock:
            limit = self.limit_in_force()
            if force or limit != self.sent_limit:
                if await self.send_can(frames.set_limit(limit)):
                    self.sent_limit = limit

    # -- OCPP requests from the central system -----------------------------------------------

    def remote_start(self, id_tag: str, connector_id: Optional[int],
                     charging_profile: Optional[dict]) -> str:
        if connector_id not in (None, CONNECTOR) or self.status != "Available":
            return RemoteStartStopStatus.rejected
        profile = None
        if charging_profile is not None:
            try:
                profile = charging_profiles.parse(charging_profile)
            except ProfileError as exc:
                log.warning("RemoteStartTransaction rejected: %s", exc)
                return RemoteStartStopStatus.rejected
            if profile.purpose != "TxProfile":
                log.warning("RemoteStartTransaction rejected: its profile is not a TxProfile")
                return RemoteStartStopStatus.rejected
        self.phase = "Preparing"
        self._report_status()
        self._spawn(self._start_transaction(id_tag, profile))
        return RemoteStartStopStatus.accepted

    def remote_stop(self, transaction_id: int) -> str:
        if (self.phase != "Charging" or self.transaction is None
                or self.transaction.transaction_id != transaction_id):
            return RemoteStartStopStatus.rejected
        self._spawn(self._stop_transaction("Remote"))
        return RemoteStartStopStatus.accepted

    def local_stop(self) -> None:
        """The stop button on the charge point."""
        if self.phase == "Charging":
            log.info("local stop requested")
            self._spawn(self._stop_transaction("Local"))

    async def set_charging_profile(self, connector_id: int, profile_data: dict) -> str:
        running = self.transaction is not None
        try:
            profile = charging_profiles.parse(profile_data)
            self.profiles.install(connector_id, profile,
                                  self.transaction.transaction_id if running else None, running)
        except ProfileError as exc:
            log.warning("SetChargingProfile rejected: %s", exc)
            return ChargingProfileStatus.rejected
        await self.apply_limit(force=True)
        return ChargingProfileStatus.accepted

    async def clear_charging_profile(self, **criteria: Any) -> str:
        removed = self.profiles.clear(criteria.get("id"), criteria.get("connector_id"),
                                      criteria.get("charging_profile_purpose"),
                                      criteria.get("stack_level"))
        await self.apply_limit(force=True)
        return ClearChargingProfileStatus.accepted if removed else ClearChargingProfileStatus.unknown

    # -- transactions ------------------------------------------------------------------------

    async def _start_transaction(self, id_tag: str, profile: Any) -> None:
        tx = Transaction(id_tag, self.meter.register_wh, utc_now())
        self.transaction = tx
        if profile is not None:
            self.profiles.install(CONNECTOR, profile, None, transaction_running=True)
        await self.apply_limit()
        await self.send_can(frames.start())
        self.enqueue(Outgoing(lambda: call.StartTransaction(
            connector_id=CONNECTOR, id_tag=id_tag, meter_start=tx.meter_start,
            timestamp=iso(tx.started_at)), transactional=True,
            on_result=lambda result: self._started(tx, result)))
        self.phase = "Charging"
        self._report_status()

    def _started(self, tx: Transaction, result: call_result.StartTransaction) -> None:
        tx.transaction_id = result.transaction_id
        status = (result.id_tag_info or {}).get("status")
        log.info("transaction %s started, idTag %s", tx.transaction_id, status)
        if status != AuthorizationStatus.accepted and self.transaction is tx:
            self._spawn(self._stop_transaction("DeAuthorized"))

    async def _stop_transaction(self, reason: str) -> None:
        tx = self.transaction
        if tx is None or self.phase != "Charging":
            return
        self.phase = "Finishing"
        await self.send_can(frames.stop())
        self._report_status()
        meter_stop, stopped_at = self.meter.register_wh, utc_now()

        def build() -> Optional[call.StopTransaction]:
            if tx.transaction_id is None:
                return None
            return call.StopTransaction(meter_stop=meter_stop, timestamp=iso(stopped_at),
                                        transaction_id=tx.transaction_id, reason=reason,
                                        id_tag=tx.id_tag)

        self.enqueue(Outgoing(build, transactional=True))
        self.transaction = None
        self.profiles.end_transaction()
        await self.apply_limit()
        self.phase = "Available"
        self._report_status()

    async def shut_down(self, timeout: float) -> None:
        """End a running transaction and give the outbox ``timeout`` wall seconds to deliver it,
        so that a stopped site leaves no session open in the central system."""
        if self.phase == "Charging":
            log.info("shutting down: stopping the transaction")
            await self._stop_transaction("Other")
        deadline = asyncio.get_running_loop().time() + timeout
        while self.outbox and self.connected and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)

    # -- meter values ------------------------------------------------------------------------

    def sample(self) -> None:
        """One MeterValues from the latest 0x300 frame (none while the charger is silent)."""
        if self.meter.amps is None or self.faulted:
            return
        tx = self.transaction
        if tx is None and not self.connected:
            return
        now = utc_now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as OCPP carries it
        amps, energy = self.meter.amps, self.meter.energy_wh
        readings = (("Current.Import", amps, "A", "current"),
                    ("Voltage", self.voltage, "V", "voltage"),
                    ("Power.Active.Import", amps * self.voltage, "W", "power"),
                    ("Energy.Active.Import.Register", energy, "Wh", "energy"))
        sampled = [{"value": f"{value:.1f}", "context": "Sample.Periodic", "measurand": measurand,
                    "unit": unit} for measurand, value, unit, _ in readings]
        if self.writer is not None:
            for _, value, unit, name in readings:
                self.writer.metric(name, round(value, 1), unit, self.id,
                                   tx.transaction_id if tx else None, now)
        meter_value = [{"timestamp": iso(now), "sampledValue": sampled}]

        def build() -> Optional[call.MeterValues]:
            if tx is not None and tx.transaction_id is None:
                return None
            return call.MeterValues(connector_id=CONNECTOR, meter_value=meter_value,
                                    transaction_id=tx.transaction_id if tx else None)

        self.enqueue(Outgoing(build, transactional=tx is not None))

    # -- the outbox --------------------------------------------------------------------------

    def enqueue(self, item: Outgoing) -> None:
        self.outbox.append(item)
        self._outbox_changed.set()

    async def deliver(self, endpoint: CpEndpoint) -> None:
        """Send the outbox in order. A CALLERROR or no answer to a transaction message is retried
        after TransactionMessageRetryInterval x attempts, up to TransactionMessageAttempts
        (OCPP 1.6 §3.7.1). A lost connection raises and keeps the message at the head."""
        while True:
            while not self.outbox:
                self._outbox_changed.clear()
                await self._outbox_changed.wait()
            item = self.outbox[0]
            request = item.build()
            if request is None:
                self.outbox.popleft()
                continue
            try:
                result = await endpoint.call(request, suppress=False)
            except (TimeoutError, OCPPError) as exc:
                item.attempts += 1
                name = type(request).__name__
                if item.transactional and item.attempts < self.config["TransactionMessageAttempts"]:
                    delay = self.config["TransactionMessageRetryInterval"] * item.attempts
                    log.warning("%s failed (%s); attempt %d in %g s", name,
                                canbus.error_text(exc), item.attempts + 1, delay)
                    await asyncio.sleep(delay / self.speed)
                    continue
                log.error("%s failed (%s); dropped after %d attempt(s)", name,
                          canbus.error_text(exc), item.attempts)
                self.outbox.popleft()
                continue
            self.outbox.popleft()
            if item.on_result is not None:
                item.on_result(result)

    def went_offline(self) -> None:
        """Keep the transaction messages; the rest is stale once the connection is back."""
        self.connected = False
        self.outbox = deque(item for item in self.outbox if item.transactional)

    # -- the connection ----------------------------------------------------------------------

    async def serve_connection(self, connection: ClientConnection) -> None:
        endpoint = CpEndpoint(self.id, connection, self)
        reader = asyncio.create_task(endpoint.start())
        online = asyncio.create_task(self._online(endpoint))
        try:
            done, _ = await asyncio.wait({reader, online}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (reader, online):
                task.cancel()
            await asyncio.gather(reader, online, return_exceptions=True)
            self.went_offline()

    async def _online(self, endpoint: CpEndpoint) -> None:
        if not self.booted:
            await self._boot(endpoint)
        self.connected = True
        self.reported_status = self.status
        self._enqueue_status()
        await asyncio.gather(self._heartbeat(endpoint), self.deliver(endpoint))

    async def _boot(self, endpoint: CpEndpoint) -> None:
        while True:
            try:
                result = await endpoint.call(call.BootNotification(
                    charge_point_model=MODEL, charge_point_vendor=VENDOR), suppress=False)
            except (TimeoutError, OCPPError) as exc:
                log.warning("BootNotification failed (%s)", canbus.error_text(exc))
                result = None
            interval = min(result.interval, Configuration.MAXIMUM["HeartbeatInterval"]) \
                if result is not None else 0
            if interval > 0:
                self.config.values["HeartbeatInterval"] = interval
            if result is not None and result.status == RegistrationStatus.accepted:
                self.booted = True
                return
            retry = interval if interval > 0 else 10
            log.warning("not accepted; BootNotification again in %d s", retry)
            await asyncio.sleep(retry / self.speed)

    async def _heartbeat(self, endpoint: CpEndpoint) -> None:
        while True:
            interval = self.config["HeartbeatInterval"]
            await asyncio.sleep((interval or 60) / self.speed)
            if interval:
                try:
                    await endpoint.call(call.Heartbeat(), suppress=False)
                except (TimeoutError, OCPPError) as exc:
                    log.warning("Heartbeat failed (%s)", canbus.error_text(exc))

    # -- periodic work -----------------------------------------------------------------------

    async def run_meter(self) -> None:
        """MeterValues every MeterValueSampleInterval; while it is 0 (no sampled data), look
        again every second whether it changed."""
        while True:
            await asyncio.sleep((self.config["MeterValueSampleInterval"] or 1) / self.speed)
            if self.config["MeterValueSampleInterval"]:
                self.sample()

    async def run_watchdog(self) -> None:
        """Twice a charger period: is the charger silent, and did the limit in force change (a
        schedule moved to its next period)? Not while the bus is down: on_bus_up re-syncs."""
        while True:
            await asyncio.sleep(self.charger_period / self.speed / 2)
            self.check_silence()
            if self.can is not None and self.can.up:
                await self.apply_limit()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class CpEndpoint(ocpp16.Endpoint):
    """The charge point's end of the connection: OCPP requests go to the :class:`Station`."""

    side = "cp"

    def __init__(self, charge_point_id: str, connection: Any, station: Station) -> None:
        super().__init__(charge_point_id, connection, response_timeout=RESPONSE_TIMEOUT)
        self.station = station

    def on_frame(self, record: dict[str, Any]) -> None:
        arrow = "csms->cp" if record["direction"] == "received" else "cp->csms"
        description = f"{arrow} {record['message_type']} {record['action'] or '?'}"
        log.info("%s %s", description, ocpp16.compact(record["payload"]))
        self.station.event("OCPP_MESSAGE", description, record)

    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag: str, connector_id: Optional[int] = None,
                        charging_profile: Optional[dict] = None,
                        **kwargs: Any) -> call_result.RemoteStartTransaction:
        return call_result.RemoteStartTransaction(
            status=self.station.remote_start(id_tag, connector_id, charging_profile))

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id: int) -> call_result.RemoteStopTransaction:
        return call_result.RemoteStopTransaction(status=self.station.remote_stop(transaction_id))

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict
                                      ) -> call_result.SetChargingProfile:
        status = await self.station.set_charging_profile(connector_id, cs_charging_profiles)
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(self, **criteria: Any) -> call_result.ClearChargingProfile:
        return call_result.ClearChargingProfile(
            status=await self.station.clear_charging_profile(**criteria))

    @on(Action.get_configuration)
    def on_get_configuration(self, key: Optional[list] = None) -> call_result.GetConfiguration:
        known, unknown = self.station.config.get(key)
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> call_result.ChangeConfiguration:
        return call_result.ChangeConfiguration(status=self.station.config.change(key, value))

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **kwargs: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)


def endpoint_url(url: str, charge_point_id: str) -> str:
    """The URL this charge point connects to: ``url`` with the id as its last path segment.
    ValueError, in one line, for an id or a URL that cannot make one."""
    if not charge_point_id:
        raise ValueError("--id must not be empty")
    target = f"{url.rstrip('/')}/{quote(charge_point_id, safe='')}"
    try:
        parse_uri(target)
    except websockets.InvalidURI as exc:
        reason = exc.msg
    except ValueError as exc:
        reason = str(exc)
    else:
        return target
    raise ValueError(f"--url must be a ws:// or wss:// URL with a host, got {url!r} ({reason})")


async def keep_connected(station: Station, target: str) -> None:
    """Connect to ``target`` (see :func:`endpoint_url`), serve, and reconnect with exponential
    backoff (divided by --speed), forever."""
    backoff = Backoff()
    failures = 0
    while True:
        try:
            async with connect(target, subprotocols=[ocpp16.SUBPROTOCOL], open_timeout=10,
                               compression=None) as connection:
                if connection.subprotocol != ocpp16.SUBPROTOCOL:
                    raise websockets.InvalidHandshake("the server did not agree on ocpp1.6")
                log.info("connected to %s", target)
                station.event("CONNECTED", f"{station.id} connected to {target}")
                backoff.reset()
                failures = 0
                try:
                    await station.serve_connection(connection)
                finally:
                    station.event("DISCONNECTED", f"{station.id} disconnected from {target}")
        except (TimeoutError, OSError, websockets.InvalidHandshake, websockets.ConnectionClosed) as exc:
            failures += 1
            delay = backoff.next() / station.speed
            level = logging.WARNING if failures == 1 else logging.DEBUG
            log.log(level, "connection to %s %s (%s); retrying in %.2f s", target,
                    "lost" if station.booted else "failed", canbus.error_text(exc), delay)
            await asyncio.sleep(delay)
            continue
        await asyncio.sleep(backoff.next() / station.speed)


async def amain(args: Any, supervisor: cli.Supervisor) -> None:
    try:
        target = endpoint_url(args.url, args.id)
    except ValueError as exc:
        raise cli.UsageError(exc) from None
    config = cli.can_config(args)
    try:
        writer = BankWriter(args.db, "cp")
    except (MemoryBankError, OSError) as exc:
        raise cli.SimError(f"MemoryBank: {exc}") from None
    loop = asyncio.get_running_loop()
    station = Station(args.id, writer, speed=args.speed, voltage=args.voltage,
                      default_limit=args.default_limit, charger_period=args.charger_period)
    station.can = CanLink(config, loop, station.on_can_frame, station.on_bus_up)
    loop.add_signal_handler(signal.SIGUSR1, station.local_stop)
    writer.event("PROCESS_START", f"cp {args.id} started", {"url": args.url, "speed": args.speed,
                                                            "can": canbus.describe(config)},
                 args.id)
    log.info("charge point %s -> %s, CAN %s, speed %g", args.id, args.url,
             canbus.describe(config), args.speed)
    station.can.start()
    supervisor.start(keep_connected(station, target), "connection")
    supervisor.start(station.run_meter(), "meter")
    supervisor.start(station.run_watchdog(), "watchdog")
    try:
        await supervisor.stop.wait()
        await station.shut_down(timeout=3.0)
    finally:
        await supervisor.cancel()
        await loop.run_in_executor(None, station.can.close)
        writer.event("PROCESS_STOP", f"cp {args.id} stopped", None, args.id)
        writer.close()


def build_parser():
    parser = cli.make_parser("cp.py", __doc__.splitlines()[0], can_bus=True)
    parser.add_argument("--url", default=DEFAULT_URL,
                        help=f"central system URL; the id is appended (default: {DEFAULT_URL})")
    parser.add_argument("--id", default="CP_1", help="charge point id (default: CP_1)")
    parser.add_argument("--voltage", type=cli.positive_float, default=230.0, metavar="V",
                        help="nominal voltage for power, energy and W limits (default: 230)")
    parser.add_argument("--default-limit", type=cli.positive_float, default=32.0, metavar="A",
                        help="current limit without a charging profile (default: 32)")
    parser.add_argument("--charger-period", type=cli.positive_float, default=1.0, metavar="S",
                        help="the charger's 0x300 period before --speed; silent for 3 periods "
                             "means Faulted (default: 1.0)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(lambda args: cli.run_async(amain, args), build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
