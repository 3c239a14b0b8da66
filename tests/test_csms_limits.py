"""Bad input at scale (issue 11) against a real csms.py on loopback: a connection limit
(503 with Retry-After, a replacement always let in), a churn of connects and disconnects, and
handshakes that never finish; a good charge point is answered throughout. And the limit's
bookkeeping, in process."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import pytest
import websockets
from conftest import free_port, port_open, script, start, stop, wait_for, wait_for_async
from websockets.asyncio.client import ClientConnection, connect

from evsim.bank import MemoryBank
from evsim.csms.limits import RETRY_AFTER_S, ConnectionLimit

BOOT = '[2,"boot","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'


@pytest.fixture
def csms(db_path) -> Iterator[Callable]:
    """``csms(*options)``: a csms.py on a free port; returns (port, process). It logs warnings
    only: a line for each of hundreds of connections would fill the pipe (64 kB) that nobody
    reads until it stops, and stall it."""
    started = []

    def make(*options: str):
        port = free_port()
        proc = start(script("csms.py", "--port", str(port), "--scenario", "none",
                            "--api-port", "off", "--db", str(db_path), "--log-level", "WARNING",
                            *options))
        started.append(proc)
        wait_for(lambda: port_open(port) or proc.poll() is not None, timeout=30,
                 message="csms")
        assert proc.poll() is None
        return port, proc
    yield make
    for proc in started:
        stop(proc)


def url(port: int, charge_point_id: str) -> str:
    return f"ws://127.0.0.1:{port}/{charge_point_id}"


async def booted(port: int, charge_point_id: str) -> ClientConnection:
    ws = await connect(url(port, charge_point_id), subprotocols=["ocpp1.6"])
    await ws.send(BOOT)
    answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer
    return ws


async def heartbeat(ws: ClientConnection, number: int) -> None:
    await ws.send(f'[2,"hb{number}","Heartbeat",{{}}]')
    answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert answer[:2] == [3, f"hb{number}"] and "currentTime" in answer[2], answer


async def refused_with(port: int, charge_point_id: str) -> websockets.InvalidStatus:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(url(port, charge_point_id), subprotocols=["ocpp1.6"]):
            pass
    return refused.value


async def let_in_within(port: int, charge_point_id: str, timeout: float) -> ClientConnection:
    """Booted once a slot is free: the server gives one back when it sees a connection close."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await booted(port, charge_point_id)
        except websockets.InvalidStatus:
            if time.monotonic() > deadline:
                pytest.fail(f"{charge_point_id} not let in within {timeout}s")
        await asyncio.sleep(0.05)


def finished_cleanly(proc) -> str:
    code, out = stop(proc)
    assert code == 0, out
    assert "Traceback" not in out, out
    return out


async def test_beyond_the_limit_503_with_retry_after_a_replacement_is_let_in(csms, db_path):
    port, proc = csms("--max-connections", "20")
    clients = {i: await connect(url(port, f"CP_{i:02d}"), subprotocols=["ocpp1.6"])
               for i in range(20)}
    try:
        refusal = await refused_with(port, "CP_20")
        assert refusal.response.status_code == 503
        assert refusal.response.headers["Retry-After"] == str(RETRY_AFTER_S)
        replaced, clients[5] = clients[5], await booted(port, "CP_05")
        await asyncio.wait_for(replaced.wait_closed(), 10)
        assert (await refused_with(port, "CP_21")).response.status_code == 503
        await clients.pop(0).close()
        clients[21] = await let_in_within(port, "CP_21", 10)
        await heartbeat(clients[5], 1)
    finally:
        for ws in clients.values():
            await ws.close()
    out = finished_cleanly(proc)
    assert sum("connection limit (20) reached" in line for line in out.splitlines()) == 1, out
    with MemoryBank(db_path, readonly=True) as bank:
        events = bank.get_recent_events(None, {"event_type": "SECURITY"})
    assert [event["data"]["reason"] for event in events] == ["connection limit"]


async def test_a_churn_of_connections_leaves_a_good_charge_point_answered(csms):
    port, proc = csms()
    good = await booted(port, "GOOD")
    slots, churned = asyncio.Semaphore(20), []

    async def churn(i: int) -> None:
        async with slots, connect(url(port, f"CHURN_{i}"), subprotocols=["ocpp1.6"],
                           open_timeout=20):
            churned.append(i)
    churning = asyncio.gather(*(churn(i) for i in range(300)))
    beats = 0
    while not churning.done():
        beats += 1
        await heartbeat(good, beats)
    await churning
    await heartbeat(good, beats + 1)
    await good.close()
    assert len(churned) == 300 and beats >= 2
    finished_cleanly(proc)


async def test_stalled_handshakes_do_not_starve_a_good_charge_point_and_are_dropped(csms):
    port, proc = csms("--open-timeout", "1.5")
    stalled = []
    for i in range(200):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /STALL_{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        stalled.append((reader, writer))
    good = await booted(port, "GOOD")
    await heartbeat(good, 1)

    async def dropped(reader: asyncio.StreamReader) -> bytes:
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""
    try:
        assert await asyncio.wait_for(asyncio.gather(*(dropped(r) for r, _ in stalled)),
                                      10) == [b""] * 200
    finally:
        for _, writer in stalled:
            writer.close()
    await heartbeat(good, 2)  # a connection that finished its handshake has no open timeout
    await good.close()
    finished_cleanly(proc)


class FakeConnection:
    """What the limit needs of a ServerConnection: ``wait_closed`` and ``respond``."""

    def __init__(self) -> None:
        self.closed = asyncio.get_running_loop().create_future()

    async def wait_closed(self) -> None:
        await self.closed

    def respond(self, status, text):
        from websockets.datastructures import Headers
        from websockets.http11 import Response
        return Response(status.value, status.phrase, Headers(), text.encode())


async def test_the_limit_counts_until_the_close_and_records_one_line_a_burst():
    bursts, now = [], [0.0]
    limit = ConnectionLimit(2, lambda *burst: bursts.append(burst), gap=10,
                            clock=lambda: now[0])
    first, second = FakeConnection(), FakeConnection()
    limit.admit("A", first)
    limit.admit("B", second)
    assert limit.full_for("C") and not limit.full_for("A")  # A may replace itself
    replacing = FakeConnection()
    limit.admit("A", replacing)
    assert limit.full_for("A")  # once at a time: the old one is still closing
    for moment in (0.0, 5.0, 14.0):
        now[0] = moment
        assert limit.refuse(FakeConnection(), "C", "127.0.0.1:1").status_code == 503
    assert bursts == [("C", "127.0.0.1:1", 2)]
    now[0] = 30.0
    limit.refuse(FakeConnection(), "D", "127.0.0.1:2")
    assert len(bursts) == 2
    first.closed.set_result(None)
    await wait_for_async(lambda: not limit.full_for("A"), message="the old A closed")
    replacing.closed.set_result(None)
    await wait_for_async(lambda: not limit.full_for("C"), message="the slot given back")
    assert limit.total == 1


def test_no_limit_takes_no_slots():
    limit = ConnectionLimit(0, lambda *burst: None)
    limit.admit("A", None)
    assert limit.total == 0 and not limit.full_for("B")
