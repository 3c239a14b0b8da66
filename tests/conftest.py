"""Fixtures shared by the tests: free loopback ports, a real bus server, subprocess helpers."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional, TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent


T = TypeVar("T")

# Tests press Ctrl-C as a person in a terminal would. Started as a background job of a script,
# the suite may have inherited SIGINT ignored, which its children would inherit in turn (and a
# shell cannot trap a signal ignored at its start): handle it, so children start with the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tries(timeout: float, message: str) -> Iterator[None]:
    """One turn per try of a condition; fails the test once ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    for _ in _tries(timeout, message):
        result = condition()
        if result:
            return result
        time.sleep(interval)


async def wait_for_async(condition: Callable[[], T], timeout: float = 10.0,
                         interval: float = 0.02, message: str = "condition") -> T:
    """:func:`wait_for` for a test that must keep its event loop running while it waits."""
    import asyncio
    for _ in _tries(timeout, message):
        result = condition()
        if result:
            return result
        await asyncio.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def script(name: str, *args: str) -> list[str]:
    """The command line that runs a top-level script of the repo with this interpreter."""
    return [sys.executable, str(ROOT / name), *args]


def start(cmd: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **kwargs.pop("env", {})}
    return subprocess.Popen(cmd, cwd=kwargs.pop("cwd", ROOT), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> tuple[Optional[int], str]:
    """SIGTERM the process, wait for it, and return (exit code, output)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, out
    return proc.returncode, out


@pytest.fixture
def bus_server() -> Iterator[str]:
    """A python-can-remote bus server on a free loopback port; yields its channel URL."""
    port = free_port()
    proc = start([sys.executable, "-m", "can_remote", "--interface", "virtual", "--channel", "0",
                  "--host", "127.0.0.1", "--port", str(port)])
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, message="bus server")
        assert proc.poll() is None, proc.communicate()[0]
        yield f"ws://127.0.0.1:{port}/"
    finally:
        stop(proc)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """A main() run in process points the root logger at this test's captured stderr
    (cli.setup_logging); a later test must not log into that stream once it is closed."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def default_db_outside_the_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process started without --db writes to the test's own directory, never the repo."""
    monkeypatch.setenv("EV_SIM_DB", str(tmp_path / "default.db"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "memory.db"


@pytest.fixture
async def site(db_path: Path):
    """``await site(**options)``: a running central system with its control API
    (csms_harness.Site) on ``db_path``; every one made is stopped after the test."""
    from csms_harness import Site
    sites: list = []

    async def make(**options):
        sites.append(await Site(db_path, **options).start())
        return sites[-1]
    yield make
    for made in sites:
        await made.stop()
