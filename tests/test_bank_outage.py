"""The MemoryBank full or read-only under a running writer: loud, bounded, and nothing lost that
fits in the buffer (``PRAGMA max_page_count`` plays the full disk, no root needed)."""
from __future__ import annotations

import asyncio
import json
import logging
import resource
import threading

import pytest
import websockets
from conftest import free_port, port_open, script, start, stop, wait_for

from evsim.bank import MemoryBank
from evsim.bank.writer import BankWriter


class Disk:
    """The writer's connection, whose room the test sets."""

    def __init__(self) -> None:
        self.bank: MemoryBank | None = None
        self.ready = threading.Event()

    def opened(self, bank: MemoryBank) -> None:
        self.bank = bank
        self.ready.set()

    def room(self, pages: int) -> None:
        """Allow the file this many pages (no fewer than it has)."""
        conn = self.bank.connection
        with conn._lock:
            conn.sqlite.execute(f"PRAGMA max_page_count = {pages}")

    def read_only(self, on: bool) -> None:
        """The file refuses writes as a read-only one does (SQLITE_READONLY)."""
        conn = self.bank.connection
        with conn._lock:
            conn.sqlite.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")

    def full(self) -> None:
        conn = self.bank.connection
        with conn._lock:
            pages = conn.sqlite.execute("PRAGMA page_count").fetchone()[0]
            conn.sqlite.execute(f"PRAGMA max_page_count = {pages}")


def events(db_path) -> list[str]:
    with MemoryBank(db_path, readonly=True) as bank:
        return [e["description"] for e in reversed(bank.get_recent_events(None, {
            "event_type": "E"}))]


def test_a_full_disk_keeps_rows_waiting_and_writes_them_when_room_returns(db_path, caplog):
    disk = Disk()
    writer = BankWriter(str(db_path), "test", retry_s=0.01, opened=disk.opened)
    disk.full()
    with caplog.at_level(logging.WARNING, logger="bank"):
        for i in range(2000):
            writer.event("E", f"e{i:04d}", {"pad": "x" * 200})
        wait_for(lambda: writer.failing, message="the outage")
        disk.room(1_000_000)
        wait_for(lambda: not writer.failing, message="the end of the outage")
        assert writer.close() == 0
    assert events(db_path) == [f"e{i:04d}" for i in range(2000)]
    lines = [r.getMessage() for r in caplog.records if r.name == "bank"]
    assert len(lines) == 2, lines
    assert "cannot be written" in lines[0] and "full" in lines[0]
    assert "written again" in lines[1] and "0 rows were lost" in lines[1]
    with MemoryBank(db_path, readonly=True) as bank:
        (storage,) = bank.get_recent_events(None, {"event_type": "STORAGE"})
    assert storage["data"]["lost"] == 0


def test_an_outage_longer_than_the_buffer_loses_the_oldest_rows_counted(db_path, caplog):
    disk = Disk()
    writer = BankWriter(str(db_path), "test", retry_s=0.01, max_waiting=100,
                        opened=disk.opened)
    disk.full()
    for i in range(300):
        writer.event("E", f"e{i:03d}")
    wait_for(lambda: writer.failing and writer.lost == 200, message="200 rows over the bound")
    disk.room(1_000_000)
    wait_for(lambda: not writer.failing, message="the end of the outage")
    assert writer.close() == 200
    assert events(db_path) == [f"e{i:03d}" for i in range(200, 300)]
    with MemoryBank(db_path, readonly=True) as bank:
        (storage,) = bank.get_recent_events(None, {"event_type": "STORAGE"})
    assert storage["data"]["lost"] == 200


def test_rows_still_waiting_when_the_process_stops_are_reported_lost(db_path, caplog):
    disk = Disk()
    writer = BankWriter(str(db_path), "test", retry_s=0.01, opened=disk.opened)
    disk.full()
    for i in range(3000):
        writer.metric("current", float(i), "A", "CP")
    wait_for(lambda: writer.failing, message="the outage")
    with caplog.at_level(logging.ERROR, logger="bank"):
        lost = writer.close()
    with MemoryBank(db_path, readonly=True) as bank:
        written = len(bank.get_metrics("current"))
    assert lost > 0 and written + lost == 3000  # every row either written or counted
    assert any(f"{lost} rows could not be written" in r.getMessage() for r in caplog.records)


def test_a_summary_at_most_once_per_interval_while_it_lasts(db_path, caplog):
    disk = Disk()
    writer = BankWriter(str(db_path), "test", retry_s=0.001, summary_s=3600,
                        opened=disk.opened)
    disk.full()
    with caplog.at_level(logging.ERROR, logger="bank"):
        for i in range(500):
            writer.event("E", f"e{i}")
        wait_for(lambda: writer.failing, message="the outage")
        disk.room(1_000_000)
        wait_for(lambda: not writer.failing, message="the end of the outage")
        writer.close()
    errors = [r for r in caplog.records if r.name == "bank" and r.levelno >= logging.ERROR]
    assert len(errors) == 1  # hundreds of failed retries, one line


def test_a_read_only_file_is_an_outage_like_a_full_disk(db_path, caplog):
    disk = Disk()
    writer = BankWriter(str(db_path), "test", retry_s=0.01, opened=disk.opened)
    disk.read_only(True)
    with caplog.at_level(logging.ERROR, logger="bank"):
        writer.event("E", "e0")
        wait_for(lambda: writer.failing, message="the outage")
        disk.read_only(False)
        wait_for(lambda: not writer.failing, message="the end of the outage")
        assert writer.close() == 0
    assert events(db_path) == ["e0"]
    assert "readonly" in caplog.records[0].getMessage()


# -- a real process ------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs prlimit (Linux)")
def test_csms_on_a_full_disk_says_so_keeps_serving_and_exits_1_with_what_it_lost(db_path):
    """RLIMIT_FSIZE on the running csms.py plays the full disk: its writes fail as ENOSPC's
    would. Room returns, then goes again until it stops."""
    port = free_port()
    proc = start(script("csms.py", "--port", str(port), "--api-port", "0", "--db",
                        str(db_path), "--scenario", "none"))
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, message="csms")
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        asyncio.run(heartbeats(port, 50))
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        wait_for(lambda: stored_heartbeats(db_path) == 50, timeout=30,
                 message="the waiting rows written")
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        asyncio.run(heartbeats(port, 10))
    finally:
        code, output = stop(proc, timeout=30)
    lines = output.splitlines()
    assert code == 1, output
    assert "Traceback" not in output
    assert len([line for line in lines if "MemoryBank cannot be written" in line]) == 2
    assert len([line for line in lines if "MemoryBank written again" in line]) == 1
    assert lines[-1].startswith("csms.py: error: MemoryBank: ") and "lost" in lines[-1]
    with MemoryBank(db_path, readonly=True) as bank:
        assert len(bank.get_recent_events(None, {"event_type": "STORAGE"})) == 1
    assert stored_heartbeats(db_path) == 50


async def heartbeats(port: int, count: int) -> None:
    """A charge point that boots and sends ``count`` Heartbeats, each answered."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/CP_D",
                                  subprotocols=["ocpp1.6"]) as ws:
        for n, (action, payload) in enumerate(
                [("BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"})]
                + [("Heartbeat", {})] * count):
            await ws.send(json.dumps([2, str(n), action, payload]))
            assert json.loads(await ws.recv())[0] == 3


def stored_heartbeats(db_path) -> int:
    with MemoryBank(db_path, readonly=True) as bank:
        return sum("Heartbeat" in e["description"] and "CALL " in e["description"]
                   for e in bank.get_recent_events(None, {"source": "csms"}))
