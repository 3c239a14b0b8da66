"""Smart charging (OCPP 1.6 §3.13, §5.16, §5.5, §5.7): SetChargingProfile, ClearChargingProfile,
GetCompositeSchedule over the stacked ChargePointMaxProfile, TxDefaultProfile and TxProfile.

The rules of the stack live in :mod:`evsim.ocpp16.profiles`; here they meet the station: the
CAN limit follows the composite schedule after every change, and the profiles other than a
TxProfile (which ends with its transaction) are kept in the state file.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ocpp.v16.enums import (
    ChargingProfileStatus,
    ClearChargingProfileStatus,
    GetCompositeScheduleStatus,
)

from evsim.ocpp16 import profiles
from evsim.ocpp16.profiles import ProfileError, ProfileStore
from evsim.timefmt import ocpp_time

if TYPE_CHECKING:
    from evsim.cp.station import Station

log = logging.getLogger("cp")


class SmartCharging:
    def __init__(self, station: Station, store: ProfileStore, stored: list | None) -> None:
        self.station = station
        self.store = store
        for item in stored or []:
            try:
                store.install(item["connector_id"], profiles.parse(item["profile"]),
                              raw=item["profile"])
            except (ProfileError, KeyError, TypeError) as exc:
                log.warning("a stored charging profile was dropped: %s", exc)

    def _persist(self) -> None:
        kept = [{"connector_id": i.connector_id, "profile": i.raw} for i in self.store.installed
                if i.raw is not None and i.profile.purpose != "TxProfile"]
        self.station.store.put(self.station.id, charging_profiles=kept)

    async def set_profile(self, connector_id: int, profile_data: dict) -> str:
        tx = self.station.transaction
        try:
            self.store.install(connector_id, profiles.parse(profile_data),
                               tx.transaction_id if tx else None, tx is not None, raw=profile_data)
        except ProfileError as exc:
            log.warning("SetChargingProfile rejected: %s", exc)
            return ChargingProfileStatus.rejected
        self._persist()
        await self.station.limit_changed()
        return ChargingProfileStatus.accepted

    async def clear(self, **criteria: Any) -> str:
        removed = self.store.clear(criteria.get("id"), criteria.get("connector_id"),
                                   criteria.get("charging_profile_purpose"),
                                   criteria.get("stack_level"))
        self._persist()
        await self.station.limit_changed()
        return ClearChargingProfileStatus.accepted if removed else ClearChargingProfileStatus.unknown

    def composite(self, connector_id: int, duration: int, unit: str | None = None
                  ) -> dict[str, Any]:
        """GetCompositeSchedule.conf's fields (snake_case), Rejected for an unknown connector."""
        if connector_id not in (0, 1) or duration < 0:
            return {"status": GetCompositeScheduleStatus.rejected}
        unit = unit or "A"
        now = self.station.clock.now()
        tx = self.station.transaction
        periods = self.store.composite(now, duration, unit, tx.started_at if tx else None)
        start = ocpp_time(now)
        return {"status": GetCompositeScheduleStatus.accepted, "connector_id": connector_id,
                "schedule_start": start,
                "charging_schedule": {"duration": duration, "start_schedule": start,
                                      "charging_rate_unit": unit,
                                      "charging_schedule_period": [
                                          {"start_period": p.start_s, "limit": p.limit}
                                          for p in periods]}}

    def state(self) -> list[dict[str, Any]]:
        return [{"connectorId": i.connector_id, "id": i.profile.id,
                 "purpose": i.profile.purpose, "stackLevel": i.profile.stack_level}
                for i in self.store.installed]
