"""The charge point's end of an OCPP connection: each request goes to the station."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, DataTransferStatus

from evsim.constants import RESPONSE_TIMEOUT_S
from evsim.ocpp16 import endpoint as ocpp16

if TYPE_CHECKING:
    from evsim.cp.station import Station

log = logging.getLogger("cp")


class CpEndpoint(ocpp16.Endpoint):
    side = "cp"

    def __init__(self, charge_point_id: str, connection: Any, station: Station) -> None:
        super().__init__(charge_point_id, connection, response_timeout=RESPONSE_TIMEOUT_S)
        self.station = station

    def on_frame(self, record: dict[str, Any]) -> None:
        arrow = "csms->cp" if record["direction"] == "received" else "cp->csms"
        description = f"{arrow} {record['message_type']} {record['action'] or '?'}"
        log.info("%s %s", description, ocpp16.compact(record["payload"]))
        self.station.event("OCPP_MESSAGE", description, record)

    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag: str, connector_id: int | None = None,
                        charging_profile: dict | None = None,
                        **kwargs: Any) -> call_result.RemoteStartTransaction:
        return call_result.RemoteStartTransaction(
            status=self.station.remote_start(id_tag, connector_id, charging_profile))

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id: int) -> call_result.RemoteStopTransaction:
        return call_result.RemoteStopTransaction(status=self.station.remote_stop(transaction_id))

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict
                                      ) -> call_result.SetChargingProfile:
        return call_result.SetChargingProfile(
            status=await self.station.set_charging_profile(connector_id, cs_charging_profiles))

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(self, **criteria: Any) -> call_result.ClearChargingProfile:
        return call_result.ClearChargingProfile(
            status=await self.station.clear_charging_profile(**criteria))

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list | None = None) -> call_result.GetConfiguration:
        known, unknown = self.station.config.get(key)
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> call_result.ChangeConfiguration:
        return call_result.ChangeConfiguration(
            status=self.station.change_configuration(key, value))

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **kwargs: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)
