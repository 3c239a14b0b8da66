"""Test helpers: a plain charge point written with the ocpp library only, and bank reads."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PlainChargePoint(ChargePoint):
    """A charge point that only uses the ocpp library: accepts what the central system asks and
    reports the transactions it starts and stops."""

    def __init__(self, id: str, connection) -> None:
        super().__init__(id, connection, response_timeout=30)
        self.requests: list[tuple[str, dict]] = []
        self.transaction_id = None
        self.stopped = asyncio.Event()
        self.first_request = asyncio.Event()

    def _note(self, action: str, payload: dict) -> None:
        self.requests.append((action, payload))
        self.first_request.set()

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id, cs_charging_profiles):
        self._note("SetChargingProfile", cs_charging_profiles)
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag, **kwargs):
        self._note("RemoteStartTransaction", {"id_tag": id_tag, **kwargs})
        return call_result.RemoteStartTransaction(status="Accepted")

    @after(Action.remote_start_transaction)
    async def after_remote_start(self, id_tag, **kwargs):
        result = await self.call(call.StartTransaction(connector_id=1, id_tag=id_tag,
                                                       meter_start=100, timestamp=now_iso()))
        self.transaction_id = result.transaction_id

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id):
        self._note("RemoteStopTransaction", {"transaction_id": transaction_id})
        return call_result.RemoteStopTransaction(status="Accepted")

    @after(Action.remote_stop_transaction)
    async def after_remote_stop(self, transaction_id):
        await self.call(call.StopTransaction(meter_stop=110, timestamp=now_iso(),
                                             transaction_id=transaction_id, reason="Remote"))
        self.stopped.set()


def meter_value(amps: float, energy_wh: float) -> list[dict]:
    return [{"timestamp": now_iso(), "sampledValue": [
        {"value": f"{amps:.1f}", "measurand": "Current.Import", "unit": "A"},
        {"value": "230.0", "measurand": "Voltage", "unit": "V"},
        {"value": f"{amps * 0.23:.3f}", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": f"{energy_wh:.1f}", "measurand": "Energy.Active.Import.Register",
         "unit": "Wh"}]}]
