"""The charge point's control API (aiohttp on a free loopback port) over a station that is online
with a scripted central system: what each route does, its 400/404/409 answers, what it
records, and that the AuthorizationKey never shows."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from cp_fakes import FakeCentral, FakeLink, FakeRecorder

from evsim.clock import FakeClock
from evsim.cp import api
from evsim.cp.connection import online
from evsim.cp.station import Station
from evsim.cp.store import StateStore


@pytest.fixture
async def running():
    clock = FakeClock()
    station = Station("CP_A", StateStore(":memory:"), clock, writer=FakeRecorder(),
                      link=FakeLink())
    station.change_configuration("AuthorizationKey", "secret-key-0123456")
    central = FakeCentral()
    task = asyncio.create_task(online(station, central))
    await clock.advance(0)
    runner = await api.serve_api(station, 0)
    base = f"http://127.0.0.1:{api.bound_port(runner)}{api.PREFIX}"
    async with aiohttp.ClientSession() as session:
        async def request(method: str, path: str, body=None, raw: str | None = None):
            async with session.request(method, base + path, json=body, data=raw) as response:
                return response.status, await response.json()
        yield station, central, clock, request
    await runner.cleanup()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_plug_in_present_a_tag_set_the_ev_and_unplug(running):
    station, central, clock, request = running
    assert await request("POST", "/connectors/1/plug-in") == (200, {
        "status": "ok", "connectorStatus": "Preparing", "plugged": True, "errorCode": "NoError"})
    status, body = await request("GET", "/state")
    assert status == 200 and body["connectors"][1]["status"] == "Preparing"
    assert "AuthorizationKey" not in body["configuration"]
    assert "secret-key" not in str(body)
    status, body = await request("POST", "/connectors/1/present-id-tag", {"idTag": "CARD"})
    assert (status, body["outcome"], body["connectorStatus"]) == (200, "started", "Charging")
    await clock.advance(0)
    assert central.of("StartTransaction")[0].id_tag == "CARD"
    status, body = await request("PUT", "/connectors/1/ev", {"maxCurrent": 16})
    assert status == 200 and station.limit_in_force() == 16.0
    status, body = await request("POST", "/connectors/1/unplug")
    assert status == 200 and body["status"] == "ok"
    await clock.advance(0)
    assert [r.reason for r in central.of("StopTransaction")] == ["EVDisconnected"]
    calls = [data for kind, _, data in station.writer.events if kind == "API_CALL"]
    assert [(c["method"], c["path"], c["status"]) for c in calls] == [
        ("POST", "/api/v1/connectors/1/plug-in", 200),
        ("POST", "/api/v1/connectors/1/present-id-tag", 200),
        ("PUT", "/api/v1/connectors/1/ev", 200), ("POST", "/api/v1/connectors/1/unplug", 200)]


async def test_faults_and_the_answers_that_are_not_200(running):
    station, central, clock, request = running
    status, body = await request("POST", "/connectors/1/fault", {"errorCode": "GroundFailure"})
    assert status == 200 and body["status"] == "ok"
    await clock.advance(0)
    assert central.of("StatusNotification")[-1].error_code == "GroundFailure"
    cases = [
        ("POST", "/connectors/1/fault", {"errorCode": "OverVoltage"}, None, 409, "conflict"),
        ("POST", "/connectors/1/fault", {"errorCode": "Bogus"}, None, 400, "bad-request"),
        ("POST", "/connectors/1/fault", {}, None, 400, "bad-request"),
        ("POST", "/connectors/2/plug-in", None, None, 404, "not-found"),
        ("POST", "/connectors/1/present-id-tag", None, "{not json", 400, "bad-request"),
        ("POST", "/connectors/1/present-id-tag", None, "[1]", 400, "bad-request"),
        ("POST", "/connectors/1/present-id-tag", {"idTag": "x" * 21}, None, 400, "bad-request"),
        ("POST", "/connectors/1/present-id-tag", {"idTag": "CARD"}, None, 409, "conflict"),
        ("POST", "/connectors/1/unplug", None, None, 409, "conflict"),
        ("PUT", "/connectors/1/ev", {"maxCurrent": -1}, None, 400, "bad-request"),
        ("GET", "/nowhere", None, None, 404, "error"),
        ("DELETE", "/state", None, None, 405, "error"),
    ]
    for method, path, body, raw, code, word in cases:
        status, answer = await request(method, path, body, raw)
        assert (status, answer["status"]) == (code, word), (method, path, answer)
        assert answer["reason"] and "\n" not in answer["reason"]
    assert (await request("POST", "/connectors/1/clear-fault"))[0] == 200
    assert (await request("POST", "/connectors/1/clear-fault"))[0] == 409
    assert station.connector.status == "Available"
