"""A charge point that reconnects while its old connection is half-open (the peer gone without a
FIN: it will never answer the close) is served at once, not after the close handshake times
out (issue 15, case 3), over real WebSockets."""
from __future__ import annotations

from websockets.asyncio.client import connect
from websockets.protocol import State

from evsim.csms import server


async def test_a_new_connection_is_served_while_the_half_open_one_it_replaces_hangs(
        site, monkeypatch):
    replaced = []
    close_quietly = server._close_quietly

    async def closing(endpoint):
        replaced.append(endpoint)
        await close_quietly(endpoint)
    monkeypatch.setattr(server, "_close_quietly", closing)
    central = await site()
    old = await connect(f"ws://127.0.0.1:{central.port}/CP_H", subprotocols=["ocpp1.6"])
    old.transport.pause_reading()  # it never reads, so never answers, the close
    try:
        await central.connect("CP_H")  # booted: answered
        [endpoint] = replaced
        assert endpoint._connection.state is State.CLOSING  # still waiting for the old one
        old.transport.resume_reading()
        await old.wait_closed()
        assert (old.close_code, endpoint._connection.state) == (1000, State.CLOSED)
        assert central.system.registry.get("CP_H").link is not endpoint
    finally:
        old.transport.abort()
