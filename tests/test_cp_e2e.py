"""End to end with real processes: csms.py, cp.py (driven through its control API),
charger_module.py and a bus server. A person plugs in and presents a tag, the car charges, the
cable comes out; the central system reserves the charge point for a tag, which starts on it; then
it resets the charge point, which stops the transaction and boots again."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

from conftest import free_port, port_open, script, start, stop, wait_for

from evsim.bank import MemoryBank
from evsim.timefmt import ocpp_time

SPEED = "10"


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_plug_in_tag_charge_reserve_and_reset_against_csms(bus_server, db_path, tmp_path):
    ocpp_port, csms_api, cp_api = free_port(), free_port(), free_port()
    common = ("--speed", SPEED, "--db", str(db_path))
    can = ("--can-interface", "remote", "--can-channel", bus_server)
    procs = [start(script("charger_module.py", *common, *can)),
             start(script("csms.py", "--port", str(ocpp_port), "--api-port", str(csms_api),
                          "--scenario", "none", *common))]
    cp = f"http://127.0.0.1:{cp_api}/api/v1"
    csms = f"http://127.0.0.1:{csms_api}/api/v1/charge-points/CP_E"
    try:
        wait_for(lambda: (port_open(ocpp_port) and port_open(csms_api))
                 or procs[1].poll() is not None, timeout=30, message="csms")
        procs.append(start(script("cp.py", "--url", f"ws://127.0.0.1:{ocpp_port}", "--id",
                                  "CP_E", "--api-port", str(cp_api),
                                  "--state", str(tmp_path / "cp_state.db"), *common, *can)))
        wait_for(lambda: port_open(cp_api) and http("GET", cp + "/state")[1]["booted"],
                 timeout=30, message="cp booted")

        def sessions():
            with MemoryBank(db_path, readonly=True) as bank:
                return bank.get_sessions(None, charge_point_id="CP_E")

        def cp_state():
            return http("GET", cp + "/state")[1]["connectors"][1]

        # a driver: cable in, card, charge, cable out
        assert http("POST", cp + "/connectors/1/plug-in")[0] == 200
        status, body = http("POST", cp + "/connectors/1/present-id-tag", {"idTag": "CARD"})
        assert (status, body["outcome"]) == (200, "started"), body
        wait_for(lambda: (cp_state()["current"] or 0) > 10 and cp_state()["energyWh"] >= 5,
                 timeout=30, message="5 Wh charged")
        assert http("POST", cp + "/connectors/1/unplug")[0] == 200
        first = wait_for(lambda: next((s for s in sessions() if s["end_time"]), None),
                         timeout=30, message="the session ended")
        assert first["stop_reason"] == "EVDisconnected" and first["id_tag"] == "CARD"
        assert first["meter_stop_wh"] > first["meter_start_wh"]

        # the central system reserves the charge point for RES
        expiry = ocpp_time(datetime.now(UTC) + timedelta(minutes=10))
        status, body = http("POST", csms + "/reserve-now", {
            "connectorId": 1, "expiryDate": expiry, "idTag": "RES", "reservationId": 7})
        assert (status, body["response"]) == (200, {"status": "Accepted"}), body
        wait_for(lambda: cp_state()["status"] == "Reserved", message="Reserved")
        assert http("POST", cp + "/connectors/1/present-id-tag", {"idTag": "OTHER"})[0] == 409
        status, body = http("POST", cp + "/connectors/1/present-id-tag", {"idTag": "RES"})
        assert (status, body["outcome"]) == (200, "authorized"), body
        assert http("POST", cp + "/connectors/1/plug-in")[0] == 200
        second = wait_for(lambda: next((s for s in sessions() if s["id_tag"] == "RES"), None),
                          timeout=30, message="the reserved session")

        # and resets it: the transaction stops with SoftReset, the charge point boots again
        status, body = http("POST", csms + "/reset", {"type": "Soft"})
        assert (status, body["response"]) == (200, {"status": "Accepted"}), body
        ended = wait_for(lambda: next((s for s in sessions() if s["transaction_id"] ==
                                       second["transaction_id"] and s["end_time"]), None),
                         timeout=30, message="the reserved session stopped by the reset")
        assert ended["stop_reason"] == "SoftReset"

        def boots():
            with MemoryBank(db_path, readonly=True) as bank:
                return [e for e in bank.get_recent_events(500, {"event_type": "OCPP_MESSAGE",
                                                                "source": "csms"})
                        if e["description"] == "cp->csms CALL BootNotification"]
        wait_for(lambda: len(boots()) >= 2, timeout=30, message="a second BootNotification")
        wait_for(lambda: http("GET", cp + "/state")[1]["booted"], message="booted again")
        assert cp_state()["status"] == "Finishing"  # the cable is still in
    finally:
        results = [stop(proc) for proc in reversed(procs)]
    assert all(code == 0 for code, _ in results), results
    assert not any("Traceback" in out for _, out in results), results
