"""A fleet decides the same at any --speed: ten charge points (the real Station, each with its
in-process charger) against the real CentralSystem with a scenario mix, wired by in-memory
WebSockets, on one FakeClock. At two speeds the anomalies are the same kinds, for the same charge
points, decided at the same sample of each. The speeds are powers of two, so that the FakeClock's
sums of steps are exact and equal deadlines stay equal."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import ocpp.messages
import websockets

from evsim import cli
from evsim.bank import MemoryBank
from evsim.bank.writer import BankWriter
from evsim.clock import FakeClock, settle
from evsim.cp import fleet
from evsim.cp.connection import serve_connection
from evsim.cp.station import Station
from evsim.cp.store import StateStore
from evsim.csms.mix import parse_mix
from evsim.csms.server import CentralSystem
from evsim.timefmt import parse_timestamp

COUNT, CYCLES, MIX, SEED = 10, 5, "fluctuation=0.4,normal=0.6", 11
CLOSED = object()


class Pipe:
    """One end of an in-memory WebSocket: what it sends, its peer receives."""

    def __init__(self, path: str) -> None:
        self.request = SimpleNamespace(path=path)
        self.remote_address = ("127.0.0.1", 40000)
        self.subprotocol = "ocpp1.6"
        self.incoming: asyncio.Queue = asyncio.Queue()
        self.peer: Pipe | None = None

    @classmethod
    def pair(cls, path: str) -> tuple[Pipe, Pipe]:
        server, client = cls(path), cls(path)
        server.peer, client.peer = client, server
        return server, client

    async def send(self, message: str) -> None:
        self.peer.incoming.put_nowait(message)

    async def recv(self) -> str:
        message = await self.incoming.get()
        if message is CLOSED:
            raise websockets.ConnectionClosed(None, None)
        return message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        for end in (self, self.peer):
            end.incoming.put_nowait(CLOSED)


async def drain(pipes: list[Pipe]) -> None:
    """Let every message in flight be read and answered before time moves on: each decision is
    then made at the simulated second of its sample, however many turns of the loop it took."""
    quiet = 0
    while quiet < 3:
        await settle()
        quiet = quiet + 1 if all(pipe.incoming.empty() for pipe in pipes) else 0


async def run_fleet(db_path, speed: float) -> list[tuple]:
    """The fleet until every scenario is complete; each anomaly as (charge point, kind, the
    simulated second it was decided at)."""
    clock = FakeClock(speed)
    start = clock.now()
    writer = BankWriter(str(db_path), "csms", clock.now)
    supervisor = cli.Supervisor()
    system = CentralSystem(writer, supervisor, clock, scenario="normal", cycles=CYCLES,
                           mix=parse_mix(MIX, SEED))
    tasks, pipes = [], []
    for charge_point_id in fleet.fleet_ids("CP_", COUNT):
        station = Station(charge_point_id, StateStore(":memory:"), clock)
        charger = fleet.attach_charger(station, clock, period_s=1.0)
        server_end, client_end = Pipe.pair(f"/{charge_point_id}")
        pipes += [server_end, client_end]
        tasks.append(asyncio.create_task(system.handle(server_end)))
        tasks.append(asyncio.create_task(serve_connection(station, client_end)))
        tasks += [asyncio.create_task(c) for c, _ in fleet.station_tasks(station, charger)]
    await settle()
    for _ in range(600):
        await clock.advance(0.5)
        await drain(pipes)
        if all(s.runner.complete for s in system.registry):
            break
    system.shutdown()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await supervisor.cancel()
    writer.close()
    with MemoryBank(db_path, readonly=True) as bank:
        return sorted((a["charge_point_id"], a["anomaly_type"],
                       round((parse_timestamp(a["timestamp"]) - start).total_seconds() * speed,
                             2))
                      for a in bank.get_anomalies(None))


async def test_a_fleet_makes_the_same_decisions_at_two_speeds(tmp_path, monkeypatch):
    # the library's own switch: validate in the loop, not in a thread whose timing the
    # FakeClock cannot wait for
    monkeypatch.setattr(ocpp.messages, "ASYNC_VALIDATION", False)
    slow = await run_fleet(tmp_path / "slow.db", 16.0)
    fast = await run_fleet(tmp_path / "fast.db", 128.0)
    fluctuating = {i for i in fleet.fleet_ids("CP_", COUNT)
                   if parse_mix(MIX, SEED).scenario_of(i) == "fluctuation"}
    assert {charge_point for charge_point, _, _ in slow} == fluctuating != set()
    assert fast == slow
