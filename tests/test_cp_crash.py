"""kill -9 of cp.py in the middle of a transaction, then a restart: the central system ends up
with the transaction closed and every sample cp.py had queued (real processes, real bus)."""
from __future__ import annotations

from datetime import UTC, datetime

from conftest import free_port, port_open, script, start, stop, wait_for

from evsim.bank import MemoryBank
from evsim.timefmt import format_timestamp

SPEED = "10"


def test_kill_9_mid_transaction_loses_no_transaction_message(bus_server, db_path):
    port = free_port()
    common = ("--speed", SPEED, "--db", str(db_path))
    can = ("--can-interface", "remote", "--can-channel", bus_server)
    cp_args = ("--url", f"ws://127.0.0.1:{port}", "--id", "CP_K", *common, *can)
    procs = [start(script("charger_module.py", *common, *can)),
             start(script("csms.py", "--port", str(port), "--scenario", "normal", *common))]
    try:
        wait_for(lambda: port_open(port) or procs[1].poll() is not None, message="csms")

        def bank_read(read):
            with MemoryBank(db_path, readonly=True) as bank:
                return read(bank)

        def csms_samples(transaction_id):
            return bank_read(lambda bank: bank.get_metrics(
                "current", charge_point_id="CP_K", transaction_id=transaction_id, source="csms"))

        cp = start(script("cp.py", *cp_args))
        procs.append(cp)
        session = wait_for(lambda: next(iter(bank_read(lambda bank: bank.get_sessions())), None),
                           timeout=60, message="a transaction")
        wait_for(lambda: len(csms_samples(session["transaction_id"])) >= 3, timeout=60,
                 message="samples of the transaction")
        cp.kill()
        cp.wait()
        killed_at = format_timestamp(datetime.now(UTC))

        procs.append(start(script("cp.py", *cp_args)))

        def closed():
            sessions = bank_read(lambda bank: bank.get_sessions(None, charge_point_id="CP_K"))
            return next((s for s in sessions if s["transaction_id"] == session["transaction_id"]
                         and s["end_time"]), None)
        ended = wait_for(closed, timeout=60, message="the transaction closed after the restart")
        assert ended["stop_reason"] == "PowerLoss"
        assert ended["meter_stop_wh"] >= ended["meter_start_wh"]

        def taken():
            return bank_read(lambda bank: [m["timestamp"] for m in bank.get_metrics(
                "current", charge_point_id="CP_K", source="cp", since=session["start_time"],
                until=killed_at)])
        received = {m["timestamp"] for m in csms_samples(session["transaction_id"])}
        assert taken() and set(taken()) <= received
    finally:
        results = [stop(proc) for proc in reversed(procs)]
    assert not any("Traceback" in out for _, out in results), results
