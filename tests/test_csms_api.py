"""The control API of csms.py against a charge point written with the ``ocpp`` library alone (not
cp.py), on real sockets on free ports: every action reaches the charge point as its CALL with
the body unchanged, every error status, the token, the records, the description; and csms.py's
--api-port from the command line. Deadlines are generous and no timing is asserted."""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, port_open, script, start, stop, wait_for, wait_for_async
from csms_harness import ANSWERS, BODIES, Site
from ocpp.exceptions import InternalError
from ocpp.v16 import call

from evsim import cli
from evsim.bank import MemoryBank
from evsim.csms import actions, api, control
from evsim.csms import main as csms

#: The central system's own loggers (the ocpp library and websockets log raw frames at DEBUG and
#: INFO; csms.py keeps them at WARNING).
OUR_LOGGERS = ("csms", "memory", "bank", "aiohttp.access", "aiohttp.server")




# -- every action --------------------------------------------------------------------------------

async def test_every_action_reaches_the_charge_point_as_its_call_with_the_body_unchanged(site):
    central = await site()
    cp = await central.connect("CP_1")
    assert set(BODIES) == set(actions.ACTIONS) and len(BODIES) == 26
    for name, body in BODIES.items():
        action = actions.ACTIONS[name]
        status, answer = await central.request("POST", f"/charge-points/CP_1/{name}", body)
        assert (status, answer) == (200, {"status": "accepted", "response": ANSWERS[action]}), name
        assert cp.received[-1] == (action, body), name
    assert len(cp.received) == len(BODIES)
    calls = await central.events("API_CALL", len(BODIES))
    assert [(c["data"]["action"], c["data"]["status"], c["charge_point_id"]) for c in calls] == \
        [(actions.ACTIONS[name], 200, "CP_1") for name in BODIES]
    assert calls[0]["description"] == "POST /api/v1/charge-points/CP_1/cancel-reservation -> 200"
    assert calls[0]["data"]["request"] == BODIES["cancel-reservation"]
    assert calls[0]["data"]["response"] == ANSWERS["CancelReservation"]


async def test_an_empty_body_is_an_empty_payload(site):
    central = await site()
    cp = await central.connect("CP_1")
    status, _ = await central.request("POST", "/charge-points/CP_1/clear-cache")
    assert status == 200 and cp.received == [("ClearCache", {})]


# -- the error statuses --------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "body", "reason"), [
    ("reset", {"type": "Medium"}, "Reset: type: 'Medium' is not one of ['Hard', 'Soft']"),
    ("reset", {}, "Reset: 'type' is a required property"),
    ("reset", {"type": "Soft", "when": "now"}, "Reset: Additional properties are not allowed "
                                               "('when' was unexpected)"),
    ("unlock-connector", {"connectorId": "1"}, "UnlockConnector: connectorId: '1' is not of "
                                               "type 'integer'"),
    ("set-charging-profile", {"connectorId": 1, "csChargingProfiles": {
        **BODIES["set-charging-profile"]["csChargingProfiles"], "chargingSchedule": {
            "chargingRateUnit": "A", "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 7.25}]}}},
     "SetChargingProfile: csChargingProfiles/chargingSchedule/chargingSchedulePeriod/0/limit: "
     "Decimal('7.25') is not a multiple of 0.1"),
    ("certificate-signed", {"certificateChain": "x" * 10001},
     "CertificateSigned: certificateChain: longer than 10000"),
    ("reset", ["Soft"], "Reset: the payload must be a JSON object"),
])
async def test_a_body_that_breaks_the_schema_is_400_with_the_reason_and_nothing_is_sent(
        site, name, body, reason):
    central = await site()
    cp = await central.connect("CP_1")
    status, answer = await central.request("POST", f"/charge-points/CP_1/{name}", body)
    assert (status, answer) == (400, {"status": "bad-request", "reason": reason})
    assert cp.received == []
    (recorded,) = await central.events("API_CALL")
    assert recorded["data"]["reason"] == reason and recorded["data"]["status"] == 400


@pytest.mark.parametrize("raw", ["{", "{\"type\": NaN}", "[1, 2"])
async def test_a_body_that_is_not_json_is_400(site, raw):
    central = await site()
    cp = await central.connect("CP_1")
    status, answer = await central.request("POST", "/charge-points/CP_1/reset", raw=raw)
    assert status == 400 and answer["reason"].startswith("the body is not JSON")
    assert cp.received == []


async def test_unknown_actions_and_charge_points_not_connected_are_404(site):
    central = await site()
    await central.connect("CP_1")
    for path, status_word in (("/charge-points/CP_1/boot-notification", "unknown-action"),
                              ("/charge-points/CP_1/Reset", "unknown-action"),
                              ("/charge-points/NOBODY/reset", "not-found")):
        status, answer = await central.request("POST", path, {"type": "Soft"})
        assert (status, answer["status"]) == (404, status_word), path
    other = await central.connect("CP_2")
    connection, _ = central.clients[-1]
    await connection.close()
    await wait_for_async(lambda: central.system.registry.get("CP_2").link is None,
                         message="CP_2 gone")
    status, answer = await central.request("POST", "/charge-points/CP_2/reset", {"type": "Soft"})
    assert (status, answer) == (404, {"status": "not-connected",
                                      "reason": "charge point 'CP_2' is not connected"})
    assert other.received == []
    assert (await central.request("GET", "/charge-points/NOBODY"))[0] == 404
    status, answer = await central.request("GET", "/nothing/here")
    assert status == 404 and answer["reason"].startswith("no such route: /api/v1/nothing/here")
    status, answer = await central.request("DELETE", "/charge-points")
    assert (status, answer["reason"]) == (405, "DELETE is not allowed on /api/v1/charge-points")


async def test_a_callerror_is_502_with_its_code_description_and_details(site):
    def refuse(**request):
        raise InternalError(description="relay stuck", details={"relay": 2})
    central = await site()
    await central.connect("CP_1", answers={**ANSWERS, "Reset": refuse})
    status, answer = await central.request("POST", "/charge-points/CP_1/reset", {"type": "Hard"})
    assert status == 502
    assert answer == {"status": "callerror", "reason": "CP_1 answered Reset with InternalError: "
                                                       "relay stuck",
                      "errorCode": "InternalError", "errorDescription": "relay stuck",
                      "errorDetails": {"relay": 2}}
    unanswered = {action: answer for action, answer in ANSWERS.items() if action != "Reset"}
    await central.connect("CP_2", answers=unanswered)  # the library: no handler
    status, answer = await central.request("POST", "/charge-points/CP_2/reset", {"type": "Hard"})
    assert (status, answer["errorCode"]) == (502, "NotImplemented")


async def test_an_answer_that_breaks_its_schema_is_502(site):
    central = await site()
    await central.connect("CP_1", answers={**ANSWERS, "Reset": {"status": "Maybe"}},
                          skip_schema=("Reset",))
    status, answer = await central.request("POST", "/charge-points/CP_1/reset", {"type": "Hard"})
    assert status == 502 and answer["status"] == "invalid-response"
    assert answer["response"] == {"status": "Maybe"}
    assert "'Maybe' is not one of ['Accepted', 'Rejected']" in answer["reason"]


async def test_no_answer_in_time_is_504_and_the_late_answer_is_ignored(site):
    release = asyncio.Event()

    async def slow(**request):
        await release.wait()
        return {"status": "Accepted"}
    central = await site(call_timeout=0.2)
    cp = await central.connect("CP_1", answers={**ANSWERS, "Reset": slow})
    status, answer = await central.request("POST", "/charge-points/CP_1/reset", {"type": "Hard"})
    assert (status, answer["status"]) == (504, "timeout")
    assert answer["reason"] == "CP_1 did not answer Reset within 0.2 s"
    release.set()  # the late answer comes, and the connection carries on
    central.system.call_timeout = 30  # however slow this machine is
    status, answer = await central.request("POST", "/charge-points/CP_1/reset", {"type": "Soft"})
    assert (status, answer["response"]) == (200, {"status": "Accepted"})
    assert [action for action, _ in cp.received] == ["Reset", "Reset"]
    ignored = await central.events("OCPP_FRAME_IGNORED")
    assert ignored[0]["data"]["reason"] == "a response to no CALL of ours"


async def test_a_charge_point_that_disconnects_before_it_answers_is_502(site):
    holder: dict = {}

    async def hang_up(**request):
        await holder["connection"].close()
        await asyncio.Event().wait()
    central = await site()
    await central.connect("CP_1", answers={**ANSWERS, "Reset": hang_up})
    holder["connection"] = central.clients[-1][0]
    status, answer = await central.request("POST", "/charge-points/CP_1/reset", {"type": "Hard"})
    assert (status, answer["status"]) == (502, "disconnected")


# -- token, records, secrets ---------------------------------------------------------------------

async def test_a_bearer_token_is_required_when_set_and_never_recorded(site, caplog):
    token = "a-long-secret-token-1234"
    central = await site(token=token)
    with caplog.at_level(logging.DEBUG):
        for given in ("", "wrong-token", token[:-1]):
            async with central.http.get("/api/v1/charge-points", headers={
                    "Authorization": f"Bearer {given}"} if given else {}) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="csms"'
                assert (await response.json())["status"] == "unauthorized"
        assert (await central.request("GET", "/charge-points")) == (200, {"chargePoints": []})
        assert (await central.request("GET", "/openapi.json"))[0] == 200
    calls = await central.events("API_CALL", 5)
    assert [c["data"]["status"] for c in calls] == [401, 401, 401, 200, 200]
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name in OUR_LOGGERS)
    assert "api: GET" in ours and token not in ours and token not in json.dumps(calls)


class FakeRegistry:
    """The part of security.ChargePointRegistry the API and the key rotation use."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}

    def get(self, charge_point_id: str):
        return object() if charge_point_id == "CP_1" else None

    def set_key(self, charge_point_id: str, key: str) -> None:
        if charge_point_id != "CP_1":
            raise KeyError(charge_point_id)
        if len(key) < 16:
            raise ValueError("an AuthorizationKey is 16 to 20 characters, or 32 to 40 hex digits")
        self.keys[charge_point_id] = key


async def test_authorization_keys_change_in_the_registry_and_are_never_recorded(site, caplog):
    key, other = "0123456789abcdef0123", "fedcba9876543210fedc"
    central = await site()
    path = "/charge-points/CP_1/authorization-key"
    status, answer = await central.request("PUT", path, {"authorizationKey": key})
    assert (status, answer["status"]) == (404, "no-registry")
    central.system.security = registry = FakeRegistry()
    with caplog.at_level(logging.DEBUG):
        assert (await central.request("PUT", path, {"authorizationKey": key}))[0] == 200
        assert registry.keys == {"CP_1": key}
        assert (await central.request("PUT", "/charge-points/CP_9/authorization-key",
                                      {"authorizationKey": key}))[0] == 404
        status, answer = await central.request("PUT", path, {"authorizationKey": "short"})
        assert (status, answer["status"]) == (400, "bad-request")
        assert (await central.request("PUT", path, {"key": key}))[0] == 400
        # ChangeConfiguration through the API: the registry follows once the charge point accepts
        await central.connect("CP_1")
        status, answer = await central.request("POST", "/charge-points/CP_1/change-configuration",
                                               {"key": "AuthorizationKey", "value": other})
        assert status == 200 and registry.keys == {"CP_1": other}
    with central.bank() as bank:
        await central.events("API_CALL", 6)
        everything = json.dumps(bank.get_recent_events(None))
    assert key not in everything and other not in everything and "***" in everything
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name in OUR_LOGGERS)
    assert "api: PUT" in ours and key not in ours and other not in ours


# -- what the API shows ---------------------------------------------------------------------------

async def test_charge_points_show_boot_connectors_transaction_and_last_message(site):
    central = await site()
    cp = await central.connect("CP_1")
    await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging",
                                          info="plugged"))
    started = await cp.call(call.StartTransaction(connector_id=1, id_tag="TAG", meter_start=0,
                                                  timestamp="2026-01-01T00:00:00Z"))
    status, shown = await central.request("GET", "/charge-points/CP_1")
    assert status == 200
    assert shown["connected"] and shown["booted"] and shown["id"] == "CP_1"
    assert shown["boot"]["chargePointVendor"] == "V" and shown["boot"]["chargePointModel"] == "M"
    assert {k: v for k, v in shown["connectors"]["1"].items() if k != "at"} == \
        {"status": "Charging", "errorCode": "NoError", "info": "plugged"}
    assert shown["transactionId"] == started.transaction_id
    assert {k: v for k, v in shown["lastMessage"].items() if k != "at"} == \
        {"action": "StartTransaction", "messageType": "CALLRESULT", "direction": "sent"}
    assert shown["scenario"] == {"name": "none", "paused": False, "running": False,
                                 "stepsDone": 0}
    status, every = await central.request("GET", "/charge-points")
    assert status == 200 and every["chargePoints"] == [shown]


async def test_the_scenario_of_one_charge_point_pauses_and_resumes(site):
    central = await site(scenario="fluctuation", speed=50.0)
    cp = await central.connect("CP_1")
    await cp.requested(1)
    status, answer = await central.request("POST", "/charge-points/CP_1/scenario/pause")
    assert status == 200 and answer["status"] == "paused"
    assert answer["chargePoint"]["scenario"]["paused"]
    station = central.system.registry.get("CP_1")
    assert station.scenario_task is None
    # paused across a reconnect too
    connection, _ = central.clients[-1]
    await connection.close()
    await wait_for_async(lambda: station.link is None, message="disconnected")
    cp = await central.connect("CP_1")
    assert station.scenario_task is None
    status, answer = await central.request("POST", "/charge-points/CP_1/scenario/resume")
    assert status == 200 and answer["chargePoint"]["scenario"]["running"]
    await cp.requested(1)  # the scenario goes on where it was
    assert (await central.request("POST", "/charge-points/NOBODY/scenario/pause"))[0] == 404


async def test_openapi_describes_every_route_and_every_action(site):
    central = await site()
    status, document = await central.request("GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")
    paths = document["paths"]
    generic = api.PREFIX + "/charge-points/{id}/{action}"
    for resource in api.create_app(central.system).router.resources():
        route = resource.canonical
        if route == generic:
            continue
        if route.endswith("/scenario/{change}"):
            stem = route.removesuffix("{change}")
            assert {stem + "pause", stem + "resume"} <= set(paths)
            continue
        assert route in paths, route
    for name, action in actions.ACTIONS.items():
        post = paths[api.PREFIX + "/charge-points/{id}/" + name]["post"]
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        assert schema["properties"] == actions_schema(action)["properties"], name
        assert {"200", "400", "401", "404", "502", "504"} <= set(post["responses"])


def actions_schema(action: str) -> dict:
    import ocpp
    return json.loads((Path(ocpp.__file__).parent / "v16" / "schemas" / f"{action}.json")
                      .read_text())


# -- csms.py --api-port ---------------------------------------------------------------------------

def test_csms_serves_the_api_on_api_port_and_stops_cleanly(db_path):
    api_port, port = free_port(), free_port()
    proc = start(script("csms.py", "--port", str(port), "--api-port", str(api_port), "--db",
                        str(db_path), "--scenario", "none"))
    try:
        wait_for(lambda: port_open(api_port) or proc.poll() is not None, 60, message="the API")
        url = f"http://127.0.0.1:{api_port}/api/v1/charge-points"
        with urllib.request.urlopen(url, timeout=30) as reply:
            assert (reply.status, json.load(reply)) == (200, {"chargePoints": []})
    finally:
        code, out = stop(proc, timeout=30)
    assert code == 0 and "Traceback" not in out
    assert f"control API on http://127.0.0.1:{api_port}/api/v1" in out
    with MemoryBank(db_path, readonly=True) as bank:
        (started,) = bank.get_recent_events(1, {"event_type": "PROCESS_START"})
        assert started["data"]["api_port"] == api_port
        assert bank.get_recent_events(1, {"event_type": "API_CALL"})


def test_an_api_port_in_use_is_one_line_and_exit_1(db_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        proc = start(script("csms.py", "--port", "0", "--api-port", str(taken), "--db",
                            str(db_path)))
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in out
    assert out.strip().splitlines()[-1] == (f"csms.py: error: API port {taken} on 127.0.0.1 is "
                                            f"in use (--api-port chooses another, 'off' none)")


@pytest.mark.parametrize(("value", "message"), [
    ("70000", "argument --api-port: a port is 0 to 65535, got '70000'"),
    ("soon", "argument --api-port: a port 0 to 65535 or 'off', got 'soon'"),
])
def test_a_bad_api_port_exits_2(capsys, value, message):
    with pytest.raises(SystemExit) as done:
        csms.main(["--api-port", value])
    assert done.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_a_ca_certificate_without_its_key_exits_2_in_one_line(db_path, capsys):
    argv = ["--port", "0", "--api-port", "off", "--db", str(db_path), "--ca-cert", "ca.pem"]
    assert csms.main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "csms.py: error: --ca-cert and --ca-key go together"


async def test_the_default_port_taken_leaves_the_api_off_with_a_warning(db_path, monkeypatch,
                                                                         caplog):
    central = await Site(db_path).start()
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = busy.getsockname()[1]
            monkeypatch.setattr(control, "DEFAULT_API_PORT", taken)
            with caplog.at_level(logging.WARNING, logger="csms"):
                assert await control.start_api(central.system, "127.0.0.1", None, None) is None
            assert f"API port {taken} on 127.0.0.1 is in use: the control API is off" in \
                caplog.text
            with pytest.raises(cli.SimError, match=f"API port {taken} on 127.0.0.1 is in use"):
                await control.start_api(central.system, "127.0.0.1", taken, None)
        assert await control.start_api(central.system, "127.0.0.1", "off", None) is None
    finally:
        await central.stop()


async def test_a_web_page_cannot_drive_the_api(site):
    """A cross-site request from the user's browser, or a DNS-rebound one, is refused (403);
    curl and scripts, which send neither an Origin nor a foreign Host, are served."""
    central = await site()
    status, body = await central.request("GET", "/charge-points",
                                         headers={"Origin": "http://evil.example"})
    assert (status, body["status"]) == (403, "forbidden")
    status, _ = await central.request("POST", "/charge-points/CP_1/reset", {"type": "Soft"},
                                      headers={"Host": "evil.example"})
    assert status == 403
    assert (await central.request("GET", "/charge-points"))[0] == 200
