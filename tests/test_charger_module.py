"""The charger module: its ramp on explicit ticks, its CAN node on a fake clock, and the node
in its own process on a real bus."""
import asyncio
import itertools
import subprocess
from collections.abc import Sequence

import can
import pytest
from conftest import free_port, script, start, stop, wait_for
from cp_fakes import LabelBank, QueuedWrites

from evsim.bank import MemoryBank
from evsim.canbus import frames
from evsim.charger.model import Charger
from evsim.charger.node import ChargerNode
from evsim.clock import FakeClock


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


@pytest.mark.parametrize("kwargs", [{"ramp": 0}, {"ramp": 1.5}, {"max_current": 0}])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        Charger(**kwargs)


# -- the CAN node, in process on a fake clock and a fake link ----------------------------------

class FakeLink:
    """Records (simulated time, amps) of every 0x300 it is given; a send can take time."""

    def __init__(self, clock: FakeClock, send_takes: float = 0.0) -> None:
        self.clock = clock
        self.send_takes = send_takes
        self.up = True
        self.sent: list[tuple[float, float]] = []

    async def send(self, msg: can.Message) -> bool:
        self.sent.append((self.clock.sim(), frames.decode(msg).amps))
        await self.clock.sleep(self.send_takes)
        return True

    @property
    def amps(self) -> list[float]:
        return [amps for _, amps in self.sent]


def command(msg: can.Message) -> frames.Frame:
    return frames.decode(msg)


@pytest.fixture
async def publishing():
    """Starts ``node.publish(link)`` as a task; cancels it at the end of the test."""
    tasks = []

    def begin(node: ChargerNode, link: FakeLink) -> None:
        tasks.append(asyncio.create_task(node.publish(link)))
    yield begin
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("speed", [1.0, 10.0])
async def test_node_obeys_commands_and_publishes_each_simulated_period(speed, publishing):
    clock = FakeClock(speed)
    link, recorded = FakeLink(clock), []
    node = ChargerNode(Charger(ramp=0.2), clock, period_s=1.0,
                       on_command=lambda frame, described: recorded.append(described))
    publishing(node, link)
    await clock.advance(1.5)
    assert link.amps == [0.0]
    assert node.on_frame(command(frames.set_limit(100))) == "set limit 100.0 A"
    assert node.on_frame(command(frames.start())) == "start"
    assert node.on_frame(command(frames.measured_current(5))) is None  # not a command
    await clock.advance(3)
    assert link.amps == pytest.approx([0.0, 20.0, 36.0, 48.8])
    assert node.on_frame(command(frames.stop())) == "stop"
    await clock.advance(1)
    assert link.amps[-1] == pytest.approx(39.0, abs=0.05)
    assert recorded == ["set limit 100.0 A", "start", "stop"]
    assert clock.monotonic() == pytest.approx(5.5 / speed)  # --speed divides the period


async def test_ticks_keep_absolute_deadlines_when_sending_takes_time(publishing):
    clock = FakeClock(speed=10)
    link = FakeLink(clock, send_takes=0.3)
    publishing(ChargerNode(Charger(), clock, period_s=1.0), link)
    await clock.advance(4.5)
    assert [t for t, _ in link.sent] == pytest.approx([1.0, 2.0, 3.0, 4.0])


async def test_late_ticks_are_not_made_up_for_in_a_burst(publishing):
    clock = FakeClock()
    link = FakeLink(clock, send_takes=1.5)
    publishing(ChargerNode(Charger(), clock, period_s=1.0), link)
    await clock.advance(6)
    assert [t for t, _ in link.sent] == pytest.approx([1.0, 2.5, 4.0, 5.5])


async def test_while_the_bus_is_down_the_charger_runs_on_and_publishes_nothing(publishing):
    clock = FakeClock()
    link = FakeLink(clock)
    node = ChargerNode(Charger(ramp=0.5), clock, period_s=0.5, watchdog_s=0)
    publishing(node, link)
    node.on_frame(command(frames.set_limit(40)))
    node.on_frame(command(frames.start()))
    await clock.advance(0.75)
    link.up = False
    await clock.advance(1.5)
    # half the gap per simulated second: 1 - 0.5 ** 0.5 of it per 0.5 s tick
    assert (link.sent, node.ticks) == ([(0.5, 11.7)], 4)
    assert node.charger.current == pytest.approx(40 * (1 - 0.5 ** 2))
    link.up = True
    await clock.advance(0.5)
    assert link.sent == [(0.5, 11.7), (2.5, 32.9)]


async def test_a_repeated_command_feeds_the_watchdog_but_is_not_news(publishing):
    clock = FakeClock()
    recorded: list[str] = []
    node = ChargerNode(Charger(), clock, period_s=1.0,
                       on_command=lambda frame, described: recorded.append(described))
    publishing(node, FakeLink(clock))
    for _ in range(10):
        node.on_frame(command(frames.set_limit(32)))
        node.on_frame(command(frames.start()))
        await clock.advance(1.0)
    assert node.charger.charging and recorded == ["set limit 32.0 A", "start"]


@pytest.mark.parametrize("speed, trips_after", [(1.0, 3.0), (10.0, 10.0)])
async def test_the_watchdog_stops_a_charger_that_hears_no_command(speed, trips_after,
                                                                  publishing):
    """After the DBC's 3 s, and never in under SILENCE_FLOOR_WALL_S wall seconds."""
    clock = FakeClock(speed)
    link, tripped, recorded = FakeLink(clock), [], []
    node = ChargerNode(Charger(ramp=1.0), clock, period_s=1.0,
                       on_command=lambda frame, described: recorded.append(described),
                       on_watchdog=tripped.append)
    assert node.watchdog_s == frames.WATCHDOG_TIMEOUT_S == 3.0
    publishing(node, link)
    node.on_frame(command(frames.set_limit(32)))
    node.on_frame(command(frames.start()))
    await clock.advance(trips_after)
    assert node.charger.charging and link.amps[-1] == 32.0 and not tripped
    await clock.advance(1.0)
    assert not node.charger.charging and link.amps[-1] == 0.0
    assert tripped == [pytest.approx(trips_after + 1)]
    await clock.advance(5.0)
    assert len(tripped) == 1
    node.on_frame(command(frames.start()))  # a start after the trip is news again
    await clock.advance(1.0)
    assert link.amps[-1] == 32.0 and recorded == ["set limit 32.0 A", "start", "start"]


async def test_a_watchdog_of_zero_never_stops_the_charger(publishing):
    clock = FakeClock()
    link = FakeLink(clock)
    node = ChargerNode(Charger(ramp=1.0), clock, period_s=1.0, watchdog_s=0)
    publishing(node, link)
    node.on_frame(command(frames.start()))
    await clock.advance(60)
    assert node.charger.charging and link.amps[-1] == 125.0


def test_the_ramp_is_per_simulated_second_whatever_the_period():
    coarse, fine = Charger(ramp=0.2), Charger(ramp=0.2)
    for charger in (coarse, fine):
        charger.set_limit(100)
        charger.start()
    coarse.tick(1.0)
    for _ in range(10):
        fine.tick(0.1)
    assert coarse.current == pytest.approx(20.0) and fine.current == pytest.approx(20.0)


def test_a_period_must_be_positive():
    with pytest.raises(ValueError):
        ChargerNode(Charger(), FakeClock(), period_s=0)


# -- the process, on a real bus ----------------------------------------------------------------

def latest_current(bus: can.BusABC, want: float, timeout: float,
                   intent: Sequence[can.Message] = ()) -> bool:
    """Read 0x300 frames until one carries ``want`` amps, repeating the ``intent`` frames as a
    charge point does for the charger's watchdog."""
    def seen() -> bool:
        for msg in intent:
            bus.send(msg)
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
            latest_current(bus, 0.0, timeout=30)
            latest_current(bus, 100.0, 30, [frames.set_limit(100), frames.start()])
            latest_current(bus, 0.0, 30, [frames.set_limit(100), frames.stop()])
    finally:
        code, output = stop(charger, timeout=30)
    assert code == 0, output
    assert "Traceback" not in output
    assert "command 0x210 set limit 100.0 A" in output and "command 0x201 stop" in output
    with MemoryBank(db_path, readonly=True) as bank:
        events = bank.get_recent_events(10, {"source": "charger"})
    assert [e["event_type"] for e in reversed(events)] == \
        ["PROCESS_START", "CAN_FRAME", "CAN_FRAME", "CAN_FRAME", "PROCESS_STOP"]
    assert [e["data"]["id"] for e in reversed(events) if e["event_type"] == "CAN_FRAME"] == \
        ["0x210", "0x200", "0x201"]


def test_a_charger_left_without_commands_stops_by_itself(bus_server, db_path):
    """The charge point that started it went quiet (killed, or cut off): the watchdog stops it."""
    charger = start(script("charger_module.py", "--speed", "20", "--can-channel", bus_server,
                           "--db", str(db_path), "--ramp", "1"))
    try:
        with can.Bus(interface="remote", channel=bus_server) as bus:
            latest_current(bus, 0.0, timeout=30)
            latest_current(bus, 32.0, 30, [frames.set_limit(32), frames.start()])
            latest_current(bus, 0.0, timeout=30)
    finally:
        code, output = stop(charger, timeout=30)
    assert code == 0, output
    assert "watchdog: no command for" in output
    with MemoryBank(db_path, readonly=True) as bank:
        tripped = bank.get_recent_events(10, {"event_type": "WATCHDOG"})
    assert len(tripped) == 1 and tripped[0]["data"]["silent_s"] > frames.WATCHDOG_TIMEOUT_S


def test_waits_for_an_absent_bus_with_a_one_line_hint_and_stops_cleanly(tmp_path):
    url = f"ws://127.0.0.1:{free_port()}/"
    log = tmp_path / "charger.log"
    with log.open("w") as out:
        charger = subprocess.Popen(script("charger_module.py", "--can-channel", url,
                                          "--log-level", "DEBUG", "--db",
                                          str(tmp_path / "memory.db")),
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "attempt 3 failed" in log.read_text(), timeout=60,
                 message="three attempts")
        assert charger.poll() is None
    finally:
        code, _ = stop(charger, timeout=30)
    output = log.read_text()
    assert code == 0, output
    hints = [line for line in output.splitlines() if "not reachable" in line]
    assert len(hints) == 1
    assert url in hints[0] and "python -m can_remote --interface virtual" in hints[0]
    assert "Traceback" not in output


# -- injected faults ----------------------------------------------------------------------------

async def test_an_injected_dropout_on_the_node_publishes_0A_while_charging(publishing):
    from evsim.faults import parse_inject
    from evsim.faults.charger import FaultyCharger

    clock, labels = FakeClock(speed=10), []
    charger = FaultyCharger([parse_inject("dropout:after=2,for=3")], sim=clock.sim,
                            now=clock.now, on_label=labels.append, charge_point_id="CP_4",
                            seed=1, speed=10, ramp=1.0)
    link = FakeLink(clock)
    node = ChargerNode(charger, clock, period_s=1.0)
    publishing(node, link)
    node.on_frame(command(frames.set_limit(30)))
    node.on_frame(command(frames.start()))
    await clock.advance(8.5)
    assert link.amps == [30.0, 30.0, 0.0, 0.0, 0.0, 30.0, 30.0, 30.0]
    assert [(la.start_s, la.end_s) for la in labels] == [(pytest.approx(3.0),
                                                          pytest.approx(6.0))]
    node.on_frame(command(frames.set_limit(20)))
    node.close()  # no open label: nothing more
    assert len(labels) == 1


def test_inject_takes_only_the_chargers_kinds_and_bad_ones_exit_2(capsys):
    from evsim.charger.main import build_parser

    args = build_parser().parse_args(["--inject", "over-current:factor=1.5", "--inject",
                                      "dropout", "--seed", "7", "--id", "CP_9"])
    assert [spec.kind for spec in args.inject] == ["over-current", "dropout"]
    assert (args.seed, args.id) == (7, "CP_9")
    for bad, valid in (("meter-freeze", "oscillation, over-current, ignore-limit, dropout"),
                       ("teleport", "oscillation, over-current, ignore-limit, dropout"),
                       ("over-current:factor=x", "after=<s> (default 30), for=<s>")):
        with pytest.raises(SystemExit) as caught:
            build_parser().parse_args(["--inject", bad])
        assert caught.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("charger_module.py: error: argument --inject:")
        assert valid in error


def test_labels_go_to_the_bank_writer_and_a_bank_without_labels_warns_once(caplog):
    import logging

    from evsim.charger.main import build_parser, make_charger

    clock, writer = FakeClock(), QueuedWrites()
    args = build_parser().parse_args(["--inject", "dropout:after=0,for=1", "--id", "CP_2"])
    charger = make_charger(args, clock, writer)
    charger.start()
    charger.tick(1.0)
    charger.close()
    bank = LabelBank()
    with caplog.at_level(logging.WARNING):
        for write in writer.writes * 2:
            write(bank)
            write(object())
    assert [(f["charge_point_id"], f["anomaly_type"], f["source"]) for f in bank.labels] == \
        [("CP_2", "ZERO_CURRENT_WHILE_CHARGING", "charger")] * 2
    assert sum("no labels table" in r.message for r in caplog.records) == 1
    assert type(make_charger(build_parser().parse_args([]), clock, writer)) is Charger


def test_an_injected_fault_across_processes(bus_server, db_path):
    charger = start(script("charger_module.py", "--speed", "20", "--can-channel", bus_server,
                           "--db", str(db_path), "--inject", "over-current:after=1,factor=1.5",
                           "--id", "CP_7"))
    try:
        with can.Bus(interface="remote", channel=bus_server) as bus:
            latest_current(bus, 0.0, timeout=30)
            latest_current(bus, 30.0, 30, [frames.set_limit(20), frames.start()])  # 1.5 x 20 A
            latest_current(bus, 0.0, 30, [frames.set_limit(20), frames.stop()])
    finally:
        code, output = stop(charger, timeout=30)
    assert code == 0, output
    assert "Traceback" not in output
    assert "injecting over-current:after=1" in output
    assert "label CP_7 OVER_CURRENT" in output
