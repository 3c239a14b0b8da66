"""No current without a transaction, whatever dies: the CAN bus, the charger or the charge point
killed mid-transaction (issue 15, case 1), on a real site of real processes on loopback.

The current is read where it flows: the charger's 0x300 frames on the bus, from a client of the
test's own. The charge point's view comes from its control API.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Optional

import can
import pytest
from conftest import ROOT, free_port, port_open, wait_for

from evsim.bank import MemoryBank
from evsim.canbus import frames

SPEED = "10"
AMPS = 32.0
DEADLINE_S = 60.0


class Site:
    """A bus server, charger_module.py, csms.py and cp.py (with its API), each with a log file;
    any can be killed and started again on the same ports."""

    def __init__(self, tmp_path: Path, charger_args: tuple[str, ...] = ()) -> None:
        self.dir = tmp_path
        self.db = tmp_path / "memory.db"
        self.bus_port, self.port, self.api_port = free_port(), free_port(), free_port()
        self.channel = f"ws://127.0.0.1:{self.bus_port}/"
        self.charger_args = charger_args
        self.procs: dict[str, subprocess.Popen] = {}

    def command(self, name: str) -> list[str]:
        common = ["--speed", SPEED, "--db", str(self.db)]
        can_args = ["--can-interface", "remote", "--can-channel", self.channel]
        return {
            "bus": ["-m", "can_remote", "--interface", "virtual", "--channel", "0", "--host",
                    "127.0.0.1", "--port", str(self.bus_port)],
            "charger": [str(ROOT / "charger_module.py"), *common, *can_args, "--ramp", "1",
                        *self.charger_args],
            "csms": [str(ROOT / "csms.py"), *common, "--port", str(self.port), "--api-port",
                     "0", "--scenario", "none"],
            "cp": [str(ROOT / "cp.py"), *common, *can_args, "--id", "CP_S", "--url",
                   f"ws://127.0.0.1:{self.port}", "--api-port", str(self.api_port)],
        }[name]

    def start(self, name: str) -> None:
        with (self.dir / f"{name}.log").open("a") as log:
            self.procs[name] = subprocess.Popen([sys.executable, *self.command(name)], cwd=ROOT,
                                                stdout=log, stderr=subprocess.STDOUT)
        if name == "bus":
            wait_for(lambda: port_open(self.bus_port), message="the bus server")

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait(30)

    def log(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text()

    def stop(self) -> dict[str, Optional[int]]:
        """SIGTERM in the order run_all.sh uses; the exit codes."""
        codes = {}
        for name in ("csms", "cp", "charger", "bus"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = None
        return codes

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/api/v1{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def booted(self) -> bool:
        try:
            return self.api("GET", "/state")["booted"]
        except OSError:
            return False

    def connector(self) -> dict:
        try:
            return self.api("GET", "/state")["connectors"][1]
        except OSError:
            return {}

    def published(self, count: int) -> list[float]:
        """The current in the charger's next ``count`` 0x300 frames (fewer if the bus fails)."""
        amps: list[float] = []
        try:
            with can.Bus(interface="remote", channel=self.channel) as bus:
                while len(amps) < count:
                    msg = bus.recv(5.0)
                    if msg is None:
                        break
                    frame = frames.decode(msg)
                    if frame is not None and frame.arbitration_id == frames.MEASURED_CURRENT:
                        amps.append(frame.amps)
        except (can.CanError, OSError):
            pass
        return amps

    def settles_at(self, amps: float, frames_in_a_row: int = 5) -> None:
        """Wait until the charger publishes ``amps`` in several frames running."""
        wait_for(lambda: self.published(frames_in_a_row) == [amps] * frames_in_a_row,
                 timeout=DEADLINE_S, interval=0.05, message=f"the charger at {amps} A")

    def charging(self) -> int:
        """Start a transaction as a driver does, wait for the current; its transaction id."""
        for name in ("bus", "charger", "csms", "cp"):
            self.start(name)
        wait_for(self.booted, timeout=DEADLINE_S, message="the charge point booted")
        self.api("POST", "/connectors/1/plug-in")
        self.api("POST", "/connectors/1/present-id-tag", {"idTag": "TAG_S"})
        tx = wait_for(lambda: self.connector().get("transactionId"), timeout=DEADLINE_S,
                      message="a transaction")
        self.settles_at(AMPS)
        return tx

    def ended(self, transaction_id: int) -> Optional[str]:
        """When the central system recorded the session as ended."""
        with MemoryBank(self.db, readonly=True) as bank:
            return next(session["end_time"] for session in bank.get_sessions(None)
                        if session["transaction_id"] == transaction_id)


@pytest.fixture
def site(tmp_path):
    sites: list[Site] = []

    def make(*charger_args: str) -> Site:
        sites.append(Site(tmp_path, charger_args))
        return sites[-1]
    yield make
    for each in sites:
        each.stop()


def test_a_stop_sent_while_the_bus_was_down_reaches_the_charger_once_it_is_back(site):
    """Without the charger's watchdog, only the charge point's repeat can stop it."""
    s = site("--watchdog", "0")
    tx = s.charging()
    s.kill("bus")
    s.api("POST", "/connectors/1/unplug")  # the stop frame cannot be sent
    wait_for(lambda: s.connector().get("transactionId") is None, message="the stop")
    s.start("bus")
    s.settles_at(0.0)
    assert s.connector()["status"] == "Available"
    wait_for(lambda: s.ended(tx), timeout=DEADLINE_S,
             message="the session closed in the central system")
    codes = s.stop()
    assert [codes[name] for name in ("csms", "cp", "charger")] == [0, 0, 0]
    with MemoryBank(s.db, readonly=True) as bank:
        sent = [e["data"]["name"] for e in reversed(bank.get_recent_events(
            None, {"event_type": "CAN_FRAME", "source": "cp"}))]
    runs = [name for name in sent if name in ("ChargerStart", "ChargerStop")]
    assert runs[-2:] == ["ChargerStart", "ChargerStop"]  # the stop, sent once the bus was back


def test_a_bus_back_after_an_outage_mid_transaction_charges_again(site):
    """The charger's watchdog stopped it while the bus was down; the charge point's re-sync
    starts it again, as its transaction still runs."""
    s = site()
    tx = s.charging()
    s.kill("bus")
    wait_for(lambda: "watchdog: no command" in s.log("charger"), timeout=DEADLINE_S,
             message="the watchdog")
    s.start("bus")
    s.settles_at(AMPS)
    connector = s.connector()
    assert (connector["transactionId"], connector["status"]) == (tx, "Charging")


def test_a_charger_killed_and_started_again_mid_transaction_charges_again(site):
    s = site()
    tx = s.charging()
    s.kill("charger")
    wait_for(lambda: s.connector().get("status") == "Faulted", timeout=DEADLINE_S,
             message="the charge point to see the charger gone")
    s.start("charger")
    s.settles_at(AMPS)
    wait_for(lambda: s.connector().get("status") == "Charging", timeout=DEADLINE_S,
             message="Charging again")
    assert s.connector()["transactionId"] == tx


def test_a_charge_point_killed_mid_transaction_leaves_the_charger_stopped(site):
    s = site()
    tx = s.charging()
    s.kill("cp")
    s.settles_at(0.0)
    with MemoryBank(s.db, readonly=True) as bank:
        assert bank.get_recent_events(10, {"event_type": "WATCHDOG"})  # it stopped by itself
    s.start("cp")  # it closes the transaction the crash left open, and does not start again
    wait_for(lambda: s.ended(tx), timeout=DEADLINE_S,
             message="the session closed in the central system")
    s.settles_at(0.0)
    assert s.connector()["transactionId"] is None
