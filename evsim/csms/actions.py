"""The OCPP 1.6J messages by direction, as the control API names them, and the schema checks of
their payloads.

The central system may send every message of OCPP 1.6's six feature profiles and of the security
extension (OCPP 1.6 Security Whitepaper, edition 3) that goes to a charge point; the API names
each in kebab case (``RemoteStartTransaction`` is ``remote-start-transaction``). A body is checked
against the message's 1.6 JSON schema as the ``ocpp`` library ships and applies it
(:func:`ocpp.messages.validate_payload`), so a body the library would refuse to send is refused
with the schema's own reason before anything is sent.
"""
from __future__ import annotations

import re
from typing import Any

from jsonschema.exceptions import ValidationError as SchemaValidationError
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallResult, validate_payload

from evsim.ocpp16 import endpoint as ocpp16

OCPP_VERSION = "1.6"
REASON_CHARS = 300

#: Central system -> charge point, by feature profile (OCPP 1.6 §3, Security Whitepaper §1).
PROFILES: dict[str, tuple[str, ...]] = {
    "Core": ("ChangeAvailability", "ChangeConfiguration", "ClearCache", "DataTransfer",
             "GetConfiguration", "RemoteStartTransaction", "RemoteStopTransaction", "Reset",
             "UnlockConnector"),
    "FirmwareManagement": ("GetDiagnostics", "UpdateFirmware"),
    "LocalAuthListManagement": ("GetLocalListVersion", "SendLocalList"),
    "Reservation": ("CancelReservation", "ReserveNow"),
    "SmartCharging": ("ClearChargingProfile", "GetCompositeSchedule", "SetChargingProfile"),
    "RemoteTrigger": ("TriggerMessage",),
    "Security": ("CertificateSigned", "DeleteCertificate", "ExtendedTriggerMessage",
                 "GetInstalledCertificateIds", "GetLog", "InstallCertificate",
                 "SignedUpdateFirmware"),
}

#: Charge point -> central system: every one is answered, recorded and shown.
CHARGE_POINT_MESSAGES = (
    "Authorize", "BootNotification", "DataTransfer", "DiagnosticsStatusNotification",
    "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StartTransaction",
    "StatusNotification", "StopTransaction", "LogStatusNotification",
    "SecurityEventNotification", "SignCertificate", "SignedFirmwareStatusNotification")



def kebab(action: str) -> str:
    """``GetCompositeSchedule`` -> ``get-composite-schedule``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", action).lower()


def event_type(action: str) -> str:
    """The MemoryBank event type of a charge point's message: ``STATUS_NOTIFICATION``."""
    return kebab(action).replace("-", "_").upper()


#: kebab-case name -> OCPP action, for every message the central system may send.
ACTIONS: dict[str, str] = {kebab(action): action for actions in PROFILES.values()
                           for action in actions}
PROFILE_OF: dict[str, str] = {action: profile for profile, actions in PROFILES.items()
                              for action in actions}


class SchemaError(ValueError):
    """A payload that breaks its message's 1.6 schema; the message is the reason, one line."""


async def check_request(action: str, payload: Any) -> None:
    """SchemaError unless ``payload`` (camelCase, as the spec writes it) is a valid CALL of
    ``action``."""
    await _check(Call("check", action, payload))


async def check_response(action: str, payload: Any) -> None:
    """SchemaError unless ``payload`` is a valid CALLRESULT to ``action``."""
    await _check(CallResult("check", payload, action))


async def _check(message: Call | CallResult) -> None:
    if not isinstance(message.payload, dict):
        raise SchemaError("the payload must be a JSON object")
    try:
        await validate_payload(message, OCPP_VERSION)
    except OCPPError as exc:
        raise SchemaError(_without_secrets(reason(exc), message.payload)) from None
    except Exception as exc:  # noqa: BLE001 - the library's own failure on a value (1e300)
        raise SchemaError(f"a value the schema cannot check: {type(exc).__name__}") from None


def _without_secrets(text: str, payload: dict) -> str:
    """A schema error repeats the value it found wrong: not when that may be a secret key."""
    if ocpp16.redact(payload) != payload:
        return "the value of a secret configuration key breaks the schema (not shown)"
    return text


def reason(error: OCPPError) -> str:
    """Where the payload breaks the schema and how, from the schema error the library raised
    its OCPP error for (the library's own text repeats the whole payload)."""
    cause = error.__cause__ or error.__context__
    if isinstance(cause, SchemaValidationError):
        where = "/".join(str(part) for part in cause.absolute_path)
        text = cause.message
        if cause.validator in ("maxLength", "maxItems"):  # the message repeats the value
            text = f"longer than {cause.validator_value}"
        return _short(f"{where}: {text}" if where else text)
    details = error.details if isinstance(error.details, dict) else {}
    return _short(str(details.get("cause") or error.description))


def _short(text: str, limit: int = REASON_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
