"""The charge point's end of an OCPP connection: each request the central system may send
(OCPP 1.6J's six feature profiles and the security extension) is handed to the station's
feature modules; ``@after`` handlers act once the answer is sent, where the spec orders it
(TriggerMessage, Reset)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ocpp.routing import after, on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, DataTransferStatus

from evsim.constants import RESPONSE_TIMEOUT_S
from evsim.ocpp16 import endpoint as ocpp16
from evsim.ocpp16 import fast

if TYPE_CHECKING:
    from evsim.cp.station import Station

log = logging.getLogger("cp")


class CpEndpoint(ocpp16.Endpoint):
    side = "cp"
    fast_calls = True

    def __init__(self, charge_point_id: str, connection: Any, station: Station) -> None:
        super().__init__(charge_point_id, connection, response_timeout=RESPONSE_TIMEOUT_S)
        self.station = station
        self._unique_id_generator = fast.message_id

    def on_frame(self, record: dict[str, Any]) -> None:
        """Log and record a frame (secret configuration values come here already redacted)."""
        if not self.station.records_traffic and not log.isEnabledFor(logging.INFO):
            return
        arrow = "csms->cp" if record["direction"] == "received" else "cp->csms"
        description = f"{arrow} {record['message_type']} {record['action'] or '?'}"
        if log.isEnabledFor(logging.INFO):  # a fleet is quiet: no payload made into text
            log.info("%s %s", description, ocpp16.compact(record["payload"]))
        self.station.event("OCPP_MESSAGE", description, record)

    async def _send(self, message: str) -> None:
        """Nothing leaves before what it carries is stored: a grouped store's changes so far
        are committed first (with the rest of the turn's, not one commit a frame)."""
        await self.station.store.committed()
        await super()._send(message)

    # -- Core -----------------------------------------------------------------------------------

    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag: str, connector_id: int | None = None,
                        charging_profile: dict | None = None,
                        **kwargs: Any) -> call_result.RemoteStartTransaction:
        return call_result.RemoteStartTransaction(
            status=self.station.remote_start(id_tag, connector_id, charging_profile))

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id: int) -> call_result.RemoteStopTransaction:
        return call_result.RemoteStopTransaction(status=self.station.remote_stop(transaction_id))

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list | None = None) -> call_result.GetConfiguration:
        known, unknown = self.station.config.get(key)
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> call_result.ChangeConfiguration:
        return call_result.ChangeConfiguration(
            status=self.station.change_configuration(key, value))

    @on(Action.change_availability)
    def on_change_availability(self, connector_id: int, type: str
                               ) -> call_result.ChangeAvailability:
        return call_result.ChangeAvailability(
            status=self.station.availability.change(connector_id, type))

    @on(Action.clear_cache)
    def on_clear_cache(self) -> call_result.ClearCache:
        return call_result.ClearCache(status=self.station.auth.clear_cache())

    @on(Action.reset)
    def on_reset(self, type: str) -> call_result.Reset:
        return call_result.Reset(status=self.station.availability.reset(type))

    @after(Action.reset)
    def after_reset(self, type: str) -> None:
        if self.station.availability.resetting:
            self.station.spawn(self.station.availability.run_reset(type))

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, connector_id: int) -> call_result.UnlockConnector:
        return call_result.UnlockConnector(
            status=await self.station.availability.unlock(connector_id))

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **kwargs: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)

    # -- Smart charging -------------------------------------------------------------------------

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict
                                      ) -> call_result.SetChargingProfile:
        return call_result.SetChargingProfile(
            status=await self.station.smart.set_profile(connector_id, cs_charging_profiles))

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(self, **criteria: Any) -> call_result.ClearChargingProfile:
        return call_result.ClearChargingProfile(status=await self.station.smart.clear(**criteria))

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(self, connector_id: int, duration: int,
                                  charging_rate_unit: str | None = None
                                  ) -> call_result.GetCompositeSchedule:
        return call_result.GetCompositeSchedule(
            **self.station.smart.composite(connector_id, duration, charging_rate_unit))

    # -- Reservation ----------------------------------------------------------------------------

    @on(Action.reserve_now)
    def on_reserve_now(self, connector_id: int, expiry_date: str, id_tag: str,
                       reservation_id: int, parent_id_tag: str | None = None
                       ) -> call_result.ReserveNow:
        return call_result.ReserveNow(status=self.station.reservations.reserve(
            connector_id, expiry_date, id_tag, reservation_id, parent_id_tag))

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, reservation_id: int) -> call_result.CancelReservation:
        return call_result.CancelReservation(
            status=self.station.reservations.cancel(reservation_id))

    # -- Local authorization list ---------------------------------------------------------------

    @on(Action.send_local_list)
    def on_send_local_list(self, list_version: int, update_type: str,
                           local_authorization_list: list | None = None
                           ) -> call_result.SendLocalList:
        return call_result.SendLocalList(status=self.station.auth.send_local_list(
            list_version, update_type, local_authorization_list))

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self) -> call_result.GetLocalListVersion:
        return call_result.GetLocalListVersion(
            list_version=self.station.auth.local.reported_version)

    # -- Remote trigger -------------------------------------------------------------------------

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None
                           ) -> call_result.TriggerMessage:
        return call_result.TriggerMessage(
            status=self.station.triggers.accept(requested_message, connector_id))

    @after(Action.trigger_message)
    def after_trigger_message(self, requested_message: str, connector_id: int | None = None
                              ) -> None:
        if self.station.triggers.accept(requested_message, connector_id) == "Accepted":
            self.station.triggers.send(requested_message, connector_id)

    @on(Action.extended_trigger_message)
    def on_extended_trigger_message(self, requested_message: str,
                                    connector_id: int | None = None
                                    ) -> call_result.ExtendedTriggerMessage:
        return call_result.ExtendedTriggerMessage(
            status=self.station.triggers.accept(requested_message, connector_id, extended=True))

    @after(Action.extended_trigger_message)
    def after_extended_trigger_message(self, requested_message: str,
                                       connector_id: int | None = None) -> None:
        if self.station.triggers.accept(requested_message, connector_id, True) == "Accepted":
            self.station.triggers.send(requested_message, connector_id, extended=True)

    # -- Firmware management --------------------------------------------------------------------

    @on(Action.get_diagnostics)
    def on_get_diagnostics(self, location: str, **options: Any) -> call_result.GetDiagnostics:
        return call_result.GetDiagnostics(
            file_name=self.station.diagnostics.get_diagnostics(location, **options))

    @on(Action.update_firmware)
    def on_update_firmware(self, location: str, retrieve_date: str,
                           **options: Any) -> call_result.UpdateFirmware:
        self.station.firmware.update(location, retrieve_date, **options)
        return call_result.UpdateFirmware()

    # -- Security extension ---------------------------------------------------------------------

    @on(Action.get_log)
    def on_get_log(self, log: dict, log_type: str, request_id: int,
                   **options: Any) -> call_result.GetLog:
        return call_result.GetLog(**self.station.diagnostics.get_log(log, log_type, request_id,
                                                                     **options))

    @on(Action.signed_update_firmware)
    def on_signed_update_firmware(self, request_id: int, firmware: dict,
                                  **options: Any) -> call_result.SignedUpdateFirmware:
        return call_result.SignedUpdateFirmware(
            status=self.station.firmware.signed_update(request_id, firmware, **options))

    @on(Action.install_certificate)
    def on_install_certificate(self, certificate_type: str, certificate: str
                               ) -> call_result.InstallCertificate:
        return call_result.InstallCertificate(
            status=self.station.certificates.install(certificate_type, certificate))

    @on(Action.get_installed_certificate_ids)
    def on_get_installed_certificate_ids(self, certificate_type: str
                                         ) -> call_result.GetInstalledCertificateIds:
        return call_result.GetInstalledCertificateIds(
            **self.station.certificates.installed_ids(certificate_type))

    @on(Action.delete_certificate)
    def on_delete_certificate(self, certificate_hash_data: dict
                              ) -> call_result.DeleteCertificate:
        return call_result.DeleteCertificate(
            status=self.station.certificates.delete(certificate_hash_data))

    @on(Action.certificate_signed)
    def on_certificate_signed(self, certificate_chain: str) -> call_result.CertificateSigned:
        return call_result.CertificateSigned(
            status=self.station.certificates.signed(certificate_chain))
