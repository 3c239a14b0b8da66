"""Remote trigger (OCPP 1.6 §5.17) and the security extension's ExtendedTriggerMessage: the
central system asks for a message, the charge point answers Accepted and then sends it (the
endpoint calls :meth:`Triggers.send` once the answer is out, as the spec orders)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ocpp.v16.enums import TriggerMessageStatus

from evsim.constants import CONNECTOR_ID
from evsim.cp import metering

if TYPE_CHECKING:
    from evsim.cp.station import Station

#: What TriggerMessage may ask for, and what ExtendedTriggerMessage adds.
TRIGGERS = ("BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
            "Heartbeat", "MeterValues", "StatusNotification")
EXTENDED = ("BootNotification", "FirmwareStatusNotification", "Heartbeat", "LogStatusNotification",
            "MeterValues", "SignChargePointCertificate", "StatusNotification")
#: Messages that concern a connector when one is named.
PER_CONNECTOR = ("MeterValues", "StatusNotification")


class Triggers:
    def __init__(self, station: Station) -> None:
        self.station = station

    def accept(self, requested: str, connector_id: int | None, extended: bool = False) -> str:
        known = EXTENDED if extended else TRIGGERS
        if requested not in known:
            return TriggerMessageStatus.not_implemented
        if connector_id is not None and connector_id not in (0, CONNECTOR_ID):
            return TriggerMessageStatus.rejected
        return TriggerMessageStatus.accepted

    def send(self, requested: str, connector_id: int | None, extended: bool = False) -> None:
        """Queue the requested message (after an Accepted answer)."""
        station = self.station
        if requested == "BootNotification":
            station.send_boot_notification()
        elif requested == "Heartbeat":
            station.send("Heartbeat")
        elif requested == "MeterValues":
            metering.take_sample(station, "Trigger")
        elif requested == "StatusNotification":
            if connector_id in (None, 0):
                station.availability.report_zero(always=True)
            if connector_id in (None, CONNECTOR_ID):
                station.report_status(always=True)
        elif requested == "DiagnosticsStatusNotification":
            station.send("DiagnosticsStatusNotification", status=station.diagnostics.status)
        elif requested == "FirmwareStatusNotification":
            station.firmware.notify(extended)
        elif requested == "LogStatusNotification":
            station.diagnostics.notify_log()
        elif requested == "SignChargePointCertificate":
            station.spawn(station.certificates.sign())
