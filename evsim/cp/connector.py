"""The connector's status as a StatusNotification reports it (OCPP 1.6 §4.9), derived from what
is true of it: a cable, a transaction, a reservation, its availability, a fault."""
from __future__ import annotations

from dataclasses import dataclass

from evsim.constants import SILENT_PERIODS

SILENT_INFO = f"charger silent: no 0x300 frame for {SILENT_PERIODS} periods"
ERROR_CODES = ("ConnectorLockFailure", "EVCommunicationError", "GroundFailure",
               "HighTemperature", "InternalError", "LocalListConflict", "NoError", "OtherError",
               "OverCurrentFailure", "OverVoltage", "PowerMeterFailure", "PowerSwitchFailure",
               "ReaderFailure", "ResetFailure", "UnderVoltage", "WeakSignal")


@dataclass
class Connector:
    """The facts of connector 1; :attr:`status` follows from them.

    ``plugged``: a cable is in; ``simulated_ev``: it was plugged by a remote start on an empty
    connector (the scenario's car), and leaves when the transaction ends. ``authorized``: an
    idTag was accepted and waits for the cable. ``charging``: a transaction runs;
    ``finishing``: it ended and the cable is still in. ``suspended_evse``/``suspended_ev``: the
    charge point's or the EV's limit is 0. ``fault``: an error code set by a person;
    ``silent``: the charger stopped publishing. ``reported`` is the status last told.
    """

    plugged: bool = False
    simulated_ev: bool = False
    authorized: bool = False
    charging: bool = False
    finishing: bool = False
    suspended_evse: bool = False
    suspended_ev: bool = False
    reserved: bool = False
    inoperative: bool = False
    fault: tuple[str, str | None] | None = None
    silent: bool = False
    reported: str | None = None

    @property
    def status(self) -> str:
        if self.silent or self.fault is not None:
            return "Faulted"
        if self.inoperative and not self.charging:
            return "Unavailable"
        if self.charging:
            if self.suspended_evse:
                return "SuspendedEVSE"
            return "SuspendedEV" if self.suspended_ev else "Charging"
        if self.finishing:
            return "Finishing"
        if self.plugged or self.authorized:
            return "Preparing"
        return "Reserved" if self.reserved else "Available"

    @property
    def error(self) -> tuple[str, str | None]:
        """(errorCode, info) for the StatusNotification of the current status."""
        if self.fault is not None:
            return self.fault
        return ("OtherError", SILENT_INFO) if self.silent else ("NoError", None)

    @property
    def free(self) -> bool:
        """Nothing on it: a transaction may be started or a reservation made."""
        return self.status in ("Available", "Reserved")

    def unreported(self, shown: str | None = None) -> str | None:
        """The status to report now, if it changed since the last report (and mark it told).
        ``shown``: the status the charge point shows, when an injected fault alters it."""
        status = shown or self.status
        if status == self.reported:
            return None
        self.reported = status
        return status
