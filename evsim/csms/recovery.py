"""What a crash of the central system left behind, dealt with before it serves again.

A session still open in the MemoryBank was open when the last run died: it is ended now, by the
central system (reason ``CentralSystemRestart``), at its last recorded sample, so none stays open
forever. Should its charge point still be charging it, its StopTransaction later writes the real
end over it; and should it send that transaction's StartTransaction again (its answer was lost
with the crash), it gets the same transaction id back, not a second session.
"""
from __future__ import annotations

import logging
from typing import Optional

from ocpp.v16.enums import AuthorizationStatus

from evsim.bank import MemoryBank
from evsim.constants import RECORDER
from evsim.csms.registry import Registry

log = logging.getLogger("csms")

RESTART_REASON = "CentralSystemRestart"


def end_left_open(path: Optional[str], registry: Registry) -> int:
    """End the sessions a crash left open; returns how many."""
    with MemoryBank(path) as bank:
        left = bank.open_sessions()
        for session in left:
            charge_point_id, transaction_id = session["charge_point_id"], session["transaction_id"]
            last = bank.get_metrics("energy", charge_point_id=charge_point_id,
                                    transaction_id=transaction_id, source=RECORDER, limit=1)
            bank.end_session(charge_point_id, transaction_id,
                             end_time=last[0]["timestamp"] if last else session["start_time"],
                             meter_stop_wh=last[0]["value"] if last else None,
                             stop_reason=RESTART_REASON)
            if session["id_tag"] is not None and session["meter_start_wh"] is not None:
                start = (None, session["id_tag"], round(session["meter_start_wh"]),
                         session["start_time"])  # the MemoryBank keeps no connector
                registry.remember_start(registry.station(charge_point_id), start,
                                        (transaction_id, {"status": AuthorizationStatus.accepted}))
    if left:
        log.warning("%d session(s) left open by the last run ended (%s)", len(left),
                    RESTART_REASON)
    return len(left)
