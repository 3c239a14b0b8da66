"""The central system's end of one charge point's OCPP 1.6 connection.

As in the ``ocpp`` library's examples, the ``@on`` handlers only hand off: the central system
(:class:`evsim.csms.server.CentralSystem`) decides and answers.
"""
from __future__ import annotations

import asyncio
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any, Optional

import websockets
from ocpp.messages import Call, CallError, CallResult
from ocpp.routing import after, on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action, ConfigurationStatus

from evsim.constants import RESPONSE_TIMEOUT_S
from evsim.csms.analysis import PROFILE_ACTIONS
from evsim.csms.scenario import LinkClosed
from evsim.ocpp16 import endpoint as ocpp16

if TYPE_CHECKING:
    from evsim.csms.registry import Station
    from evsim.csms.server import CentralSystem


class CsmsEndpoint(ocpp16.Endpoint):
    """One connection: ``station`` is the charge point's record, ``booted`` whether this
    connection has been accepted (by a BootNotification, or by any other CALL after a reconnect)."""

    side = "csms"

    def __init__(self, charge_point_id: str, connection: Any, system: CentralSystem,
                 station: Station) -> None:
        super().__init__(charge_point_id, connection, response_timeout=RESPONSE_TIMEOUT_S)
        self.system = system
        self.station = station
        self.booted = False
        #: The charge point's CALLs not answered yet: message id -> (action, payload).
        self.unanswered: dict[str, tuple[str, Any]] = {}
        #: A certificate signed for SignCertificate, sent once the answer is (PEM).
        self.signed_certificate: Optional[str] = None
        self.closed = asyncio.Event()

    async def start(self) -> None:
        try:
            await super().start()
        finally:
            self.closed.set()

    async def send(self, action: str, payload: dict, timeout: float) -> CallResult | CallError:
        """One CALL of ``action`` with ``payload`` exactly as given (camelCase, checked by the
        caller), after any CALL of ours in flight; returns the charge point's CALLRESULT or
        CALLERROR. TimeoutError after ``timeout`` seconds without one; ConnectionClosed when
        the connection closes first."""
        unique_id = str(self._unique_id_generator())
        try:
            async with self._call_lock:
                if self.closed.is_set():
                    raise websockets.ConnectionClosed(None, None)
                await self._send(Call(unique_id, action, payload).to_json())
                answer = asyncio.ensure_future(self._get_specific_response(unique_id, timeout))
                closed = asyncio.ensure_future(self.closed.wait())
                try:
                    done, _ = await asyncio.wait((answer, closed),
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in (answer, closed):
                        if not waiter.done():
                            waiter.cancel()
                if answer not in done:
                    raise websockets.ConnectionClosed(None, None)  # it closed first
                return answer.result()
        finally:
            self._sent_calls.pop(unique_id, None)

    async def call(self, payload: Any, suppress: bool = True, unique_id: Optional[str] = None,
                   skip_schema_validation: bool = False) -> Any:
        result = await super().call(payload, suppress, unique_id, skip_schema_validation)
        action = type(payload).__name__
        if action in PROFILE_ACTIONS and is_dataclass(payload):
            self.system.profile_answered(self.station, action, asdict(payload),
                                         getattr(result, "status", None))
        if (isinstance(payload, call.ChangeConfiguration) and payload.key == "AuthorizationKey"
                and getattr(result, "status", None) == ConfigurationStatus.accepted):
            self.system.authorization_key_changed(self.station, payload.value)
        return result

    async def close_connection(self) -> None:
        await self._connection.close(1000, "replaced by a new connection")

    def on_frame(self, record: dict[str, Any]) -> None:
        self.system.frame(self, record)

    def on_ignored(self, raw: Any, reason: str) -> None:
        super().on_ignored(raw, reason)
        self.system.frame_ignored(self, raw, reason)

    @on(Action.boot_notification)
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str,
                             **kwargs: Any) -> call_result.BootNotification:
        self.system.handlers.booted(self, charge_point_vendor=charge_point_vendor,
                                    charge_point_model=charge_point_model, **kwargs)
        return self.system.boot_notification(self)

    @after(Action.boot_notification)
    def after_boot_notification(self, **kwargs: Any) -> None:
        self.system.start_scenario(self.station)

    @on(Action.heartbeat)
    def on_heartbeat(self) -> call_result.Heartbeat:
        return self.system.heartbeat()

    @on(Action.status_notification)
    def on_status_notification(self, connector_id: int, error_code: str, status: str,
                               **kwargs: Any) -> call_result.StatusNotification:
        return self.system.handlers.status_notification(self, connector_id, error_code, status,
                                                        **kwargs)

    @on(Action.authorize)
    def on_authorize(self, id_tag: str) -> call_result.Authorize:
        return self.system.authorize(id_tag)

    @on(Action.start_transaction)
    def on_start_transaction(self, connector_id: int, id_tag: str, meter_start: int,
                             timestamp: str, **kwargs: Any) -> call_result.StartTransaction:
        return self.system.start_transaction(self, id_tag, meter_start, timestamp, connector_id)

    @on(Action.stop_transaction)
    def on_stop_transaction(self, meter_stop: int, timestamp: str, transaction_id: int,
                            reason: Optional[str] = None, id_tag: Optional[str] = None,
                            transaction_data: Optional[list] = None,
                            **kwargs: Any) -> call_result.StopTransaction:
        return self.system.stop_transaction(self, transaction_id, meter_stop, timestamp, reason,
                                            id_tag, transaction_data)

    @on(Action.meter_values)
    def on_meter_values(self, connector_id: int, meter_value: list,
                        transaction_id: Optional[int] = None,
                        **kwargs: Any) -> call_result.MeterValues:
        return self.system.meter_values(self, meter_value, transaction_id, connector_id)

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **kwargs: Any) -> call_result.DataTransfer:
        return self.system.data_transfer(vendor_id)

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status_notification(
            self, **kwargs: Any) -> call_result.DiagnosticsStatusNotification:
        self.system.handlers.report(self, Action.diagnostics_status_notification, kwargs)
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status_notification(
            self, **kwargs: Any) -> call_result.FirmwareStatusNotification:
        self.system.handlers.report(self, Action.firmware_status_notification, kwargs)
        return call_result.FirmwareStatusNotification()

    @on(Action.log_status_notification)
    def on_log_status_notification(self, **kwargs: Any) -> call_result.LogStatusNotification:
        self.system.handlers.report(self, Action.log_status_notification, kwargs)
        return call_result.LogStatusNotification()

    @on(Action.signed_firmware_status_notification)
    def on_signed_firmware_status_notification(
            self, **kwargs: Any) -> call_result.SignedFirmwareStatusNotification:
        self.system.handlers.report(self, Action.signed_firmware_status_notification, kwargs)
        return call_result.SignedFirmwareStatusNotification()

    @on(Action.security_event_notification)
    def on_security_event_notification(
            self, **kwargs: Any) -> call_result.SecurityEventNotification:
        self.system.handlers.report(self, Action.security_event_notification, kwargs)
        return call_result.SecurityEventNotification()

    @on(Action.sign_certificate)
    def on_sign_certificate(self, csr: str) -> call_result.SignCertificate:
        return self.system.handlers.sign_certificate(self, csr)

    @after(Action.sign_certificate)
    def after_sign_certificate(self, **kwargs: Any) -> None:
        self.system.handlers.send_certificate(self)


class ScenarioLink:
    """An endpoint as the scenario runner sees it (scenario.Link): a CALLERROR raises, and a
    closed connection is :class:`LinkClosed`."""

    def __init__(self, endpoint: ocpp16.Endpoint) -> None:
        self.endpoint = endpoint

    async def call(self, request: Any) -> Any:
        try:
            return await self.endpoint.call(request, suppress=False)
        except websockets.ConnectionClosed:
            raise LinkClosed from None
