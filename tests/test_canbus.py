"""Which bus a process opens: command line, then python-can's configuration, then the remote server."""
import subprocess
import sys

import pytest
from conftest import ROOT

from evsim.canbus import bus as canbus


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
