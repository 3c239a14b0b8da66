#!/usr/bin/env python3
"""The OCPP 1.6J central system: serves charge points, drives the scenario, records everything.

Serves ws://HOST:PORT/<charge_point_id>, answers the charge point's messages, drives the chosen
scenario on every accepted charge point, analyses the Current.Import of every MeterValues for a
fluctuation, and records messages, metrics, sessions and anomalies in the MemoryBank.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Optional
from urllib.parse import unquote

import websockets
from ocpp.exceptions import OCPPError
from ocpp.routing import after, on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action, AuthorizationStatus, DataTransferStatus, RegistrationStatus
from websockets.asyncio.server import ServerConnection, serve

from evsim import cli
from evsim.bank import MemoryBank, MemoryBankError, utc_now
from evsim.bank.writer import BankWriter
from evsim.detection import fluctuation as detector
from evsim.ocpp16 import endpoint as ocpp16
from evsim.ocpp16 import profiles as charging_profiles

log = logging.getLogger("csms")

DEFAULT_PORT = 9000
SCENARIOS = ("fluctuation", "normal", "none")
ID_TAG = "SIMULATOR"
PROFILE_ID = 1
NORMAL_LIMIT_A = 32.0
CONNECTOR = 1
RESPONSE_TIMEOUT = 10.0
#: An Absolute profile starts this far back, so a charge point whose clock is a little behind
#: already has it in force.
CLOCK_MARGIN = timedelta(minutes=1)
METRICS = {"Current.Import": ("current", "A"), "Voltage": ("voltage", "V"),
           "Power.Active.Import": ("power", "W"), "Energy.Active.Import.Register": ("energy", "Wh")}
KILO_UNITS = {"kW": "W", "kWh": "Wh"}


# -- the scenario, as data ------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One scenario step: ``action`` (set_limit, remote_start, remote_stop), then wait ``wait_s``
    simulated seconds (None: until the scenario is stopped)."""

    action: str
    amps: Optional[float]
    wait_s: Optional[float]


#: The seed's cycle: limit 0 A, limit 100 A, start, stop; 8 simulated seconds.
FLUCTUATION_CYCLE = (Step("set_limit", 0.0, 2), Step("set_limit", 100.0, 1),
                     Step("remote_start", None, 2), Step("remote_stop", None, 3))
CYCLE_SECONDS = sum(step.wait_s for step in FLUCTUATION_CYCLE)


def scenario_steps(scenario: str, cycles: int) -> Iterator[Step]:
    """The steps of a scenario; ``cycles`` 0 means forever.

    ``normal`` is one transaction at a steady 32 A that lasts as long as ``cycles`` fluctuation
    cycles would (forever for 0), so the control case runs as long as the anomalous one.
    """
    if scenario == "fluctuation":
        rounds = itertools.count() if cycles == 0 else range(cycles)
        for _ in rounds:
            yield from FLUCTUATION_CYCLE
    elif scenario == "normal":
        yield Step("remote_start", NORMAL_LIMIT_A, CYCLE_SECONDS * cycles if cycles else None)
        if cycles:
            yield Step("remote_stop", None, 0)
    elif scenario != "none":
        raise ValueError(f"unknown scenario {scenario!r}")


# -- analysis of the current ----------------------------------------------------------------------

class CurrentAnalyser:
    """Feeds one charge point's Current.Import samples to the detector and records what it finds.

    ``detector`` is anything with ``update(t, amps)`` and ``close(t)`` returning a detection or
    None (see detector.FluctuationDetector); without one, the samples are only counted.
    """

    def __init__(self, charge_point_id: str, writer: Optional[BankWriter],
                 fluctuation_detector: Any = None) -> None:
        self.charge_point_id = charge_point_id
        self.writer = writer
        self.detector = fluctuation_detector
        self.samples = 0
        self.detections: list[Any] = []
        self._last_t: Optional[float] = None
        self._anomaly_id: Optional[int] = None

    def update(self, t: float, amps: float, transaction_id: Optional[int] = None) -> Any:
        """One sample at simulated time ``t``; returns the detection it caused, if any."""
        if self._last_t is not None and t < self._last_t:
            return None
        self._last_t = t
        self.samples += 1
        if self.detector is None:
            return None
        return self._record(self.detector.update(t, amps), transaction_id)

    def close(self) -> Any:
        if self.detector is None or self._last_t is None:
            return None
        return self._record(self.detector.close(self._last_t), None)

    def _record(self, detection: Any, transaction_id: Optional[int]) -> Any:
        if detection is None:
            return None
        self.detections.append(detection)
        log.warning("%s: fluctuation %s: %s", self.charge_point_id, detection.kind,
                    detection.description)
        if self.writer is not None:
            self.writer.call(lambda bank: self._store(bank, detection, transaction_id))
        return detection

    def _store(self, bank: Any, detection: Any, transaction_id: Optional[int]) -> None:
        """Runs in the writer thread, in order, so the anomaly id is there for what follows.

        The episode is learned as a pattern when it ends, with its final figures; until then
        the anomaly names the known pattern it looks like (None: a new one).
        """
        known = detector.match_pattern(bank.get_patterns(), detection)
        ended = detection.kind == "ended"
        if ended:
            name, parameters, confidence = detector.merge_pattern(known, detection)
            bank.learn_pattern(name, parameters, confidence)
        else:
            name = known["name"] if known else None
        fields = dict(severity=detection.severity, description=detection.description,
                      pattern={"name": name, **detection.pattern_parameters()})
        if not ended:  # an episode that ended by itself has the figures of a calm window
            fields.update(current_value=detection.current_a, expected_value=detection.expected_a,
                          deviation=detection.deviation_a)
        if detection.kind == "started":
            self._anomaly_id = bank.record_anomaly(
                detector.ANOMALY_TYPE, charge_point_id=self.charge_point_id,
                transaction_id=transaction_id, **fields)
        elif self._anomaly_id is not None:
            bank.update_anomaly(self._anomaly_id, **fields)
        if ended:
            self._anomaly_id = None


def new_detector() -> detector.FluctuationDetector:
    return detector.FluctuationDetector(detector.DetectorConfig())


# -- the central system ---------------------------------------------------------------------------

@dataclass
class Station:
    """What the central system knows of one charge point, across its connections."""

    id: str
    analyser: CurrentAnalyser
    endpoint: Optional[CsmsEndpoint] = None
    transaction_id: Optional[int] = None
    finished: set[int] = field(default_factory=set)
    steps_done: int = 0
    scenario_task: Optional[asyncio.Task] = None


class CentralSystem:
    """The state of every charge point, the scenario they run and the recorder."""

    def __init__(self, writer: Optional[BankWriter], supervisor: cli.Supervisor, *,
                 scenario: str = "fluctuation", cycles: int = 0, speed: float = 1.0,
                 heartbeat_interval: int = 60, first_transaction_id: int = 1,
                 detector_factory: Callable[[], Any] = new_detector) -> None:
        self.writer = writer
        self.supervisor = supervisor
        self.scenario = scenario
        self.cycles = cycles
        self.speed = speed
        self.heartbeat_interval = heartbeat_interval
        self.detector_factory = detector_factory
        self.stations: dict[str, Station] = {}
        self.first_transaction_id = first_transaction_id
        self._transaction_ids = itertools.count(first_transaction_id)
        #: Transactions issued since this process started and not stopped yet: id -> charge point.
        self.running: dict[int, str] = {}

    def station(self, charge_point_id: str) -> Station:
        if charge_point_id not in self.stations:
            analyser = CurrentAnalyser(charge_point_id, self.writer, self.detector_factory())
            self.stations[charge_point_id] = Station(charge_point_id, analyser)
        return self.stations[charge_point_id]

    def next_transaction_id(self, charge_point_id: str) -> int:
        transaction_id = next(self._transaction_ids)
        self.running[transaction_id] = charge_point_id
        return transaction_id

    def stop_transaction(self, charge_point_id: str, transaction_id: int) -> bool:
        """Whether a StopTransaction ends a transaction this central system issued to that charge
        point: one running since this process started, or one issued before it (below
        ``first_transaction_id``, whose session the MemoryBank has)."""
        if self.running.get(transaction_id) == charge_point_id:
            del self.running[transaction_id]
            return True
        return 0 < transaction_id < self.first_transaction_id

    def event(self, event_type: str, description: str, data: Any = None,
              charge_point_id: Optional[str] = None) -> None:
        if self.writer is not None:
            self.writer.event(event_type, description, data, charge_point_id)

    async def handle(self, connection: ServerConnection) -> None:
        """One WebSocket connection: a charge point, from handshake to close."""
        charge_point_id = unquote(connection.request.path.rstrip("/").rsplit("/", 1)[-1])
        peer = "{}:{}".format(*connection.remote_address[:2])
        if connection.subprotocol != ocpp16.SUBPROTOCOL:
            log.warning("%s: closed a connection without the ocpp1.6 subprotocol", peer)
            await connection.close(1002, "the ocpp1.6 subprotocol is required")
            return
        if not charge_point_id:
            log.warning("%s: closed a connection without a charge point id in its URL", peer)
            await connection.close(1008, "the URL must end with the charge point id")
            return
        station = self.station(charge_point_id)
        if station.endpoint is not None:
            log.warning("%s: connected again; closing its previous connection", charge_point_id)
            await station.endpoint.close_connection()
        endpoint = CsmsEndpoint(charge_point_id, connection, self, station)
        station.endpoint = endpoint
        log.info("%s: connected from %s", charge_point_id, peer)
        self.event("CONNECTED", f"{charge_point_id} connected from {peer}", {"peer": peer},
                   charge_point_id)
        try:
            await endpoint.start()
        except websockets.ConnectionClosed:
            pass
        finally:
            if station.endpoint is endpoint:
                station.endpoint = None
                self.stop_scenario(station)
            log.info("%s: disconnected", charge_point_id)
            self.event("DISCONNECTED", f"{charge_point_id} disconnected", None, charge_point_id)

    def start_scenario(self, station: Station) -> None:
        if self.scenario == "none" or station.endpoint is None:
            return
        if station.scenario_task is None or station.scenario_task.done():
            station.scenario_task = self.supervisor.start(self._drive(station),
                                                          f"scenario of {station.id}")

    def stop_scenario(self, station: Station) -> None:
        if station.scenario_task is not None:
            station.scenario_task.cancel()
            station.scenario_task = None

    async def _drive(self, station: Station) -> None:
        """Run the scenario from the first step not done (a reconnect resumes there).

        Steps keep to a schedule rather than waiting after each answer, so the round trips do not
        stretch the cycle: its period is the same at every --speed.
        """
        steps = itertools.islice(scenario_steps(self.scenario, self.cycles), station.steps_done,
                                 None)
        loop = asyncio.get_running_loop()
        due = loop.time()
        for step in steps:
            endpoint = station.endpoint
            if endpoint is None:
                return
            try:
                await self._step(station, endpoint, step)
            except websockets.ConnectionClosed:
                return  # the step is done again on the next connection
            if step.wait_s is None:
                await asyncio.Event().wait()
            due += step.wait_s / self.speed
            late = loop.time() - due
            if late > 0:
                due += late  # a slow answer shifts the schedule instead of bunching steps
            await asyncio.sleep(max(0.0, -late))
            station.steps_done += 1
        self._log_step(station, "scenario complete", {"scenario": self.scenario})

    async def _step(self, station: Station, endpoint: CsmsEndpoint, step: Step) -> None:
        if step.action == "set_limit":
            profile = charging_profiles.build(PROFILE_ID, step.amps, purpose="TxDefaultProfile",
                                              start=utc_now() - CLOCK_MARGIN)
            request: Any = call.SetChargingProfile(connector_id=CONNECTOR,
                                                   cs_charging_profiles=profile)
            what = f"SetChargingProfile limit {step.amps:g} A"
        elif step.action == "remote_start":
            profile = None
            if step.amps is not None:
                profile = charging_profiles.build(PROFILE_ID + 1, step.amps, purpose="TxProfile")
            request = call.RemoteStartTransaction(id_tag=ID_TAG, connector_id=CONNECTOR,
                                                  charging_profile=profile)
            what = "RemoteStartTransaction" + (f" at {step.amps:g} A" if profile else "")
        else:
            if station.transaction_id is None:
                self._log_step(station, "RemoteStopTransaction skipped: no transaction running",
                               {"action": step.action})
                return
            request = call.RemoteStopTransaction(transaction_id=station.transaction_id)
            what = f"RemoteStopTransaction {station.transaction_id}"
        try:
            response = await endpoint.call(request, suppress=False)
            outcome = getattr(response, "status", "answered")
        except (TimeoutError, OCPPError) as exc:
            outcome = f"failed: {exc}"
        self._log_step(station, f"{what} -> {outcome}",
                       {"action": step.action, "amps": step.amps, "outcome": str(outcome),
                        "wait_s": step.wait_s})

    def _log_step(self, station: Station, description: str, data: dict) -> None:
        log.info("%s: scenario %s: %s", station.id, self.scenario, description)
        self.event("SCENARIO_STEP", description, {"scenario": self.scenario, **data}, station.id)

    def record_meter_values(self, station: Station, meter_value: list[dict],
                            transaction_id: Optional[int]) -> None:
        """Record the samples we know; those that are not finite numbers are skipped, with one
        log line for the message."""
        skipped = []
        for value in meter_value:
            try:
                moment = charging_profiles.parse_time(value["timestamp"])
            except ValueError:
                log.warning("%s: meter value with a bad timestamp %r ignored", station.id,
                            value["timestamp"])
                continue
            for sample in value["sampled_value"]:
                if not self._record_sample(station, moment, sample, transaction_id):
                    skipped.append(f"{sample.get('measurand', '?')}={sample['value']!r}")
        if skipped:
            log.warning("%s: MeterValues values that are not finite numbers skipped: %s",
                        station.id, ", ".join(skipped)[:300])

    def _record_sample(self, station: Station, moment: datetime, sample: dict,
                       transaction_id: Optional[int]) -> bool:
        """False for a value that is not a finite number."""
        measurand = sample.get("measurand", "Energy.Active.Import.Register")
        if measurand not in METRICS or sample.get("phase"):
            return True
        name, unit = METRICS[measurand]
        try:
            value = float(sample["value"])
        except ValueError:
            return False
        if sample.get("unit") in KILO_UNITS:
            value *= 1000
        if not math.isfinite(value):
            return False
        if self.writer is not None:
            self.writer.metric(name, value, unit, station.id, transaction_id, moment)
        if name == "current":
            station.analyser.update(moment.timestamp() * self.speed, value, transaction_id)
        return True


class CsmsEndpoint(ocpp16.Endpoint):
    """The central system's end of one charge point's connection."""

    side = "csms"

    def __init__(self, charge_point_id: str, connection: ServerConnection,
                 system: CentralSystem, station: Station) -> None:
        super().__init__(charge_point_id, connection, response_timeout=RESPONSE_TIMEOUT)
        self.system = system
        self.station = station
        self.booted = False

    async def close_connection(self) -> None:
        await self._connection.close(1000, "replaced by a new connection")

    def on_frame(self, record: dict[str, Any]) -> None:
        arrow = "cp->csms" if record["direction"] == "received" else "csms->cp"
        action = record["action"] or "?"
        description = f"{arrow} {record['message_type']} {action}"
        log.info("%s: %s %s", self.id, description, ocpp16.compact(record["payload"]))
        self.system.event("OCPP_MESSAGE", description, record, self.id)
        if (record["direction"] == "received" and record["message_type"] == "CALL"
                and action != Action.boot_notification and not self.booted):
            self.booted = True  # reconnected without a BootNotification: accepted before
            self.system.start_scenario(self.station)

    def on_ignored(self, raw: Any, reason: str) -> None:
        super().on_ignored(raw, reason)
        self.system.event("OCPP_FRAME_IGNORED", f"cp->csms frame ignored: {reason}",
                          {"frame": str(raw)[:1000], "reason": reason}, self.id)

    @on(Action.boot_notification)
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str,
                             **kwargs: Any) -> call_result.BootNotification:
        self.booted = True
        return call_result.BootNotification(current_time=charging_profiles.iso(utc_now()),
                                            interval=self.system.heartbeat_interval,
                                            status=RegistrationStatus.accepted)

    @after(Action.boot_notification)
    def after_boot_notification(self, **kwargs: Any) -> None:
        self.system.start_scenario(self.station)

    @on(Action.heartbeat)
    def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=charging_profiles.iso(utc_now()))

    @on(Action.status_notification)
    def on_status_notification(self, connector_id: int, error_code: str, status: str,
                               **kwargs: Any) -> call_result.StatusNotification:
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str) -> call_result.Authorize:
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.start_transaction)
    def on_start_transaction(self, connector_id: int, id_tag: str, meter_start: int,
                             timestamp: str, **kwargs: Any) -> call_result.StartTransaction:
        transaction_id = self.system.next_transaction_id(self.id)
        self.station.transaction_id = transaction_id
        start = _time_or_now(timestamp)
        if self.system.writer is not None:
            self.system.writer.call(lambda bank: bank.start_session(
                self.id, transaction_id, start_time=start, meter_start_wh=meter_start,
                id_tag=id_tag))
        log.info("%s: transaction %d started (meter %d Wh)", self.id, transaction_id, meter_start)
        return call_result.StartTransaction(transaction_id=transaction_id,
                                            id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.stop_transaction)
    def on_stop_transaction(self, meter_stop: int, timestamp: str, transaction_id: int,
                            reason: Optional[str] = None,
                            **kwargs: Any) -> call_result.StopTransaction:
        answer = call_result.StopTransaction(id_tag_info={"status": AuthorizationStatus.accepted})
        if self.station.transaction_id == transaction_id:
            self.station.transaction_id = None
        if transaction_id in self.station.finished:
            log.info("%s: transaction %d stopped again; already recorded", self.id,
                     transaction_id)
            return answer
        if not self.system.stop_transaction(self.id, transaction_id):
            log.warning("%s: StopTransaction for transaction %d, which this central system did "
                        "not start for it: no session recorded", self.id, transaction_id)
            return answer
        self.station.finished.add(transaction_id)
        end = _time_or_now(timestamp)
        if self.system.writer is not None:
            self.system.writer.call(lambda bank: bank.end_session(
                self.id, transaction_id, end_time=end, stop_reason=reason or "Local",
                meter_stop_wh=meter_stop))
        log.info("%s: transaction %d stopped (%s, meter %d Wh)", self.id, transaction_id,
                 reason or "Local", meter_stop)
        return answer

    @on(Action.meter_values)
    def on_meter_values(self, connector_id: int, meter_value: list,
                        transaction_id: Optional[int] = None,
                        **kwargs: Any) -> call_result.MeterValues:
        if (transaction_id is not None and self.station.transaction_id is None
                and transaction_id not in self.station.finished):
            self.station.transaction_id = transaction_id  # one that started before a restart
        self.system.record_meter_values(self.station, meter_value, transaction_id)
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **kwargs: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)


def _time_or_now(text: str) -> datetime:
    try:
        return charging_profiles.parse_time(text)
    except ValueError:
        return utc_now()


def select_ocpp16(connection: ServerConnection, offered: Sequence[str]) -> Optional[str]:
    """Agree on ocpp1.6; a client that does not offer it completes the handshake without a
    subprotocol and is then closed (OCPP-J 1.6 §3.2)."""
    return ocpp16.SUBPROTOCOL if ocpp16.SUBPROTOCOL in offered else None


# -- the process ----------------------------------------------------------------------------------

def first_transaction_id(path: Optional[str]) -> int:
    """One past the highest transaction id in the MemoryBank: unique across restarts."""
    with MemoryBank(path) as bank:
        return (bank.max_transaction_id() or 0) + 1


async def serve_forever(args: Any, writer: BankWriter, supervisor: cli.Supervisor,
                        ready: Optional[Callable[[int], None]] = None) -> None:
    """Serve until ``supervisor.stop`` is set, then close every open episode."""
    system = CentralSystem(writer, supervisor, scenario=args.scenario, cycles=args.cycles,
                           speed=args.speed, heartbeat_interval=args.heartbeat_interval,
                           first_transaction_id=first_transaction_id(args.db))
    try:
        server = await serve(system.handle, args.host, args.port,
                             subprotocols=[ocpp16.SUBPROTOCOL], select_subprotocol=select_ocpp16,
                             compression=None)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise cli.SimError(f"port {args.port} on {args.host} is in use") from None
        raise cli.SimError(f"cannot listen on {args.host}:{args.port}: "
                           f"{exc.strerror or exc}") from None
    port = server.sockets[0].getsockname()[1]
    log.info("central system on ws://%s:%d/<charge_point_id>, scenario %s, cycles %s, speed %g",
             args.host, port, args.scenario, args.cycles or "forever", args.speed)
    writer.event("PROCESS_START", f"csms listening on {args.host}:{port}",
                 {"host": args.host, "port": port, "scenario": args.scenario,
                  "cycles": args.cycles, "speed": args.speed})
    if ready:
        ready(port)
    try:
        await supervisor.stop.wait()
    finally:
        for station in system.stations.values():
            system.stop_scenario(station)
        server.close()
        await server.wait_closed()
        for station in system.stations.values():
            station.analyser.close()
        writer.event("PROCESS_STOP", "csms stopped")


async def amain(args: Any, supervisor: cli.Supervisor) -> None:
    try:
        writer = BankWriter(args.db, "csms")
    except (MemoryBankError, OSError) as exc:
        raise cli.SimError(f"MemoryBank: {exc}") from None
    try:
        await serve_forever(args, writer, supervisor)
    finally:
        writer.close()


def port_number(text: str) -> int:
    port = cli.non_negative_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {text!r}")
    return port


def build_parser():
    parser = cli.make_parser("csms.py", __doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                        help=f"port to bind, 0 for any free one (default: {DEFAULT_PORT})")
    parser.add_argument("--scenario", choices=SCENARIOS, default="fluctuation",
                        help="what to drive on every charge point (default: fluctuation)")
    parser.add_argument("--cycles", type=cli.non_negative_int, default=0, metavar="N",
                        help="stop the scenario after N cycles, 0 = forever (default: 0)")
    parser.add_argument("--heartbeat-interval", type=cli.non_negative_int, default=60,
                        metavar="S", help="heartbeat interval given at boot, seconds before "
                                          "--speed (default: 60)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(lambda args: cli.run_async(amain, args), build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
