#!/usr/bin/env python3
"""How many charge points one csms.py holds: N charge points, each sending MeterValues at 1 Hz,
against one csms.py process on loopback.

For each N (default 500, 1000, 2000, 3000) a fresh csms.py (a real subprocess on a free port,
its own MemoryBank) serves N charge points for ``--seconds``; it reports the CALL -> CALLRESULT
round trips (p50, p99), the messages lost (no CALLRESULT within 5 s, or a CALLERROR), the rows
the MemoryBank holds once csms.py has stopped against those the messages sent call for, and
csms.py's CPU seconds and peak RSS. A fleet holds when p99 < 100 ms, nothing is lost and every
row is there.

The charge points are a load client light enough not to be the bottleneck: its own process(es)
(``--clients``), the standard library only, raw WebSocket frames over asyncio, the JSON of each
message made by formatting a prebuilt template; the CPU it used is reported beside csms.py's.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

from measure import cpu_seconds, free_port, peak_rss_mb, percentile, wait_listening

ROOT = Path(__file__).resolve().parent.parent
P99_LIMIT_MS = 100.0
RESPONSE_TIMEOUT_S = 5.0
CONNECTING_AT_ONCE = 100
#: The rows csms.py records per MeterValues: 4 metrics (current, voltage, power, energy); the
#: frame both ways (2 OCPP_MESSAGE events) and the typed METER_VALUES event.
METRICS_PER_MESSAGE = 4
EVENTS_PER_MESSAGE = 3

def _sample(value: str, measurand: str, unit: str) -> dict[str, str]:
    return {"value": value, "context": "Sample.Periodic", "measurand": measurand, "unit": unit}


#: A MeterValues frame as %-format text: message id, timestamp, energy register (Wh).
METER_VALUES = json.dumps([2, "<id>", "MeterValues", {"connectorId": 1, "meterValue": [{
    "timestamp": "<timestamp>", "sampledValue": [
        _sample("16.0", "Current.Import", "A"), _sample("230.0", "Voltage", "V"),
        _sample("3680.0", "Power.Active.Import", "W"),
        _sample("<energy>.0", "Energy.Active.Import.Register", "Wh")]}]}],
    separators=(",", ":")).replace("<id>", "%s").replace("<timestamp>", "%s").replace(
    "<energy>", "%d")
BOOT = '[2,"boot","BootNotification",{"chargePointVendor":"bench","chargePointModel":"bench"}]'


# -- the load client (standard library only: it must stay light) --------------------------------

def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client frame: masked, as RFC 6455 requires, with the all-zero key (payload unchanged)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


def ocpp_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ChargePoint(asyncio.Protocol):
    """One charge point: the handshake, a BootNotification, then one MeterValues at a time."""

    def __init__(self, fleet: Fleet, name: str, port: int) -> None:
        self.fleet, self.name, self.port = fleet, name, port
        self.transport: Optional[asyncio.Transport] = None
        self.buffer = bytearray()
        self.upgraded = False
        self.booted = asyncio.get_running_loop().create_future()
        self.pending: Optional[str] = None
        self.sent_at = 0.0
        self.sent = 0
        self.due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((f"GET /{self.name} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                              f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                              f"Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n").encode())

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.transport = None
        if not self.booted.done():
            self.booted.set_exception(ConnectionError(f"{self.name}: closed"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                self.booted.set_exception(ConnectionError(bytes(self.buffer[:80]).decode()))
                self.transport.close()
                return
            del self.buffer[:end + 4]
            self.upgraded = True
            self.transport.write(ws_frame(BOOT.encode()))
        self._frames()

    def _frames(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            size, start = buffer[1] & 0x7F, 2
            if size == 126:
                if len(buffer) < 4:
                    return
                size, start = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                size, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + size:
                return
            opcode, payload = buffer[0] & 0x0F, bytes(buffer[start:start + size])
            del buffer[:start + size]
            if opcode == 0x1:
                self._message(payload)
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(ws_frame(payload, 0xA))

    def _message(self, payload: bytes) -> None:
        unique_id = payload.split(b'"', 2)[1].decode()
        if unique_id == "boot":
            if not self.booted.done():
                self.booted.set_result(None)
            return
        if unique_id != self.pending:
            return  # late: counted lost already
        self.pending = None
        if payload.startswith(b"[3"):
            self.fleet.rtts.append((time.perf_counter() - self.sent_at) * 1000)
        else:
            self.fleet.lost += 1
        self.fleet.schedule(self)

    def send(self) -> None:
        if self.transport is None or self.pending is not None:
            return
        self.sent += 1
        self.pending = f"{self.name}-{self.sent}"
        self.sent_at = time.perf_counter()
        self.transport.write(ws_frame((METER_VALUES % (self.pending, ocpp_now(),
                                                              self.sent)).encode()))
        self.fleet.sent += 1


@dataclass
class Fleet:
    """The charge points of one load-client process and what they measured."""

    end: float = 0.0
    sent: int = 0
    lost: int = 0
    failed: int = 0
    rtts: list[float] = field(default_factory=list)
    cps: list[ChargePoint] = field(default_factory=list)

    def schedule(self, cp: ChargePoint) -> None:
        """The next MeterValues of ``cp`` one second after the last was due (at once if late)."""
        cp.due += 1.0
        if cp.due < self.end:
            loop = asyncio.get_running_loop()
            loop.call_at(max(cp.due, loop.time()), cp.send)

    def expire(self) -> None:
        """A MeterValues without an answer after RESPONSE_TIMEOUT_S is lost."""
        now = time.perf_counter()
        for cp in self.cps:
            if cp.pending is not None and now - cp.sent_at > RESPONSE_TIMEOUT_S:
                cp.pending = None
                self.lost += 1
                self.schedule(cp)

    @property
    def waiting(self) -> bool:
        return any(cp.pending is not None for cp in self.cps)


async def connect(fleet: Fleet, port: int, name: str, limit: asyncio.Semaphore) -> None:
    loop = asyncio.get_running_loop()
    async with limit:
        try:
            _, cp = await loop.create_connection(lambda: ChargePoint(fleet, name, port),
                                                 "127.0.0.1", port)
            await asyncio.wait_for(cp.booted, 30)
        except (OSError, ConnectionError, TimeoutError) as exc:
            fleet.failed += 1
            print(f"{name}: {exc}", file=sys.stderr)
            return
    fleet.cps.append(cp)


async def load(port: int, names: list[str], offsets: list[float], seconds: float) -> dict:
    """Connect every charge point, say ready, and on the start time read from stdin send for
    ``seconds``; then wait for the last answers."""
    fleet = Fleet()
    limit = asyncio.Semaphore(CONNECTING_AT_ONCE)
    await asyncio.gather(*(connect(fleet, port, name, limit) for name in names))
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    start_wall = float(await loop.run_in_executor(None, sys.stdin.readline))
    start = loop.time() + (start_wall - time.time())
    fleet.end = start + seconds
    offset_of = dict(zip(names, offsets))
    for cp in fleet.cps:
        cp.due = start + offset_of[cp.name] - 1.0
        fleet.schedule(cp)
    while loop.time() < fleet.end or fleet.waiting:
        await asyncio.sleep(0.25)
        fleet.expire()
    for cp in fleet.cps:
        if cp.transport is not None:
            cp.transport.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"sent": fleet.sent, "lost": fleet.lost, "failed": fleet.failed, "rtts": fleet.rtts,
            "cpu": usage.ru_utime + usage.ru_stime}


def client_main(port: int, first: int, count: int, total: int, prefix: str,
                seconds: float) -> None:
    names = [f"{prefix}{i}" for i in range(first, first + count)]
    offsets = [i / total for i in range(first, first + count)]
    print(json.dumps(asyncio.run(load(port, names, offsets, seconds))), flush=True)


# -- the measurement -----------------------------------------------------------------------------







def start_csms(port: int, db: Path, extra: list[str],
               profile: Optional[Path] = None) -> subprocess.Popen:
    """csms.py on ``port``; with ``profile``, under cProfile writing there when it stops."""
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    server = subprocess.Popen([sys.executable, *profiler, str(ROOT / "csms.py"), "--port", str(port),
                               "--api-port", "off", "--scenario", "none", "--db", str(db),
                               "--log-level", "WARNING", *extra], cwd=ROOT)
    wait_listening(port, server, "csms.py")
    return server


def start_clients(port: int, n: int, clients: int, prefix: str,
                  seconds: float) -> list[subprocess.Popen]:
    shares = [n // clients + (i < n % clients) for i in range(clients)]
    firsts = [sum(shares[:i]) for i in range(clients)]
    return [subprocess.Popen([sys.executable, __file__, "--client", str(port), str(first),
                              str(share), str(n), prefix, str(seconds)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for first, share in zip(firsts, shares) if share]


def stored(db: Path, prefix: str) -> tuple[int, int]:
    """(metric rows, MeterValues events) the MemoryBank holds for the fleet."""
    sys.path.insert(0, str(ROOT))
    from evsim.bank import MemoryBank

    with MemoryBank(db, readonly=True) as bank:
        conn = bank._conn  # counts are all we need here
        pattern = prefix + "%"
        metrics = conn.execute("SELECT count(*) FROM metrics WHERE source = 'csms' AND "
                               "charge_point_id LIKE ?", (pattern,)).fetchone()[0]
        events = conn.execute("SELECT count(*) FROM events WHERE charge_point_id LIKE ? AND "
                              "(event_type = 'METER_VALUES' OR (event_type = 'OCPP_MESSAGE' AND "
                              "description LIKE '%MeterValues'))", (pattern,)).fetchone()[0]
    return metrics, events




def level(n: int, seconds: float, clients: int, extra: list[str],
          profile: Optional[Path] = None) -> dict[str, Any]:
    """One fleet of ``n`` against a fresh csms.py."""
    port, prefix = free_port(), f"B{n}_"
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        server = start_csms(port, db, extra, profile)
        try:
            procs = start_clients(port, n, clients, prefix, seconds)
            for proc in procs:
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError("a load client did not connect its charge points")
            cpu_before = cpu_seconds(server.pid)
            start = time.time() + 0.5
            for proc in procs:
                proc.stdin.write(f"{start}\n")
                proc.stdin.flush()
            results = [json.loads(proc.stdout.readline()) for proc in procs]
            cpu_after, rss = cpu_seconds(server.pid), peak_rss_mb(server.pid)
            for proc in procs:
                proc.wait(30)
        finally:
            stopping = time.monotonic()
            server.send_signal(signal.SIGTERM)
            server.wait(120)
            drained = time.monotonic() - stopping
        metrics, events = stored(db, prefix)
    rtts = [rtt for result in results for rtt in result["rtts"]]
    sent = sum(result["sent"] for result in results)
    csms_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {"n": n, "sent": sent, "lost": sum(r["lost"] for r in results),
            "failed": sum(r["failed"] for r in results), "rate": sent / seconds,
            "p50": percentile(rtts, 0.5), "p99": percentile(rtts, 0.99),
            "metrics": metrics, "metrics_expected": METRICS_PER_MESSAGE * sent,
            "events": events, "events_expected": EVENTS_PER_MESSAGE * sent,
            "csms_cpu": csms_cpu, "csms_rss": rss, "drained": drained,
            "client_cpu": sum(r["cpu"] for r in results), "seconds": seconds}


def held(result: dict[str, Any]) -> bool:
    return (result["p99"] < P99_LIMIT_MS and not result["lost"] and not result["failed"]
            and result["metrics"] == result["metrics_expected"]
            and result["events"] == result["events_expected"])


def row(result: dict[str, Any]) -> str:
    cpu = result["csms_cpu"]
    cpu_text = "n/a" if cpu is None else f"{cpu:.1f} s ({100 * cpu / result['seconds']:.0f}%)"
    rss = "n/a" if result["csms_rss"] is None else f"{result['csms_rss']:.0f} MB"
    return (f"{result['n']:>5} {result['sent']:>7} {result['rate']:>7.0f} {result['lost']:>5} "
            f"{result['failed']:>4} {result['p50']:>7.1f} {result['p99']:>7.1f} "
            f"{result['metrics']:>7}/{result['metrics_expected']:<7} "
            f"{result['events']:>7}/{result['events_expected']:<7} {cpu_text:>13} {rss:>7} "
            f"{result['client_cpu']:>6.1f} s {'yes' if held(result) else 'NO':>4}")


HEADER = (f"{'N':>5} {'sent':>7} {'MV/s':>7} {'lost':>5} {'fail':>4} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'metric rows/expected':>15} {'event rows/expected':>15} "
          f"{'csms CPU':>13} {'csms RSS':>7} {'client CPU':>8} held")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        port, first, count, total, prefix, seconds = sys.argv[2:8]
        client_main(int(port), int(first), int(count), int(total), prefix, float(seconds))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("levels", nargs="*", type=int, default=[500, 1000, 2000, 3000],
                        help="fleet sizes (default: 500 1000 2000 3000)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="sending time per fleet (default: 20)")
    parser.add_argument("--clients", type=int, default=1,
                        help="load-client processes (default: 1)")
    parser.add_argument("--csms-arg", action="append", default=[], metavar="ARG",
                        help="an extra argument for csms.py (repeatable)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run csms.py under cProfile, one DIR/csms-N.prof per fleet")
    args = parser.parse_args()
    print(HEADER, flush=True)
    results = []
    for n in args.levels:
        profile = args.profile / f"csms-{n}.prof" if args.profile else None
        result = level(n, args.seconds, args.clients, args.csms_arg, profile)
        results.append(result)
        print(row(result), flush=True)
    best = max((r for r in results if held(r)), key=lambda r: r["n"], default=None)
    if best is None:
        print(f"no fleet held p99 < {P99_LIMIT_MS:.0f} ms with nothing lost")
        return 1
    print(f"largest fleet holding p99 < {P99_LIMIT_MS:.0f} ms, nothing lost, every row stored: "
          f"N = {best['n']}, {best['rate']:.0f} MeterValues/s ({2 * best['rate']:.0f} OCPP "
          f"messages/s both ways), p99 {best['p99']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
