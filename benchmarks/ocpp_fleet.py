#!/usr/bin/env python3
"""How many charge points one csms.py holds: N plain ocpp-library clients, each sending
MeterValues at 1 Hz, against one csms.py process on loopback.

For N = 25, 50, 100, ... it measures the CALL -> CALLRESULT round trips and checks that every
MeterValues was answered and stored in the MemoryBank; it stops at the first N whose p99 is 100 ms
or more or that lost a message, and prints the largest N that held, with its messages per second.
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ocpp.v16 import ChargePoint, call
from websockets.asyncio.client import connect

from evsim.bank import MemoryBank
from evsim.cp import metering
from evsim.timefmt import utc_now

ROOT = Path(__file__).resolve().parent.parent


P99_LIMIT_MS = 100.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def client(url: str, name: str, seconds: float, offset: float,
                 rtts: list[float]) -> tuple[int, int]:
    """(sent, lost) for one charge point sending MeterValues at 1 Hz for ``seconds``."""
    async with connect(f"{url}/{name}", subprotocols=["ocpp1.6"], open_timeout=30,
                       compression=None) as connection:
        cp = ChargePoint(name, connection, response_timeout=5)
        reader = asyncio.create_task(cp.start())
        await cp.call(call.BootNotification(charge_point_model="bench", charge_point_vendor="b"))
        await asyncio.sleep(offset)
        sent = lost = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            request = call.MeterValues(connector_id=1, meter_value=[metering.meter_value(
                utc_now(), metering.readings(16.0, 230.0, float(sent)))])
            began = time.perf_counter()
            sent += 1
            try:
                await cp.call(request, suppress=False)
                rtts.append((time.perf_counter() - began) * 1000)
            except Exception:  # noqa: BLE001 - a timeout or CALLERROR is a lost message
                lost += 1
            await asyncio.sleep(max(0.0, start + sent - time.monotonic()))
        reader.cancel()
        return sent, lost


async def level(url: str, n: int, seconds: float, prefix: str) -> dict:
    rtts: list[float] = []
    began = time.monotonic()
    results = await asyncio.gather(*(client(url, f"{prefix}{i}", seconds, i / n, rtts)
                                     for i in range(n)), return_exceptions=True)
    elapsed = time.monotonic() - began
    failed = [r for r in results if isinstance(r, BaseException)]
    sent = sum(r[0] for r in results if not isinstance(r, BaseException))
    lost = sum(r[1] for r in results if not isinstance(r, BaseException)) + len(failed)
    rtts.sort()
    p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] if rtts else float("inf")
    return {"n": n, "sent": sent, "lost": lost, "p50": statistics.median(rtts) if rtts else 0,
            "p99": p99, "rate": sent / elapsed, "clients_failed": len(failed)}


def stored(db: Path, prefix: str) -> int:
    with MemoryBank(db, readonly=True) as bank:
        conn = bank._conn  # a count is all we need here
        return conn.execute("SELECT count(*) FROM metrics WHERE name = 'current' AND source = "
                            "'csms' AND charge_point_id LIKE ?", (prefix + "%",)).fetchone()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per level (default: 10)")
    parser.add_argument("--levels", default="25,50,100,200,300,400,600",
                        help="fleet sizes to try, in order (default: 25,50,100,200,300,400,600)")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        server = subprocess.Popen([sys.executable, str(ROOT / "csms.py"), "--port", str(port),
                                   "--api-port", "off",
                                   "--scenario", "none", "--db", str(db), "--log-level",
                                   "WARNING"], cwd=ROOT)
        try:
            deadline = time.monotonic() + 15
            while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("csms.py did not start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            best = None
            print(f"{'N':>5} {'sent':>7} {'lost':>5} {'stored':>7} {'p50 ms':>7} {'p99 ms':>7} "
                  f"{'MeterValues/s':>14}")
            for n in (int(x) for x in args.levels.split(",")):
                prefix = f"B{n}_"
                result = asyncio.run(level(f"ws://127.0.0.1:{port}", n, args.seconds, prefix))
                time.sleep(1.0)  # let the writer thread store the tail
                result["stored"] = stored(db, prefix)
                print(f"{n:>5} {result['sent']:>7} {result['lost']:>5} {result['stored']:>7} "
                      f"{result['p50']:>7.1f} {result['p99']:>7.1f} {result['rate']:>14.1f}",
                      flush=True)
                if result["lost"] or result["stored"] != result["sent"] or \
                        result["p99"] >= P99_LIMIT_MS:
                    break
                best = result
        finally:
            server.terminate()
            server.wait(30)
    if best is None:
        print("no fleet size held a p99 under 100 ms without loss")
        return 1
    print(f"largest fleet holding p99 < {P99_LIMIT_MS:.0f} ms with no message lost: "
          f"N = {best['n']} charge points, {best['rate']:.1f} MeterValues/s "
          f"({2 * best['rate']:.1f} OCPP messages/s both ways), p99 {best['p99']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
