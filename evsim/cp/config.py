"""The configuration keys of the charge point (GetConfiguration / ChangeConfiguration).

Every key OCPP 1.6 names for the feature profiles the charge point supports (Core,
FirmwareManagement, LocalAuthListManagement, Reservation, SmartCharging, RemoteTrigger) and the
security extension's keys. Writable keys are kept in the state file, so a change survives a
restart; ``AuthorizationKey`` is write-only: GetConfiguration never shows its value.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ocpp.v16.enums import ConfigurationStatus

from evsim.ocpp16 import profiles
from evsim.security.keys import valid_key

log = logging.getLogger("cp")

#: The measurands the charge point can meter (MeterValuesSampledData and its kin).
MEASURANDS = ("Current.Import", "Voltage", "Power.Active.Import", "Energy.Active.Import.Register",
              "Current.Offered", "Power.Offered")
DEFAULT_MEASURANDS = "Current.Import,Voltage,Power.Active.Import,Energy.Active.Import.Register"
MAX_MEASURANDS = len(MEASURANDS)
LOCAL_LIST_MAX = 1000
SEND_LOCAL_LIST_MAX = 100
CERTIFICATE_STORE_MAX = 10
CERTIFICATE_CHAIN_MAX = 10000
DAY = 86400


@dataclass(frozen=True)
class Key:
    """One key: its kind (int, bool, csl, str), default, range, and whether it is writable."""

    kind: str
    default: Any
    writable: bool = True
    low: int = 0
    high: int = DAY
    write_only: bool = False
    check: Callable[[Any, Any], bool] | None = None  # (new value, current value) -> valid


def _authorization_key(value: str, _current: Any) -> bool:
    return valid_key(value)


def _measurands(value: str, _current: Any) -> bool:
    items = [item.strip() for item in value.split(",") if item.strip()]
    return len(items) <= MAX_MEASURANDS and all(item in MEASURANDS for item in items)


def _raise_only(value: int, current: int) -> bool:
    return value >= current


def usable_profile(url: str, key: str | None, client_certificate: bool) -> int:
    """The highest security profile a charge point could connect with now: over ws://, 1 with
    an AuthorizationKey (else 0); over wss://, 3 with a client certificate (else 2)."""
    if urlsplit(url).scheme != "wss":
        return 1 if key else 0
    return 3 if client_certificate else 2


KEYS: dict[str, Key] = {
    # Core
    "AllowOfflineTxForUnknownId": Key("bool", False),
    "AuthorizationCacheEnabled": Key("bool", True),
    "AuthorizeRemoteTxRequests": Key("bool", False),
    "ClockAlignedDataInterval": Key("int", 0),
    "ConnectionTimeOut": Key("int", 60, low=1),
    "ConnectorPhaseRotation": Key("csl", "0.RST,1.RST", check=lambda v, _: True),
    "ConnectorPhaseRotationMaxLength": Key("int", 2, writable=False),
    "GetConfigurationMaxKeys": Key("int", 100, writable=False),
    "HeartbeatInterval": Key("int", 60),
    "LocalAuthorizeOffline": Key("bool", True),
    "LocalPreAuthorize": Key("bool", False),
    "MeterValuesAlignedData": Key("csl", "Energy.Active.Import.Register", check=_measurands),
    "MeterValuesAlignedDataMaxLength": Key("int", MAX_MEASURANDS, writable=False),
    "MeterValuesSampledData": Key("csl", DEFAULT_MEASURANDS, check=_measurands),
    "MeterValuesSampledDataMaxLength": Key("int", MAX_MEASURANDS, writable=False),
    "MeterValueSampleInterval": Key("int", 1),
    "MinimumStatusDuration": Key("int", 0),
    "NumberOfConnectors": Key("int", 1, writable=False),
    "ResetRetries": Key("int", 1, high=10),
    "StopTransactionOnEVSideDisconnect": Key("bool", True),
    "StopTransactionOnInvalidId": Key("bool", True),
    "StopTxnAlignedData": Key("csl", "", check=_measurands),
    "StopTxnAlignedDataMaxLength": Key("int", MAX_MEASURANDS, writable=False),
    "StopTxnSampledData": Key("csl", "", check=_measurands),
    "StopTxnSampledDataMaxLength": Key("int", MAX_MEASURANDS, writable=False),
    "SupportedFeatureProfiles": Key("csl", "Core,FirmwareManagement,LocalAuthListManagement,"
                                           "Reservation,SmartCharging,RemoteTrigger",
                                    writable=False),
    "SupportedFeatureProfilesMaxLength": Key("int", 6, writable=False),
    "TransactionMessageAttempts": Key("int", 3, low=1, high=100),
    "TransactionMessageRetryInterval": Key("int", 10),
    "UnlockConnectorOnEVSideDisconnect": Key("bool", True),
    "WebSocketPingInterval": Key("int", 0),
    # Local Auth List Management
    "LocalAuthListEnabled": Key("bool", True),
    "LocalAuthListMaxLength": Key("int", LOCAL_LIST_MAX, writable=False),
    "SendLocalListMaxLength": Key("int", SEND_LOCAL_LIST_MAX, writable=False),
    # Reservation
    "ReserveConnectorZeroSupported": Key("bool", True, writable=False),
    # Smart Charging
    "ChargeProfileMaxStackLevel": Key("int", profiles.MAX_STACK_LEVEL, writable=False),
    "ChargingScheduleAllowedChargingRateUnit": Key("csl", "Current,Power", writable=False),
    "ChargingScheduleMaxPeriods": Key("int", profiles.MAX_PERIODS, writable=False),
    "ConnectorSwitch3to1PhaseSupported": Key("bool", False, writable=False),
    "MaxChargingProfilesInstalled": Key("int", profiles.MAX_PROFILES, writable=False),
    # Security extension
    "AdditionalRootCertificateCheck": Key("bool", False, writable=False),
    "AuthorizationKey": Key("str", "", write_only=True, check=_authorization_key),
    "CertificateSignedMaxChainSize": Key("int", CERTIFICATE_CHAIN_MAX, writable=False),
    "CertificateStoreMaxLength": Key("int", CERTIFICATE_STORE_MAX, writable=False),
    "CpoName": Key("str", "EV Charging Simulator", check=lambda v, _: 0 < len(v) <= 500),
    "SecurityProfile": Key("int", 0, high=3, check=_raise_only),
}


def text(key: Key, value: Any) -> str:
    """A value as GetConfiguration carries it."""
    if key.kind == "bool":
        return "true" if value else "false"
    return str(value)


def parse(key: Key, value: str) -> Any:
    """A ChangeConfiguration value as the key's kind; ValueError when it is none."""
    if key.kind == "int":
        return int(value)
    if key.kind == "bool":
        if value.strip().lower() not in ("true", "false"):
            raise ValueError(f"not true or false: {value!r}")
        return value.strip().lower() == "true"
    if key.kind == "csl":
        return ",".join(item.strip() for item in value.split(",") if item.strip())
    return value


class Configuration:
    """The values of the writable keys; ``values`` restores those kept from an earlier run.

    ``changed(key, value)``, when set, hears of every accepted change (to persist it, or to act
    on it).
    """

    #: The writable keys and their defaults.
    WRITABLE = {name: key.default for name, key in KEYS.items() if key.writable}
    READ_ONLY = {name: text(key, key.default) for name, key in KEYS.items() if not key.writable}
    #: Intervals may be 0: no heartbeat; for MeterValueSampleInterval, no sampled data (OCPP 1.6).
    MINIMUM = {name: key.low for name, key in KEYS.items() if key.kind == "int" and key.low}
    #: A day at most: a longer sleep than asyncio can schedule would kill the task using it.
    MAXIMUM = {name: key.high for name, key in KEYS.items() if key.kind == "int"}

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        #: The highest SecurityProfile the charge point could use now (see usable_profile): a
        #: raise past it is Rejected, else the next start could not connect. cp.py sets it.
        self.highest_profile: Callable[[], int] = lambda: KEYS["SecurityProfile"].high
        self.values: dict[str, Any] = dict(self.WRITABLE)
        for name, value in (values or {}).items():
            if name in self.values and self.valid(name, value, initial=True):
                self.values[name] = value

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def measurands(self, name: str) -> list[str]:
        """A measurand list key as a list."""
        return [item for item in self.values[name].split(",") if item]

    def valid(self, name: str, value: Any, initial: bool = False) -> bool:
        key = KEYS[name]
        kinds = {"int": int, "bool": bool, "csl": str, "str": str}
        if not isinstance(value, kinds[key.kind]) or (key.kind == "int" and isinstance(value,
                                                                                       bool)):
            return False
        if key.kind == "int" and not key.low <= value <= key.high:
            return False
        if key.check is not None and not initial:
            return key.check(value, self.values.get(name, key.default))
        return True

    def get(self, names: Sequence[str] | None = None) -> tuple[list[dict], list[str]]:
        """(known keys as GetConfiguration.conf lists them, unknown keys). A write-only key is
        listed without its value."""
        wanted = list(names) if names else list(KEYS)
        known, unknown = [], []
        for name in wanted:
            key = KEYS.get(name)
            if key is None:
                unknown.append(name)
                continue
            entry: dict[str, Any] = {"key": name, "readonly": not key.writable}
            if not key.write_only:
                entry["value"] = text(key, self.values.get(name, key.default))
            known.append(entry)
        return known, unknown

    def visible(self) -> dict[str, str]:
        """Every key and its value as text, write-only keys left out (for the API and the
        diagnostics archive)."""
        return {entry["key"]: entry["value"] for entry in self.get()[0] if "value" in entry}

    def change(self, name: str, value: str) -> str:
        key = KEYS.get(name)
        if key is None:
            return ConfigurationStatus.not_supported
        if not key.writable:
            return ConfigurationStatus.rejected
        try:
            parsed = parse(key, value)
        except ValueError:
            return ConfigurationStatus.rejected
        if not self.valid(name, parsed):
            return ConfigurationStatus.rejected
        if name == "SecurityProfile" and parsed > self.highest_profile():
            log.warning("SecurityProfile %d rejected: the charge point could not connect with "
                        "it, %d at most", parsed, self.highest_profile())
            return ConfigurationStatus.rejected
        self.values[name] = parsed
        return ConfigurationStatus.accepted
