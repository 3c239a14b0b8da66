"""The central system: accepts charge points' WebSocket connections, answers their OCPP messages,
drives the scenario on each, and records sessions, metrics and every frame.

The charge point id is the last segment of the URL path; a second connection with the same id
replaces the first (the first is closed). What crosses OCPP is recorded with source ``csms``
(ARCHITECTURE.md, "Who records what").
"""
from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from ssl import SSLContext
from typing import Any, Optional

import websockets
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, AuthorizationStatus, DataTransferStatus, RegistrationStatus
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as websockets_serve

from evsim import cli
from evsim.clock import Clock
from evsim.constants import RESPONSE_TIMEOUT_S
from evsim.csms.analysis import ChargePointAnalysis
from evsim.csms.endpoint import CsmsEndpoint, ScenarioLink
from evsim.csms.gate import charge_point_id_of
from evsim.csms.handlers import Handlers
from evsim.csms.idtags import IdTagList, OpenTransactions
from evsim.csms.journal import Journal
from evsim.csms.mix import ScenarioMix
from evsim.csms.recording import Writer, record_meter_values, record_transaction_data
from evsim.csms.registry import MAX_STATIONS, STOP_RECORD, STOP_REPEATED, Registry, Station
from evsim.csms.scenario import ScenarioRunner
from evsim.csms.scenario_labels import ScenarioLabels
from evsim.csms.security import ChargePointRegistry
from evsim.detection.site import Detectors
from evsim.faults.labels import bank_recorder
from evsim.ocpp16 import endpoint as ocpp16
from evsim.timefmt import format_timestamp, ocpp_time, parse_ocpp_time

log = logging.getLogger("csms")

STOP_REASON = "Local"
#: The stop reason of a session the central system ends itself (not OCPP's: no charge point
#: said so) because a new transaction started on its connector.
REPLACED_REASON = "ReplacedByNewTransaction"  # OCPP 1.6: a StopTransaction without a reason means Local


class CentralSystem:
    """Every charge point's record, the scenario they run, and the answers to their messages.

    ``writer`` records (a BankWriter, or a fake in tests); every time read goes through ``clock``.
    ``security`` is the registry of known charge points, None when any may connect.
    ``detectors()`` makes the detectors of a charge point seen for the first time (its analysis:
    :mod:`evsim.csms.analysis`).
    """

    security: ChargePointRegistry | None = None

    def __init__(self, writer: Writer, supervisor: cli.Supervisor, clock: Clock, *,
                 scenario: str = "fluctuation", cycles: int = 0, heartbeat_interval: int = 60,
                 first_transaction_id: int = 1, detectors: Callable[[], Detectors] = Detectors,
                 max_stations: int = MAX_STATIONS, id_tags: Optional[IdTagList] = None,
                 ca: Any = None, call_timeout: float = RESPONSE_TIMEOUT_S,
                 mix: Optional[ScenarioMix] = None) -> None:
        self.writer = writer
        self.supervisor = supervisor
        self.clock = clock
        self.scenario = scenario
        self.mix = mix
        self.cycles = cycles
        self.heartbeat_interval = heartbeat_interval
        self.detectors = detectors
        self.registry = Registry(self._new_station, first_transaction_id, max_stations)
        self.id_tags = id_tags if id_tags is not None else IdTagList()  # --id-tags, the API
        self.open_tags = OpenTransactions()  # for ConcurrentTx
        self.call_timeout = call_timeout  # for a CALL of the control API
        self.handlers = Handlers(self, ca)
        self.journal = Journal(self.event, clock)
        self.scenario_labels = ScenarioLabels(scenario, clock, bank_recorder(writer, log),
                                              cycles, seed=mix.seed if mix else None)

    def scenario_of(self, charge_point_id: str) -> str:
        """The scenario driven on ``charge_point_id``: the one of ``--scenario``, or the mix's."""
        return self.mix.scenario_of(charge_point_id) if self.mix else self.scenario

    def _new_station(self, charge_point_id: str) -> Station:
        analyser = ChargePointAnalysis(charge_point_id, self.writer, self.clock, self.detectors())
        scenario = self.scenario_of(charge_point_id)
        if self.mix is not None:
            self.event("SCENARIO_ASSIGNED", f"{charge_point_id}: {scenario} (mix {self.mix}, "
                                            f"seed {self.mix.seed})",
                       {"scenario": scenario, "mix": str(self.mix), "seed": self.mix.seed},
                       charge_point_id)
        runner = None
        if scenario != "none":
            runner = ScenarioRunner(scenario, self.cycles, self.clock,
                                    partial(self._report_step, charge_point_id))
        return Station(charge_point_id, analyser, runner)

    # -- connections ------------------------------------------------------------------------------

    async def handle(self, connection: ServerConnection) -> None:
        """One WebSocket connection: a charge point, from handshake to close."""
        charge_point_id = charge_point_id_of(connection.request.path)  # as the gate read it
        peer = "{}:{}".format(*connection.remote_address[:2])
        if connection.subprotocol != ocpp16.SUBPROTOCOL:
            log.warning("%s: closed a connection without the ocpp1.6 subprotocol", peer)
            await connection.close(1002, "the ocpp1.6 subprotocol is required")
            return
        if not charge_point_id:
            log.warning("%s: closed a connection without a charge point id in its URL", peer)
            await connection.close(1008, "the URL must end with the charge point id")
            return
        station = self.registry.station(charge_point_id)
        endpoint = CsmsEndpoint(charge_point_id, connection, self, station)
        previous = self.registry.connect(station, endpoint)
        if previous is not None:
            log.warning("%s: connected again; closing its previous connection", charge_point_id)
            self.stop_scenario(station)
            # in the background: a peer that is gone would hold the close handshake for seconds
            self.supervisor.start(_close_quietly(previous), f"close old {charge_point_id}")
        log.info("%s: connected from %s", charge_point_id, peer)
        self.event("CONNECTED", f"{charge_point_id} connected from {peer}", {"peer": peer},
                   charge_point_id)
        try:
            await endpoint.start()
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.registry.disconnect(station, endpoint):
                self.stop_scenario(station)
            log.info("%s: disconnected", charge_point_id)
            self.event("DISCONNECTED", f"{charge_point_id} disconnected", None, charge_point_id)

    def authorization_key_changed(self, station: Station, key: str) -> None:
        """The charge point accepted a new AuthorizationKey: from its next connection on, the
        registry expects that one (and refuses the old)."""
        if self.security is None or self.security.get(station.id) is None:
            return
        try:
            self.security.set_key(station.id, key)
        except ValueError as exc:
            log.warning("%s: the new AuthorizationKey is not kept: %s", station.id, exc)
            return
        log.info("%s: AuthorizationKey changed; the registry keeps the new one", station.id)
        self.event("SECURITY", f"{station.id}: AuthorizationKey changed", {"reason": "rotated"},
                   station.id)

    def start_scenario(self, station: Station) -> None:
        """Drive the scenario on the charge point's connection, from the first step not done."""
        if station.runner is None or station.link is None or station.paused:
            return
        if station.scenario_task is None or station.scenario_task.done():
            run = self._drive(station, ScenarioLink(station.link))
            station.scenario_task = self.supervisor.start(run, f"scenario of {station.id}")

    async def _drive(self, station: Station, link: ScenarioLink) -> None:
        """Run the scenario on ``link``; when the scenario is an anomaly, its label covers the
        run (scenario_labels)."""
        runner = station.runner
        stretch = None if runner.complete else self.scenario_labels.start(station.id,
                                                                          runner.scenario)
        try:
            await runner.run(link, lambda: station.transaction_id)
        finally:
            if stretch is not None:
                self.scenario_labels.end(station.id, stretch)

    def stop_scenario(self, station: Station) -> None:
        if station.scenario_task is not None:
            station.scenario_task.cancel()
            station.scenario_task = None
        self.scenario_labels.end(station.id)

    def shutdown(self) -> None:
        """Stop every scenario, end every open episode and hand over every open label."""
        for station in self.registry:
            self.stop_scenario(station)
            station.analyser.close()
        self.scenario_labels.close()

    def profile_answered(self, station: Station, action: str, payload: Any,
                         status: Any) -> None:
        """A CALL of ours (the scenario's or the control API's) answered ``status``: a charging
        profile set or cleared, Accepted, changes the limit the analysis holds the charge point
        to. ``payload`` as sent (camelCase or snake_case)."""
        if station.analyser is not None:
            station.analyser.profile_answered(action, payload, status)

    def _report_step(self, charge_point_id: str, description: str, data: dict) -> None:
        log.info("%s: scenario %s: %s", charge_point_id, self.scenario, description)
        self.event("SCENARIO_STEP", description, {"scenario": self.scenario, **data},
                   charge_point_id)

    def event(self, event_type: str, description: str, data: Any = None,
              charge_point_id: Optional[str] = None) -> None:
        self.writer.event(event_type, description, data, charge_point_id)

    # -- what an endpoint hands off ---------------------------------------------------------------

    def frame(self, endpoint: CsmsEndpoint, record: dict[str, Any]) -> None:
        """Every frame both ways is logged and recorded; a CALL other than BootNotification on a
        connection not booted yet is a charge point that reconnected, accepted before."""
        received = record["direction"] == "received"
        action = record["action"] or "?"
        description = f"{'cp->csms' if received else 'csms->cp'} {record['message_type']} {action}"
        if log.isEnabledFor(logging.INFO):
            log.info("%s: %s %s", endpoint.id, description, ocpp16.compact(record["payload"]))
        self.event("OCPP_MESSAGE", description, record, endpoint.id)
        self.journal.frame(endpoint, record)
        if (received and record["message_type"] == "CALL"
                and action != Action.boot_notification and not endpoint.booted):
            endpoint.booted = True
            self.start_scenario(endpoint.station)

    def frame_ignored(self, endpoint: CsmsEndpoint, raw: Any, reason: str) -> None:
        self.event("OCPP_FRAME_IGNORED", f"cp->csms frame ignored: {reason}",
                   {"frame": ocpp16.redact_text(raw)[:1000], "reason": reason}, endpoint.id)

    def boot_notification(self, endpoint: CsmsEndpoint) -> call_result.BootNotification:
        endpoint.booted = True  # the scenario starts once the answer is sent
        return call_result.BootNotification(current_time=ocpp_time(self.clock.now()),
                                            interval=self.heartbeat_interval,
                                            status=RegistrationStatus.accepted)

    def heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=ocpp_time(self.clock.now()))

    def authorize(self, id_tag: str) -> call_result.Authorize:
        return call_result.Authorize(id_tag_info=self.id_tag_info(id_tag))

    def id_tag_info(self, id_tag: str, in_transaction: Optional[bool] = None) -> dict:
        """What the id-tag list answers for ``id_tag`` now (idtags.IdTagList.answer)."""
        if in_transaction is None:
            in_transaction = self.open_tags.busy(id_tag)
        return self.id_tags.answer(id_tag, self.clock.now(), in_transaction)

    def data_transfer(self, vendor_id: str) -> call_result.DataTransfer:
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)

    def start_transaction(self, endpoint: CsmsEndpoint, id_tag: str, meter_start: int,
                          timestamp: str, connector_id: int = 1) -> call_result.StartTransaction:
        """A new transaction id (OCPP 1.6 gives one even to a refused start), and its session
        opened; the id tag answers from the list, Invalid on a connector the charge point does
        not have."""
        charge_point_id, station = endpoint.id, endpoint.station
        start = self._time_or_now(timestamp)
        key = (connector_id, id_tag, meter_start, format_timestamp(start))
        repeated = (self.registry.repeated_start(station, key)  # known to a crashed run: no
                    or self.registry.repeated_start(station, (None, *key[1:])))  # connector
        if repeated is not None:
            transaction_id, info = repeated
            log.info("%s: StartTransaction repeated: transaction %d again, no second session",
                     charge_point_id, transaction_id)
            return call_result.StartTransaction(transaction_id=transaction_id, id_tag_info=info)
        replaced = self.registry.open_on(station, connector_id)
        if replaced is not None:
            self._end_replaced(endpoint, replaced, connector_id, start)
        info = self.id_tag_info(id_tag)
        if not station.knows_connector(connector_id):
            log.warning("%s: StartTransaction on connector %s, which it has not reported",
                        charge_point_id, connector_id)
            info = {"status": AuthorizationStatus.invalid}
        transaction_id = self.registry.start_transaction(station, connector_id)
        self.registry.remember_start(station, key, (transaction_id, info))
        station.analyser.transaction_started(connector_id, transaction_id, timestamp, meter_start)
        if info["status"] == AuthorizationStatus.accepted:
            self.open_tags.opened(transaction_id, id_tag)
        self.writer.call(lambda bank: bank.start_session(
            charge_point_id, transaction_id, start_time=start, meter_start_wh=meter_start,
            id_tag=id_tag))
        log.info("%s: transaction %d started (meter %d Wh, id tag %s)", charge_point_id,
                 transaction_id, meter_start, info["status"])
        return call_result.StartTransaction(transaction_id=transaction_id, id_tag_info=info)

    def _end_replaced(self, endpoint: CsmsEndpoint, transaction_id: int, connector_id: int,
                      at: datetime) -> None:
        """A new start on a connector whose transaction never stopped: that session ends now,
        ended by the central system, so that none stays open forever. Should its own
        StopTransaction come after all, it is recorded over this end."""
        log.warning("%s: transaction %d was still open on connector %d: ended (%s)",
                    endpoint.id, transaction_id, connector_id, REPLACED_REASON)
        endpoint.station.on_connector.pop(connector_id, None)
        self.open_tags.closed(transaction_id)
        charge_point_id = endpoint.id
        self.writer.call(lambda bank: bank.end_session(
            charge_point_id, transaction_id, end_time=at, stop_reason=REPLACED_REASON))

    def stop_transaction(self, endpoint: CsmsEndpoint, transaction_id: int, meter_stop: int,
                         timestamp: str, reason: Optional[str], id_tag: Optional[str] = None,
                         transaction_data: Optional[list] = None) -> call_result.StopTransaction:
        """Close the session once, with the transactionData as metrics; a repeated stop, or one
        for a transaction this central system did not start for that charge point, is answered
        but not recorded."""
        charge_point_id = endpoint.id
        info = (self.id_tag_info(id_tag, in_transaction=False) if id_tag
                else {"status": AuthorizationStatus.accepted})
        answer = call_result.StopTransaction(id_tag_info=info)
        outcome = self.registry.stop_transaction(endpoint.station, transaction_id)
        if outcome == STOP_REPEATED:
            log.info("%s: transaction %d stopped again; already recorded", charge_point_id,
                     transaction_id)
        elif outcome != STOP_RECORD:
            log.warning("%s: StopTransaction for transaction %d, which this central system did "
                        "not start for it: no session recorded", charge_point_id, transaction_id)
        else:
            self.open_tags.closed(transaction_id)
            record_transaction_data(self.writer, charge_point_id, transaction_id,
                                    transaction_data or [])
            end, reason = self._time_or_now(timestamp), reason or STOP_REASON
            endpoint.station.analyser.transaction_stopped(transaction_id, timestamp, meter_stop)
            self.writer.call(lambda bank: bank.end_session(
                charge_point_id, transaction_id, end_time=end, stop_reason=reason,
                meter_stop_wh=meter_stop))
            log.info("%s: transaction %d stopped (%s, meter %d Wh)", charge_point_id,
                     transaction_id, reason, meter_stop)
        return answer

    def meter_values(self, endpoint: CsmsEndpoint, meter_value: list,
                     transaction_id: Optional[int],
                     connector_id: int = 1) -> call_result.MeterValues:
        """Metrics recorded, samples analysed (:mod:`evsim.csms.analysis`)."""
        self.registry.adopt_transaction(endpoint.station, transaction_id)
        record_meter_values(self.writer, endpoint.id, meter_value, transaction_id)
        endpoint.station.analyser.meter_values(connector_id, meter_value, transaction_id)
        return call_result.MeterValues()

    def _time_or_now(self, text: str) -> datetime:
        try:
            return parse_ocpp_time(text)
        except ValueError:
            return self.clock.now()


async def _close_quietly(endpoint: CsmsEndpoint) -> None:
    try:
        await endpoint.close_connection()
    except Exception as exc:  # noqa: BLE001 - the old connection is gone either way
        log.info("%s: closing the previous connection: %s", endpoint.id, exc)


def select_ocpp16(connection: ServerConnection, offered: Sequence[str]) -> Optional[str]:
    """Agree on ocpp1.6; a client that does not offer it completes the handshake without a
    subprotocol and is then closed (OCPP-J 1.6 §3.2)."""
    return ocpp16.SUBPROTOCOL if ocpp16.SUBPROTOCOL in offered else None


#: Frames above this many bytes end the connection with close code 1009 and are never read
#: whole, let alone stored (an OCPP 1.6 message is a few kB).
MAX_FRAME_BYTES = 65536
OPEN_TIMEOUT_S = 10.0
#: Connections the kernel queues before csms.py accepts them (capped by net.core.somaxconn):
#: asyncio's 100 overflows in a reconnect storm, and each dropped SYN costs its client 1 s.
BACKLOG = 1024


async def serve(handler: Callable[[ServerConnection], Awaitable[None]], host: str,
                port: int, ssl: SSLContext | None = None,
                process_request: Callable | None = None,
                max_frame_bytes: int = MAX_FRAME_BYTES,
                open_timeout: float = OPEN_TIMEOUT_S) -> Server:
    """Listen for charge points (with ``ssl``, on wss://; ``process_request`` checks each
    upgrade); a port in use or an address that cannot be bound is one line (cli.SimError).
    A client that does not finish its handshake in ``open_timeout`` s is dropped."""
    try:
        return await websockets_serve(handler, host, port, subprotocols=[ocpp16.SUBPROTOCOL],
                                      select_subprotocol=select_ocpp16, compression=None,
                                      ssl=ssl, process_request=process_request,
                                      max_size=max_frame_bytes, open_timeout=open_timeout,
                                      backlog=BACKLOG)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise cli.SimError(f"port {port} on {host} is in use") from None
        raise cli.SimError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
