"""The configuration keys of the charge point (GetConfiguration / ChangeConfiguration)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from ocpp.v16.enums import ConfigurationStatus

from evsim.ocpp16 import profiles


class Configuration:
    """Writable keys hold whole numbers within a range; read-only keys describe the charge
    point. ``values`` restores writable keys kept from an earlier run."""

    WRITABLE = {"HeartbeatInterval": 60, "MeterValueSampleInterval": 1,
                "TransactionMessageAttempts": 3, "TransactionMessageRetryInterval": 10}
    READ_ONLY = {"NumberOfConnectors": "1", "AuthorizeRemoteTxRequests": "false",
                 "SupportedFeatureProfiles": "Core,SmartCharging",
                 "MeterValuesSampledData": "Current.Import,Voltage,Power.Active.Import,"
                                           "Energy.Active.Import.Register",
                 "ChargeProfileMaxStackLevel": str(profiles.MAX_STACK_LEVEL),
                 "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
                 "ChargingScheduleMaxPeriods": str(profiles.MAX_PERIODS),
                 "MaxChargingProfilesInstalled": str(profiles.MAX_PROFILES)}
    #: Intervals may be 0: no heartbeat; for MeterValueSampleInterval, no sampled data (OCPP 1.6).
    MINIMUM = {"TransactionMessageAttempts": 1}
    #: A day at most: a longer sleep than asyncio can schedule would kill the task using it.
    MAXIMUM = {"HeartbeatInterval": 86400, "MeterValueSampleInterval": 86400,
               "TransactionMessageAttempts": 100, "TransactionMessageRetryInterval": 86400}

    def __init__(self, values: Mapping[str, int] | None = None) -> None:
        self.values = dict(self.WRITABLE)
        for key, value in (values or {}).items():
            if key in self.values and self.valid(key, value):
                self.values[key] = value

    def __getitem__(self, key: str) -> int:
        return self.values[key]

    def valid(self, key: str, value: object) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool)
                and self.MINIMUM.get(key, 0) <= value <= self.MAXIMUM[key])

    def get(self, keys: Sequence[str] | None = None) -> tuple[list[dict], list[str]]:
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
        if not self.valid(key, number):
            return ConfigurationStatus.rejected
        self.values[key] = number
        return ConfigurationStatus.accepted
