"""A hostile client against csms.py (a real process on loopback): a forged id, an oversized
frame, a handshake that never ends. Each is refused or dropped; a good charge point is served
throughout."""
from __future__ import annotations

import asyncio

import pytest
import websockets
from conftest import free_port, port_open, script, start, stop, wait_for
from ocpp.v16 import ChargePoint, call
from websockets.asyncio.client import connect

from evsim.bank import MemoryBank


@pytest.fixture
def csms(db_path):
    port = free_port()
    proc = start(script("csms.py", "--port", str(port), "--scenario", "none", "--api-port", "off",
                        "--db", str(db_path), "--max-frame-bytes", "4096",
                        "--refusal-delay", "0.01"))
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, timeout=30, message="csms")
        assert proc.poll() is None
        yield port, proc
    finally:
        stop(proc)


async def boots(port: int, charge_point_id: str) -> bool:
    async with connect(f"ws://127.0.0.1:{port}/{charge_point_id}",
                       subprotocols=["ocpp1.6"]) as ws:
        client = ChargePoint(charge_point_id, ws, response_timeout=30)
        reader = asyncio.create_task(client.start())
        try:
            result = await client.call(call.BootNotification(charge_point_model="M",
                                                             charge_point_vendor="V"))
            return result.status == "Accepted"
        finally:
            reader.cancel()


async def test_hostile_clients_are_refused_and_a_good_one_is_served(csms, db_path):
    port, proc = csms
    stalled = await asyncio.open_connection("127.0.0.1", port)  # never sends its handshake
    for forged in ("CP%0A12:00:00%20csms%20INFO%20forged", "X" * 49, "A%2FB"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{port}/{forged}", subprotocols=["ocpp1.6"]):
                pass
        assert refused.value.response.status_code == 400
    async with connect(f"ws://127.0.0.1:{port}/BIG", subprotocols=["ocpp1.6"]) as ws:
        await ws.send('[2,"1","DataTransfer",{"vendorId":"x","data":"' + "y" * 10000 + '"}]')
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 1009
    assert await boots(port, "GOOD")
    code, out = stop(proc)  # the stalled client is still there
    stalled[1].close()
    assert code == 0, out
    assert not any(line.startswith("12:00:00 csms INFO forged") for line in out.splitlines())
    with MemoryBank(db_path, readonly=True) as bank:
        refusals = bank.get_recent_events(None, {"event_type": "SECURITY"})
        stored = bank.get_recent_events(None, {"charge_point_id": "BIG"})
    assert len(refusals) == 3
    assert all("\n" not in event["description"] for event in refusals)
    assert all(len(str(event["data"])) < 1000 for event in stored)  # the frame was not stored
