"""Which bus a process opens (command line, then python-can's configuration, then the remote
server), and the asyncio link every CAN node holds, against a real bus server."""
import asyncio
import logging
import subprocess
import sys
import threading

import can
import pytest
from conftest import ROOT, free_port, port_open, start, stop, wait_for_async

from evsim.canbus import bus as canbus
from evsim.canbus import frames
from evsim.canbus.link import CanLink


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch, tmp_path):
    for name in ("CAN_INTERFACE", "CAN_CHANNEL", "CAN_BITRATE", "CAN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_default_is_the_remote_server_on_loopback():
    assert canbus.bus_config() == {"interface": "remote", "channel": "ws://127.0.0.1:54701/"}


def test_a_channel_alone_names_another_remote_server():
    assert canbus.bus_config(channel="ws://127.0.0.1:6000/")["channel"] == "ws://127.0.0.1:6000/"


def test_python_can_environment_is_honoured(monkeypatch):
    monkeypatch.setenv("CAN_INTERFACE", "socketcan")
    monkeypatch.setenv("CAN_CHANNEL", "vcan0")
    config = canbus.bus_config()
    assert (config["interface"], config["channel"]) == ("socketcan", "vcan0")


def test_python_can_config_file_is_honoured(tmp_path):
    (tmp_path / "can.conf").write_text("[default]\ninterface = virtual\nchannel = site\n")
    config = canbus.bus_config()
    assert (config["interface"], config["channel"]) == ("virtual", "site")


def test_command_line_wins_over_configuration(monkeypatch):
    monkeypatch.setenv("CAN_INTERFACE", "socketcan")
    config = canbus.bus_config("virtual", "bench")
    assert (config["interface"], config["channel"]) == ("virtual", "bench")


def test_unknown_interface_is_one_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="unknown CAN interface 'bogus'"):
        canbus.bus_config("bogus")
    monkeypatch.setenv("CAN_INTERFACE", "bogus2")
    with pytest.raises(ValueError, match="'bogus2' in python-can's configuration"):
        canbus.bus_config()


def test_hint_names_the_command_that_starts_the_server():
    hint = canbus.hint({"interface": "remote", "channel": "ws://127.0.0.1:6001/"})
    assert hint.endswith("python -m can_remote --interface virtual --channel 0 "
                         "--host 127.0.0.1 --port 6001")
    assert "vcan0" in canbus.hint({"interface": "socketcan", "channel": "vcan0"})


def test_open_bus_gives_up_when_told_to_stop():
    import threading
    stop = threading.Event()
    stop.set()
    assert canbus.open_bus({"interface": "remote", "channel": "ws://127.0.0.1:1/"}, stop) is None


def test_open_bus_connects_to_a_running_server(bus_server):
    bus = canbus.open_bus(canbus.bus_config(channel=bus_server))
    try:
        assert bus_server in bus.channel_info
    finally:
        bus.shutdown()


@pytest.mark.parametrize("channel", ["ws://127.0.0.1:99999/", "http://127.0.0.1:1/", "ws://:5/"])
def test_a_remote_channel_that_cannot_be_is_refused(channel):
    with pytest.raises(ValueError, match="not a python-can-remote channel"):
        canbus.bus_config("remote", channel)


def test_a_bus_lost_at_shutdown_does_not_complain_later(bus_server):
    code = ("import sys\nfrom evsim.canbus import bus as canbus\n"
            "bus = canbus.open_bus(canbus.bus_config(channel=sys.argv[1]))\n"
            "bus.socket.close()  # the connection is gone under the open bus\n"
            "canbus.shutdown_quietly(bus)\n"
            "del bus\n")
    result = subprocess.run([sys.executable, "-c", code, bus_server], capture_output=True,
                            text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "Exception ignored" not in result.stderr


# -- CanLink, against a real bus server --------------------------------------------------------

class Node:
    """A CanLink running in the test's event loop, and what it has seen."""

    def __init__(self, channel: str) -> None:
        self.frames: list[frames.Frame] = []
        self.ups = 0
        self.link = CanLink(canbus.bus_config("remote", channel), self.frames.append, self.up,
                            retry_interval=0.1, name="test")
        self.task: asyncio.Task | None = None

    def up(self) -> None:
        self.ups += 1

    async def __aenter__(self) -> "Node":
        self.task = asyncio.create_task(self.link.run())
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.link.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
def tracebacks(caplog, monkeypatch):
    """What would have printed a traceback so far: log records with an exception or at ERROR
    (asyncio logs a failed callback that way) and exceptions that reached the thread hook."""
    caplog.set_level(logging.INFO)
    thread_errors: list = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)

    def found() -> list[str]:
        logged = [record.getMessage() for record in caplog.records
                  if record.exc_info or record.levelno >= logging.ERROR]
        return logged + [f"thread {args.thread.name}: {args.exc_value!r}"
                         for args in thread_errors]
    return found


def server(port: int):
    return start(canbus.server_command(port))


async def test_two_links_exchange_frames_both_ways(bus_server, tracebacks, capfd):
    async with Node(bus_server) as a, Node(bus_server) as b:
        await wait_for_async(lambda: a.ups and b.ups, timeout=30, message="both links up")
        assert await a.link.send(frames.measured_current(12.5))
        assert await b.link.send(frames.start())
        await wait_for_async(lambda: a.frames and b.frames, timeout=30, message="both frames")
    assert b.frames == [frames.Frame(0x300, "MeasuredCurrent", 12.5)]
    assert a.frames == [frames.Frame(0x200, "ChargerStart")]
    assert tracebacks() == [] and "Traceback" not in capfd.readouterr().err


async def test_a_known_id_with_a_wrong_length_is_dropped_and_the_link_carries_on(
        bus_server, tracebacks, caplog, capfd):
    async with Node(bus_server) as node, Node(bus_server) as other:
        await wait_for_async(lambda: node.ups and other.ups, timeout=30, message="links up")
        for msg in (can.Message(arbitration_id=0x300, data=b"\x01", is_extended_id=False),
                    can.Message(arbitration_id=0x123, data=b"\x01\x02", is_extended_id=False),
                    frames.measured_current(3.5)):
            assert await other.link.send(msg)
        await wait_for_async(lambda: node.frames, timeout=30, message="the good frame")
        assert node.link.up and node.ups == 1
    assert node.frames == [frames.Frame(0x300, "MeasuredCurrent", 3.5)]
    assert "MeasuredCurrent (0x300) needs 2 data bytes, got 1" in caplog.text
    assert tracebacks() == [] and "Traceback" not in capfd.readouterr().err


async def test_a_link_reopens_its_bus_when_the_server_is_killed_and_restarted(tracebacks,
                                                                              caplog, capfd):
    port = free_port()
    url = f"ws://127.0.0.1:{port}/"
    proc = server(port)
    try:
        await wait_for_async(lambda: port_open(port), timeout=30, message="the bus server")
        async with Node(url) as node:
            await wait_for_async(lambda: node.ups == 1, timeout=30, message="the link up")
            proc.kill()
            proc.wait()
            await wait_for_async(lambda: not node.link.up or tracebacks(), timeout=30,
                                 message="the link to notice the lost bus")
            assert tracebacks() == []
            proc = server(port)
            await wait_for_async(lambda: node.ups == 2, timeout=30,
                                 message="on_up again once the server is back")
            async with Node(url) as other:
                await wait_for_async(lambda: other.ups, timeout=30, message="the other link")
                assert await other.link.send(frames.measured_current(7.0))
                assert await node.link.send(frames.stop())
                await wait_for_async(lambda: node.frames and other.frames, timeout=30,
                                     message="frames both ways after the reconnect")
    finally:
        stop(proc)
    assert node.frames == [frames.Frame(0x300, "MeasuredCurrent", 7.0)]
    assert other.frames == [frames.Frame(0x201, "ChargerStop")]
    assert sum("lost" in record.getMessage() for record in caplog.records) == 1
    assert tracebacks() == [] and "Traceback" not in capfd.readouterr().err
