"""The charger module: its ramp on explicit ticks, and as a CAN node in its own process."""
import itertools
import subprocess

import can
import pytest
from conftest import free_port, script, start, stop, wait_for

from evsim.bank import MemoryBank
from evsim.canbus import frames
from evsim.charger.main import Charger, receive


def ticks(charger: Charger, n: int) -> list[float]:
    return [charger.tick() for _ in range(n)]


def test_starts_stopped_at_zero():
    charger = Charger()
    assert (charger.state, charger.current, ticks(charger, 3)) == ("STOPPED", 0.0, [0, 0, 0])


def test_ramps_a_fraction_of_the_gap_each_tick():
    charger = Charger(ramp=0.2)
    charger.set_limit(100)
    charger.start()
    assert ticks(charger, 3) == pytest.approx([20.0, 36.0, 48.8])


def test_reaches_the_target_instead_of_creeping():
    charger = Charger(ramp=0.2)
    charger.set_limit(100)
    charger.start()
    currents = ticks(charger, 60)
    assert currents[-1] == 100.0
    reached = currents.index(100.0)
    assert all(c == 100.0 for c in currents[reached:])
    assert all(a < b for a, b in itertools.pairwise(currents[:reached + 1]))
    charger.stop()
    assert ticks(charger, 60)[-1] == 0.0


def test_never_above_the_limit_nor_negative():
    charger = Charger(ramp=0.5)
    charger.set_limit(100)
    charger.start()
    ticks(charger, 10)
    charger.set_limit(10)
    assert max(ticks(charger, 20)) <= 10.0
    charger.set_limit(0)
    assert ticks(charger, 1) == [0.0]
    charger.set_limit(-5)
    assert charger.limit == 0 and min(ticks(charger, 5)) == 0.0


def test_limit_zero_while_charging_targets_zero_and_start_resumes():
    charger = Charger(ramp=1.0)
    charger.set_limit(0)
    charger.start()
    assert ticks(charger, 2) == [0.0, 0.0]
    charger.set_limit(100)
    assert ticks(charger, 1) == [100.0]


def test_limits_above_the_maximum_are_clamped():
    charger = Charger(max_current=125)
    assert charger.set_limit(300) == 125


def test_frames_drive_the_state_and_bad_ones_are_ignored(caplog):
    charger = Charger(ramp=1.0)
    receive(charger, frames.set_limit(40))
    receive(charger, frames.start())
    assert (charger.state, charger.limit) == ("CHARGING", 40.0)
    receive(charger, can.Message(arbitration_id=0x210, data=b"\x01", is_extended_id=False))
    receive(charger, can.Message(arbitration_id=0x7FF, data=b"\x01\x02", is_extended_id=False))
    assert charger.limit == 40.0
    assert "needs 2 data bytes, got 1" in caplog.text
    receive(charger, frames.stop())
    assert charger.state == "STOPPED"


@pytest.mark.parametrize("kwargs", [{"ramp": 0}, {"ramp": 1.5}, {"max_current": 0}])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        Charger(**kwargs)


def latest_current(bus: can.BusABC, want: float, timeout: float) -> bool:
    """Read 0x300 frames until one carries ``want`` amps."""
    def seen() -> bool:
        msg = bus.recv(0.1)
        frame = frames.decode(msg) if msg is not None else None
        return frame is not None and frame.arbitration_id == frames.MEASURED_CURRENT \
            and frame.amps == want
    return wait_for(seen, timeout=timeout, interval=0, message=f"0x300 at {want} A")


def test_obeys_commands_across_processes(bus_server, db_path):
    charger = start(script("charger_module.py", "--speed", "20", "--can-channel", bus_server,
                           "--db", str(db_path)))
    try:
        with can.Bus(interface="remote", channel=bus_server) as bus:
            latest_current(bus, 0.0, timeout=10)
            bus.send(frames.set_limit(100))
            bus.send(frames.start())
            latest_current(bus, 100.0, timeout=10)
            bus.send(frames.stop())
            latest_current(bus, 0.0, timeout=10)
    finally:
        code, output = stop(charger)
    assert code == 0, output
    assert "command 0x210 set limit 100.0 A" in output and "command 0x201 stop" in output
    with MemoryBank(db_path, readonly=True) as bank:
        events = bank.get_recent_events(10, {"source": "charger"})
    assert [e["event_type"] for e in reversed(events)] == \
        ["PROCESS_START", "CAN_FRAME", "CAN_FRAME", "CAN_FRAME", "PROCESS_STOP"]
    assert [e["data"]["id"] for e in reversed(events) if e["event_type"] == "CAN_FRAME"] == \
        ["0x210", "0x200", "0x201"]


def test_waits_for_an_absent_bus_with_a_one_line_hint_and_stops_cleanly(tmp_path):
    url = f"ws://127.0.0.1:{free_port()}/"
    log = tmp_path / "charger.log"
    with log.open("w") as out:
        charger = subprocess.Popen(script("charger_module.py", "--can-channel", url,
                                          "--log-level", "DEBUG", "--db",
                                          str(tmp_path / "memory.db")),
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "attempt 3 failed" in log.read_text(), timeout=15,
                 message="three attempts")
        assert charger.poll() is None
    finally:
        code, _ = stop(charger)
    output = log.read_text()
    assert code == 0, output
    hints = [line for line in output.splitlines() if "not reachable" in line]
    assert len(hints) == 1
    assert url in hints[0] and "python -m can_remote --interface virtual" in hints[0]
    assert "Traceback" not in output
