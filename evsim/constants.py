"""Names and figures more than one part of the site relies on, defined once."""
from __future__ import annotations

import logging

#: Anomaly severities, mildest first.
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
#: The one connector of a simulated charge point.
CONNECTOR_ID = 1
#: Seconds either OCPP side waits for a CALLRESULT before it counts the CALL as failed.
RESPONSE_TIMEOUT_S = 10.0
#: The central system's default OCPP port.
DEFAULT_CSMS_PORT = 9000
DEFAULT_CSMS_URL = f"ws://127.0.0.1:{DEFAULT_CSMS_PORT}"
#: The source whose samples count when the charge point and the central system both recorded
#: them (ARCHITECTURE.md, "Who records what").
RECORDER = "csms"
#: The charger's 0x300 period without --period, and how many silent ones mean it is gone.
CHARGER_PERIOD_S = 1.0
SILENT_PERIODS = 3
#: Wall seconds a silence on the bus must also last before either side acts on it (the
#: charger's watchdog, the charge point's "charger gone"), so that at a high --speed a process
#: on a loaded machine is not taken for dead for being late.
SILENCE_FLOOR_WALL_S = 1.0
#: The process names used as ``source`` in the MemoryBank.
SOURCES = ("csms", "cp", "charger")
#: Security events of every boot and reset (OCPP 1.6 Security Whitepaper): logged at INFO, not as
#: warnings, so that a fleet of 2,000 booting is not 2,000 warnings on either side.
ROUTINE_SECURITY_EVENTS = frozenset({"StartupOfTheDevice", "ResetOrReboot"})


def security_event_level(event_type: object) -> int:
    """The console level of a security event: INFO for a routine one, else WARNING."""
    return logging.INFO if event_type in ROUTINE_SECURITY_EVENTS else logging.WARNING
