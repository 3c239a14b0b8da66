#!/usr/bin/env python3
"""Whether csms.py keeps serving well-behaved charge points while others misbehave at scale.

One csms.py (a real subprocess on a free loopback port, its own MemoryBank) serves
``--good`` charge points, each sending a Heartbeat every ``--interval`` s, while in turn:

- churn: ``--churn`` WebSocket connections opened and closed at once, ``--at-once`` at a time;
- stalled: ``--stalled`` TCP connections that send half an upgrade request and never finish it,
  held until csms.py drops them (``--open-timeout``);
- duplicates: ``--duplicates`` connections for one charge point id opened in one burst, each
  replacing the one before.

The good charge points run in a process of their own. For each phase it prints how long it
took, the p50/p99 round trip of the Heartbeats sent meanwhile (and any not answered within
5 s), and csms.py's CPU seconds; then
csms.py's peak RSS, and whether it stayed up and exited 0 on SIGTERM without a Traceback.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Optional

import websockets
from measure import cpu_seconds, free_port, peak_rss_mb, percentile, wait_listening
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
RESPONSE_TIMEOUT_S = 5.0
BOOT = '[2,"boot","BootNotification",{"chargePointVendor":"bench","chargePointModel":"bench"}]'










def start_csms(port: int, db: Path, extra: list[str]) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, str(ROOT / "csms.py"), "--port", str(port),
                               "--api-port", "off", "--scenario", "none", "--db", str(db),
                               "--log-level", "WARNING", *extra], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_listening(port, server, "csms.py")
    return server


class GoodFleet:
    """Charge points that boot and send Heartbeats, in a process of their own (the abusers'
    work must not delay them): each round trip is kept with the monotonic time it was sent,
    which the parent process files under the phase running then."""

    def __init__(self, port: int, n: int, interval: float) -> None:
        self.port, self.n, self.interval = port, n, interval
        self.round_trips: list[tuple[float, float]] = []
        self.unanswered: list[float] = []

    async def run(self) -> None:
        """Beat until standard input closes, then print what was measured as JSON."""
        connections = await asyncio.gather(*(self._boot(i) for i in range(self.n)))
        tasks = [asyncio.create_task(self._beat(ws, i * self.interval / self.n))
                 for i, ws in enumerate(connections)]
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(json.dumps({"round_trips": self.round_trips, "unanswered": self.unanswered}))

    async def _boot(self, i: int) -> ClientConnection:
        ws = await connect(f"ws://127.0.0.1:{self.port}/GOOD_{i:03d}", subprotocols=["ocpp1.6"],
                           open_timeout=30)
        await ws.send(BOOT)
        await ws.recv()
        return ws

    async def _beat(self, ws: ClientConnection, offset: float) -> None:
        """A Heartbeat every ``interval``, the fleet's spread evenly over it."""
        await asyncio.sleep(offset)
        for number in itertools.count():
            sent = time.monotonic()
            await ws.send(f'[2,"hb{number}","Heartbeat",{{}}]')
            try:
                answer = json.loads(await asyncio.wait_for(ws.recv(), RESPONSE_TIMEOUT_S))
            except (TimeoutError, websockets.ConnectionClosed):
                self.unanswered.append(sent)
                return
            if answer[0] == 3:
                self.round_trips.append((sent, time.monotonic() - sent))
            await asyncio.sleep(self.interval)


def start_fleet(port: int, n: int, interval: float) -> subprocess.Popen:
    fleet = subprocess.Popen([sys.executable, __file__, "--fleet", str(port), str(n),
                              str(interval)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    if fleet.stdout.readline().strip() != "ready":
        fleet.kill()
        raise RuntimeError("the good charge points did not boot")
    return fleet


def fleet_measures(fleet: subprocess.Popen) -> dict[str, list]:
    out, _ = fleet.communicate(timeout=60)
    return json.loads(out)


async def churn(port: int, count: int, at_once: int) -> dict[str, Any]:
    """Connect and disconnect ``count`` times, ``at_once`` at a time."""
    slots, failed = asyncio.Semaphore(at_once), 0

    async def once(i: int) -> None:
        nonlocal failed
        async with slots:
            try:
                async with connect(f"ws://127.0.0.1:{port}/CHURN_{i}", subprotocols=["ocpp1.6"],
                                   open_timeout=30, close_timeout=5):
                    pass
            except (OSError, websockets.WebSocketException, TimeoutError):
                failed += 1
    await asyncio.gather(*(once(i) for i in range(count)))
    return {"failed": failed}


async def stalled(port: int, count: int) -> dict[str, Any]:
    """``count`` half upgrades, held until the server drops each (EOF or reset)."""
    opened = time.perf_counter()
    streams = []
    for i in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /STALL_{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        streams.append((reader, writer))
    open_s = time.perf_counter() - opened

    async def dropped(reader: asyncio.StreamReader) -> None:
        try:
            await reader.read()
        except OSError:
            pass
    await asyncio.gather(*(dropped(reader) for reader, _ in streams))
    for _, writer in streams:
        writer.close()
    return {"opened in": f"{open_s:.2f} s"}


async def duplicates(port: int, count: int) -> dict[str, Any]:
    """``count`` connections for one id at once; all but the one the server took last are
    closed by the server."""
    async def one() -> Optional[ClientConnection]:
        try:
            return await connect(f"ws://127.0.0.1:{port}/DUP", subprotocols=["ocpp1.6"],
                                 open_timeout=30)
        except (OSError, websockets.WebSocketException, TimeoutError):
            return None
    connections = [ws for ws in await asyncio.gather(*(one() for _ in range(count))) if ws]
    deadline = time.monotonic() + 30
    while sum(ws.close_code is None for ws in connections) > 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    still_open = [ws for ws in connections if ws.close_code is None]
    for ws in still_open:
        await ws.close()
    return {"opened": len(connections), "left open": len(still_open)}


async def phase(pid: int, name: str,
                work: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    cpu, started = cpu_seconds(pid), time.monotonic()
    outcome = await work()
    ended = time.monotonic()
    return {"phase": name, "took": ended - started, "from": started, "to": ended,
            "cpu": (cpu_seconds(pid) or 0) - (cpu or 0), **outcome}


async def run(port: int, pid: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    async def idle() -> dict[str, Any]:
        await asyncio.sleep(2)
        return {}
    return [await phase(pid, "nothing else (baseline)", idle),
            await phase(pid, f"{args.churn} connects/disconnects",
                        lambda: churn(port, args.churn, args.at_once)),
            await phase(pid, f"{args.stalled} stalled handshakes",
                        lambda: stalled(port, args.stalled)),
            await phase(pid, f"{args.duplicates} duplicate ids",
                        lambda: duplicates(port, args.duplicates))]


def with_heartbeats(result: dict[str, Any], measures: dict[str, list]) -> dict[str, Any]:
    """The round trips of the Heartbeats sent while the phase ran."""
    during = [rtt for sent, rtt in measures["round_trips"] if result["from"] <= sent <= result["to"]]
    lost = sum(result["from"] <= sent <= result["to"] for sent in measures["unanswered"])
    return {**result, "p50": 1000 * percentile(during, 0.5), "p99": 1000 * percentile(during, 0.99),
            "heartbeats": len(during), "unanswered": lost}


def row(result: dict[str, Any]) -> str:
    extra = ", ".join(f"{key} {value}" for key, value in result.items()
                      if key not in ("phase", "took", "from", "to", "cpu", "p50", "p99",
                                     "heartbeats", "unanswered"))
    return (f"{result['phase']:<32} {result['took']:7.2f} s  heartbeat p50 {result['p50']:6.1f} "
            f"/ p99 {result['p99']:6.1f} ms ({result['heartbeats']} answered, "
            f"{result['unanswered']} not)  csms {result['cpu']:5.2f} CPU-s  {extra}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--fleet":
        port, n, interval = sys.argv[2:5]
        asyncio.run(GoodFleet(int(port), int(n), float(interval)).run())
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--good", type=int, default=50, help="well-behaved charge points (50)")
    parser.add_argument("--interval", type=float, default=0.2,
                        help="seconds between a good charge point's Heartbeats (0.2)")
    parser.add_argument("--churn", type=int, default=1000, help="connects/disconnects (1000)")
    parser.add_argument("--at-once", type=int, default=50, help="churn concurrency (50)")
    parser.add_argument("--stalled", type=int, default=1000, help="stalled handshakes (1000)")
    parser.add_argument("--duplicates", type=int, default=100,
                        help="connections for one id in a burst (100)")
    parser.add_argument("--open-timeout", type=float, default=5.0,
                        help="csms.py --open-timeout (5)")
    parser.add_argument("--csms-arg", action="append", default=[], metavar="ARG",
                        help="an extra argument for csms.py (repeatable)")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        server = start_csms(port, Path(workdir) / "memory.db",
                            ["--open-timeout", str(args.open_timeout), *args.csms_arg])
        fleet = None
        try:
            fleet = start_fleet(port, args.good, args.interval)
            time.sleep(1)
            phases = asyncio.run(run(port, server.pid, args))
            time.sleep(1)
            up = server.poll() is None
            rss = peak_rss_mb(server.pid)
            measures = fleet_measures(fleet)
        finally:
            if fleet is not None and fleet.poll() is None:
                fleet.kill()
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
            try:
                out, _ = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                out, _ = server.communicate()
    results = [with_heartbeats(result, measures) for result in phases]
    for result in results:
        print(row(result))
    print(f"csms.py: peak RSS {rss or float('nan'):.0f} MB, stayed up: {'yes' if up else 'NO'}, "
          f"exit code on SIGTERM {server.returncode}, Traceback in its output: "
          f"{'YES' if 'Traceback' in out else 'no'}, {len(out.splitlines())} log lines")
    return 0 if up and server.returncode == 0 and "Traceback" not in out else 1


if __name__ == "__main__":
    raise SystemExit(main())
