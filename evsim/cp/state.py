"""What the charge point shows of itself, for the control API and the diagnostics archive:
connectors, transactions, configuration (write-only keys left out), outbox, reservations."""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from evsim.constants import CONNECTOR_ID
from evsim.timefmt import ocpp_time

if TYPE_CHECKING:
    from evsim.cp.station import Station


def snapshot(station: Station) -> dict[str, Any]:
    connector = station.connector
    tx = station.transaction
    reservation = station.reservations.current
    return {
        "chargePointId": station.id,
        "time": ocpp_time(station.clock.now()),
        "connected": station.connected,
        "booted": station.booted,
        "firmwareVersion": station.firmware_version,
        "connectors": [
            {"connectorId": 0, "status": station.availability.zero_status,
             "availability": station.availability.wanted[0]},
            {"connectorId": CONNECTOR_ID, "status": connector.status,
             "errorCode": connector.error[0], "info": connector.error[1],
             "availability": station.availability.wanted[CONNECTOR_ID],
             "plugged": connector.plugged, "evMaxCurrent": station.ev_max_current,
             "limit": station.limit_in_force(), "current": station.meter.amps,
             "energyWh": round(station.meter.energy_wh, 1),
             "pendingIdTag": station.local.pending_tag,
             "transactionId": tx.transaction_id if tx else None}],
        "transactions": [
            {"transactionId": t.transaction_id, "idTag": t.id_tag, "meterStart": t.meter_start,
             "startedAt": ocpp_time(t.started_at), "running": t is tx}
            for t in station.transactions.values()],
        "reservation": asdict(reservation) if reservation else None,
        "chargingProfiles": station.smart.state(),
        "authorization": {"cacheEntries": len(station.auth.cache),
                          "localListVersion": station.auth.local.reported_version,
                          "localListEntries": len(station.auth.local.entries)},
        "configuration": station.config.visible(),
        "outbox": [{"action": m.action, "attempts": m.attempts, "kept": m.transactional}
                   for m in station.outbox.queue],
        "firmware": {"status": station.firmware.status},
        "diagnostics": {"status": station.diagnostics.status,
                        "logStatus": station.diagnostics.log_status},
        "certificates": station.certificates.state(),
    }
