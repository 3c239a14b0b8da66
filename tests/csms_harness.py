"""The central system with its control API, in the test's event loop on free loopback ports (port
0) with a real MemoryBank, and a charge point written with the ``ocpp`` library only that answers
every message the central system may send as the test scripts it. Shared by test_csms_api.py,
test_csms_idtags.py and test_csms_messages.py."""
from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Optional

import aiohttp
from conftest import wait_for_async
from ocpp.charge_point import camel_to_snake_case
from ocpp.v16 import ChargePoint, call, call_result
from websockets.asyncio.client import connect

from evsim import cli
from evsim.bank import MemoryBank
from evsim.bank.writer import BankWriter
from evsim.clock import Clock
from evsim.csms import control, recovery
from evsim.csms import main as csms_main
from evsim.csms.server import CentralSystem, serve

PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
PROFILE = {"chargingProfileId": 7, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
           "chargingProfileKind": "Absolute", "validFrom": "2026-01-01T00:00:00Z",
           "chargingSchedule": {"duration": 600, "startSchedule": "2026-01-01T00:00:00Z",
                                "chargingRateUnit": "A",
                                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.5},
                                                           {"startPeriod": 300, "limit": 8.0,
                                                            "numberPhases": 3}]}}

#: A valid body for every action of the API (kebab case), as a user would write it.
BODIES: dict[str, dict] = {
    "cancel-reservation": {"reservationId": 3},
    "certificate-signed": {"certificateChain": PEM},
    "change-availability": {"connectorId": 1, "type": "Inoperative"},
    "change-configuration": {"key": "HeartbeatInterval", "value": "30"},
    "clear-cache": {},
    "clear-charging-profile": {"id": 7, "connectorId": 1,
                               "chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 1},
    "data-transfer": {"vendorId": "com.example", "messageId": "hello", "data": "{\"a\": 1}"},
    "delete-certificate": {"certificateHashData": {
        "hashAlgorithm": "SHA256", "issuerNameHash": "a" * 64, "issuerKeyHash": "b" * 64,
        "serialNumber": "0a1b"}},
    "extended-trigger-message": {"requestedMessage": "SignChargePointCertificate"},
    "get-composite-schedule": {"connectorId": 1, "duration": 3600, "chargingRateUnit": "W"},
    "get-configuration": {"key": ["HeartbeatInterval", "MeterValueSampleInterval"]},
    "get-diagnostics": {"location": "ftp://example.com/diagnostics/", "retries": 2,
                        "retryInterval": 30, "startTime": "2026-01-01T00:00:00Z"},
    "get-installed-certificate-ids": {"certificateType": "CentralSystemRootCertificate"},
    "get-local-list-version": {},
    "get-log": {"logType": "SecurityLog", "requestId": 7,
                "log": {"remoteLocation": "https://example.com/logs/",
                        "oldestTimestamp": "2026-01-01T00:00:00Z"}},
    "install-certificate": {"certificateType": "ManufacturerRootCertificate",
                            "certificate": PEM},
    "remote-start-transaction": {"idTag": "TAG1", "connectorId": 1, "chargingProfile": {
        **PROFILE, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative"}},
    "remote-stop-transaction": {"transactionId": 5},
    "reserve-now": {"connectorId": 1, "expiryDate": "2027-01-01T00:00:00Z", "idTag": "TAG1",
                    "parentIdTag": "GROUP", "reservationId": 3},
    "reset": {"type": "Soft"},
    "send-local-list": {"listVersion": 2, "updateType": "Full", "localAuthorizationList": [
        {"idTag": "TAG1", "idTagInfo": {"status": "Accepted",
                                        "expiryDate": "2027-01-01T00:00:00Z"}},
        {"idTag": "TAG2"}]},
    "set-charging-profile": {"connectorId": 1, "csChargingProfiles": PROFILE},
    "signed-update-firmware": {"requestId": 1, "retries": 1, "firmware": {
        "location": "https://example.com/fw.bin", "retrieveDateTime": "2027-01-01T00:00:00Z",
        "signingCertificate": PEM, "signature": "c2lnbmF0dXJl"}},
    "trigger-message": {"requestedMessage": "StatusNotification", "connectorId": 1},
    "unlock-connector": {"connectorId": 1},
    "update-firmware": {"location": "https://example.com/fw.bin",
                        "retrieveDate": "2027-01-01T00:00:00Z", "retries": 3},
}

#: What the test's charge point answers to each action (camelCase, valid for its schema).
ANSWERS: dict[str, Any] = {
    "CancelReservation": {"status": "Accepted"}, "CertificateSigned": {"status": "Accepted"},
    "ChangeAvailability": {"status": "Scheduled"}, "ChangeConfiguration": {"status": "Accepted"},
    "ClearCache": {"status": "Accepted"}, "ClearChargingProfile": {"status": "Unknown"},
    "DataTransfer": {"status": "Accepted", "data": "pong"},
    "DeleteCertificate": {"status": "NotFound"}, "ExtendedTriggerMessage": {"status": "Accepted"},
    "GetCompositeSchedule": {"status": "Accepted", "connectorId": 1,
                             "scheduleStart": "2026-01-01T00:00:00Z", "chargingSchedule": {
                                 "chargingRateUnit": "W", "chargingSchedulePeriod": [
                                     {"startPeriod": 0, "limit": 11000.0}]}},
    "GetConfiguration": {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False,
                                               "value": "60"}],
                         "unknownKey": ["MeterValueSampleInterval"]},
    "GetDiagnostics": {"fileName": "diagnostics.zip"},
    "GetInstalledCertificateIds": {"status": "NotFound"},
    "GetLocalListVersion": {"listVersion": 4},
    "GetLog": {"status": "Accepted", "filename": "security.log"},
    "InstallCertificate": {"status": "Accepted"}, "RemoteStartTransaction": {"status": "Accepted"},
    "RemoteStopTransaction": {"status": "Rejected"}, "ReserveNow": {"status": "Occupied"},
    "Reset": {"status": "Accepted"}, "SendLocalList": {"status": "VersionMismatch"},
    "SetChargingProfile": {"status": "Accepted"}, "SignedUpdateFirmware": {"status": "Accepted"},
    "TriggerMessage": {"status": "Accepted"}, "UnlockConnector": {"status": "Unlocked"},
    "UpdateFirmware": {},
}


class LibraryChargePoint(ChargePoint):
    """A charge point made of the ``ocpp`` library alone: each action in ``answers`` is routed
    by the library (schema checks both ways) to a handler that answers as scripted: a dict, or a
    callable of the request's keywords returning one (or an awaitable of one). ``received``
    holds every CALL as it came off the wire: (action, payload)."""

    def __init__(self, id: str, connection: Any, answers: Optional[dict[str, Any]] = None,
                 skip_schema: tuple[str, ...] = ()) -> None:
        super().__init__(id, connection, response_timeout=30)
        self.received: list[tuple[str, Any]] = []
        self.arrived = asyncio.Event()
        for action, answer in (ANSWERS if answers is None else answers).items():
            self.route_map[action] = {"_on_action": partial(self._answer, action, answer),
                                      "_skip_schema_validation": action in skip_schema}

    async def route_message(self, raw: Any) -> None:
        frame = json.loads(raw)
        if frame[0] == 2:
            self.received.append((frame[2], frame[3]))
            self.arrived.set()
        await super().route_message(raw)

    async def _answer(self, action: str, answer: Any, **request: Any) -> Any:
        if callable(answer):
            answer = answer(**request)
            if inspect.isawaitable(answer):
                answer = await answer
        return getattr(call_result, action)(**camel_to_snake_case(answer))

    async def requested(self, count: int) -> list[tuple[str, Any]]:
        """The CALLs received, once there are ``count``."""
        return await wait_for_async(lambda: len(self.received) >= count and self.received,
                                    message=f"{count} CALLs at the charge point")


class Site:
    """CentralSystem + OCPP server + control API on port 0, a BankWriter on ``db_path``."""

    def __init__(self, db_path: Path, *, token: Optional[str] = None, scenario: str = "none",
                 speed: float = 1.0, call_timeout: float = 10.0, id_tags_file: Optional[str] = None,
                 ca: Any = None) -> None:
        self.db_path = db_path
        self.token = token
        self.options = dict(scenario=scenario, call_timeout=call_timeout, ca=ca)
        self.speed = speed
        self.id_tags_file = id_tags_file
        self.clients: list[tuple[Any, asyncio.Task]] = []

    async def start(self) -> Site:
        self.writer = BankWriter(str(self.db_path), "csms")
        self.supervisor = cli.Supervisor()
        self.system = CentralSystem(
            self.writer, self.supervisor, Clock(self.speed),
            first_transaction_id=csms_main.first_transaction_id(str(self.db_path)),
            id_tags=control.load_id_tags(str(self.db_path), self.id_tags_file), **self.options)
        recovery.end_left_open(str(self.db_path), self.system.registry)  # as csms.py does
        self.server = await serve(self.system.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.api = await control.start_api(self.system, "127.0.0.1", 0, self.token)
        self.http = aiohttp.ClientSession(f"http://127.0.0.1:{control.bound_port(self.api)}")
        return self

    async def stop(self) -> None:
        for connection, task in self.clients:
            await connection.close()
            task.cancel()
        await self.http.close()
        await self.api.cleanup()
        self.server.close()
        await self.server.wait_closed()
        failure = self.supervisor.failure
        await self.supervisor.cancel()
        self.writer.close()
        assert failure is None

    async def request(self, method: str, path: str, body: Any = None, *, raw: Optional[str] = None,
                      token: Optional[str] = None,
                      headers: Optional[dict] = None) -> tuple[int, Any]:
        """(HTTP status, decoded JSON answer); ``token`` defaults to the site's."""
        token = self.token if token is None else token
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        async with self.http.request(method, "/api/v1" + path, data=data,
                                     headers=headers) as response:
            return response.status, await response.json()

    async def connect(self, charge_point_id: str, cls: Callable[..., Any] = LibraryChargePoint,
                      boot: bool = True, **options: Any) -> Any:
        """A library charge point connected (and booted) as ``charge_point_id``."""
        connection = await connect(f"ws://127.0.0.1:{self.port}/{charge_point_id}",
                                   subprotocols=["ocpp1.6"])
        client = cls(charge_point_id, connection, **options)
        task = asyncio.create_task(client.start())
        self.clients.append((connection, task))
        if boot:
            await client.call(call.BootNotification(charge_point_model="M",
                                                    charge_point_vendor="V"))
        await wait_for_async(lambda: self.system.registry.get(charge_point_id) is not None,
                             message="the charge point's record")
        return client

    def bank(self) -> MemoryBank:
        return MemoryBank(self.db_path, readonly=True)

    async def events(self, event_type: str, count: int = 1) -> list[dict]:
        """The events of ``event_type`` (oldest first), once the MemoryBank holds ``count``."""
        def found() -> list[dict]:
            with self.bank() as bank:
                rows = bank.get_recent_events(None, {"event_type": event_type})
            return list(reversed(rows)) if len(rows) >= count else []
        return await wait_for_async(found, message=f"{count} {event_type} events")

