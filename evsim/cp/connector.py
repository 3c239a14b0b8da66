"""The connector's status as a StatusNotification reports it (OCPP 1.6 §4.9)."""
from __future__ import annotations

from dataclasses import dataclass

from evsim.constants import SILENT_PERIODS

PHASES = ("Available", "Preparing", "Charging", "Finishing")
SILENT_INFO = f"charger silent: no 0x300 frame for {SILENT_PERIODS} periods"


@dataclass
class Connector:
    """The phase of the charging cycle, overridden by Faulted while the charger is silent.

    ``reported`` is the status the central system was last told, so a change is sent once.
    """

    phase: str = "Available"
    faulted: bool = False
    reported: str | None = None

    @property
    def status(self) -> str:
        return "Faulted" if self.faulted else self.phase

    @property
    def error(self) -> tuple[str, str | None]:
        """(errorCode, info) for the StatusNotification of the current status."""
        return ("OtherError", SILENT_INFO) if self.faulted else ("NoError", None)

    def set_phase(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown connector phase {phase!r}")
        self.phase = phase

    def unreported(self) -> str | None:
        """The status to report now, if it changed since the last report (and mark it told)."""
        if self.status == self.reported:
            return None
        self.reported = self.status
        return self.status
