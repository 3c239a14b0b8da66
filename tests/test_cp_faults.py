"""The charge point's injected faults in process (``cp.py --inject``): on a fake clock, with a
scripted central system, each kind changes what the central system receives as the fault
describes, labels its ground truth, and a charge point without --inject is unchanged."""
from __future__ import annotations

import asyncio
import itertools
import logging
import subprocess
import sys
from datetime import timedelta

import pytest
from conftest import ROOT
from cp_fakes import FakeCentral, FakeLink, FakeRecorder, LabelBank, QueuedWrites

from evsim.canbus import frames
from evsim.clock import FakeClock
from evsim.cp import metering
from evsim.cp.connection import online
from evsim.cp.main import build_parser, inject
from evsim.cp.station import Station
from evsim.cp.store import StateStore
from evsim.faults import parse_injections
from evsim.faults.labels import Label
from evsim.timefmt import parse_ocpp_time

VOLTAGE = 230.0
AMPS = 16.0
WH_PER_S = AMPS * VOLTAGE / 3600  # what 16 A at 230 V delivers in a simulated second


class Site:
    """A station with the faults of ``injections`` (none: no inject() at all), connected to a
    scripted central system, its meter, watchdog and status ticker running."""

    def __init__(self, *injections: str, seed: int = 3) -> None:
        self.clock = FakeClock()
        self.station = Station("CP_F", StateStore(":memory:"), self.clock,
                               writer=FakeRecorder(), link=FakeLink(), voltage=VOLTAGE)
        self.central = FakeCentral()
        self.labels: list[Label] = []
        if injections:
            self.station.inject(parse_injections(injections, "cp.py"), self.labels.append,
                                seed)
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Site:
        station = self.station
        self.tasks = [asyncio.create_task(metering.run_meter(station)),
                      asyncio.create_task(metering.run_watchdog(station)),
                      asyncio.create_task(online(station, self.central))]
        if station.status_faults is not None:
            self.tasks.append(asyncio.create_task(metering.run_status_faults(station)))
        await self.clock.advance(0)
        return self

    async def __aexit__(self, *exc_info) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def session(self, seconds: int, amps: float = AMPS) -> None:
        """A remote start, ``seconds`` of the charger publishing ``amps`` at 1 Hz, a stop."""
        assert self.station.remote_start("TAG", 1, None) == "Accepted"
        await self.clock.advance(0)
        for _ in range(seconds):
            self.station.on_can_frame(frames.Frame(frames.MEASURED_CURRENT, "MeasuredCurrent",
                                                   amps))
            await self.clock.advance(1)
        tx = self.station.transaction
        assert tx is not None and self.station.remote_stop(tx.transaction_id) == "Accepted"
        await self.clock.advance(0)

    def samples(self) -> list[tuple[float, float]]:
        """(seconds since the start by the sample's own timestamp, energy register Wh) of each
        MeterValues of a transaction received."""
        out = []
        for request in self.central.of("MeterValues"):
            if request.transaction_id is None:
                continue
            for value in request.meter_value:
                stamp = parse_ocpp_time(value["timestamp"]) - self.clock._start
                energy = [float(v["value"]) for v in value["sampledValue"]
                          if v["measurand"] == "Energy.Active.Import.Register"]
                out.append((stamp.total_seconds(), energy[0]))
        return out

    def registers(self) -> list[float]:
        return [energy for _, energy in self.samples()]

    def stamps(self) -> list[float]:
        return [stamp for stamp, _ in self.samples()]


async def run(*injections: str, seconds: int = 40) -> Site:
    site = Site(*injections)
    async with site:
        await site.session(seconds)
        await site.clock.advance(2)
    site.station.close_faults()
    return site


def steps(values: list[float]) -> list[float]:
    return [round(b - a, 1) for a, b in itertools.pairwise(values)]


def label_spans(site: Site) -> list[tuple[str, float, float]]:
    return [(label.anomaly_type, label.start_s, label.end_s) for label in site.labels]


# -- no --inject: unchanged ---------------------------------------------------------------------

async def test_without_inject_the_charge_point_sends_the_truth():
    site = await run(seconds=20)
    assert site.station.meter_faults is None and site.station.status_faults is None
    registers = site.registers()
    assert registers == sorted(registers) and max(steps(registers)) == pytest.approx(
        WH_PER_S, abs=0.1)
    assert site.stamps() == [float(s) for s in range(1, len(registers) + 1)]
    assert site.central.statuses() == ["Available", "Preparing", "Charging", "Finishing",
                                       "Available"]
    stop = site.central.of("StopTransaction")[0]
    assert stop.meter_stop == int(site.station.meter.energy_wh)
    assert site.labels == []


async def test_a_fault_not_yet_armed_changes_nothing_that_is_sent():
    plain = await run(seconds=20)
    armed_later = await run("meter-freeze:after=1000", "clock-skew:after=1000",
                            "meter-gap:after=1000", "status-flap:after=1000",
                            "energy-drift:after=1000", "meter-backwards:after=1000", seconds=20)
    assert [(name, vars(request)) for name, request in armed_later.central.calls] == \
        [(name, vars(request)) for name, request in plain.central.calls]
    assert armed_later.labels == []


def test_cp_py_without_inject_has_no_faults():
    args = build_parser().parse_args([])
    assert (args.inject, args.seed) == ([], 0)
    station = Station("CP_F", StateStore(":memory:"), FakeClock())
    inject(args, [station], writer=None)
    assert station.meter_faults is None and station.status_faults is None


# -- each kind ----------------------------------------------------------------------------------

async def test_meter_freeze_stops_the_register_while_current_flows_then_it_carries_on():
    site = await run("meter-freeze:after=5,for=10")
    registers = site.registers()
    deltas = steps(registers)
    frozen = [i for i, d in enumerate(deltas) if d == 0]
    assert len(frozen) == 10 and frozen == list(range(frozen[0], frozen[0] + 10))
    # before and after: the true rate; after: from where it stopped, no jump back
    assert all(d == pytest.approx(WH_PER_S, abs=0.1) for d in deltas[frozen[-1] + 1:])
    assert registers[-1] == pytest.approx(site.station.meter.energy_wh - 10 * WH_PER_S,
                                          abs=0.2)
    assert site.central.of("StopTransaction")[0].meter_stop == pytest.approx(registers[-1],
                                                                             abs=1)
    assert [(kind, end - start) for kind, start, end in label_spans(site)] == \
        [("METER_FREEZE", pytest.approx(10))]


async def test_meter_backwards_steps_the_register_down():
    site = await run("meter-backwards:after=5,for=20,step=3,every=10")
    deltas = steps(site.registers())
    assert sum(d < 0 for d in deltas) == 2  # at the onset and 10 s later
    assert min(deltas) == pytest.approx(WH_PER_S - 3, abs=0.1)
    assert site.registers()[-1] == pytest.approx(site.station.meter.energy_wh - 6, abs=0.1)
    assert [kind for kind, *_ in label_spans(site)] == ["ENERGY_REGISTER_DECREASE"]


@pytest.mark.parametrize("percent", [20, -20])
async def test_energy_drift_grows_the_register_faster_or_slower_than_delivered(percent):
    site = await run(f"energy-drift:after=5,for=20,percent={percent}")
    registers = site.registers()
    assert registers == sorted(registers)
    # 20 s of drift: the register ends percent % of 20 s of energy away from the truth
    assert registers[-1] - site.station.meter.energy_wh == pytest.approx(
        20 * WH_PER_S * percent / 100, abs=0.3)
    assert site.central.of("StopTransaction")[0].meter_stop == pytest.approx(registers[-1],
                                                                             abs=1)
    assert [(kind, end - start) for kind, start, end in label_spans(site)] == \
        [("ENERGY_MISMATCH", pytest.approx(20))]


async def test_clock_skew_moves_every_timestamp_sent_by_minutes():
    site = await run("clock-skew:after=5,for=10,minutes=5", "status-flap:after=7,for=2,every=1")
    offsets = [stamp - true for stamp, true in zip(site.stamps(), range(1, 100))]
    assert sorted(set(offsets)) == [0.0, 300.0]
    assert offsets.count(300.0) == 10
    # a StatusNotification sent while the clock is skewed carries the skewed time too
    flap_stamps = [(parse_ocpp_time(r.timestamp) - site.clock._start).total_seconds()
                   for r in site.central.of("StatusNotification")
                   if r.status in ("Faulted", "SuspendedEVSE")]
    assert flap_stamps and all(stamp > 300 for stamp in flap_stamps)
    assert [kind for kind, *_ in label_spans(site)] == ["STATUS_FLAPPING", "TIMESTAMP_SKEW"]


async def test_clock_skew_behind_and_in_start_and_stop_transaction():
    site = await run("clock-skew:after=0,for=inf,minutes=-2", seconds=10)
    stop = site.central.of("StopTransaction")[0]
    sent = parse_ocpp_time(stop.timestamp)
    assert sent == site.clock._start + timedelta(seconds=10) - timedelta(minutes=2)
    assert all(stamp - true == -120 for stamp, true in zip(site.stamps(), range(1, 100)))


async def test_meter_gap_sends_no_meter_values_for_a_while():
    site = await run("meter-gap:after=5,for=10")
    stamps = site.stamps()
    gaps = steps(stamps)
    assert sorted(gaps)[-1] == 11.0 and sorted(gaps)[-2] == 1.0  # one gap of 10 samples
    assert len(stamps) == 40 - 10
    assert [(kind, end - start) for kind, start, end in label_spans(site)] == \
        [("METER_VALUE_GAP", pytest.approx(10))]


async def test_status_flap_flips_charging_and_a_fault_status_then_settles():
    site = await run("status-flap:after=5,for=20,every=4")
    statuses = site.central.statuses()
    during = statuses[statuses.index("Charging"):statuses.index("Finishing")]
    flips = [s for s in during if s != "Charging"]
    assert len(flips) == 3  # 4 s in a fault status at 0, 8 and 16 s into the flap
    assert set(flips) <= {"SuspendedEVSE", "Faulted"} and len(set(flips)) == 2
    assert during[-1] == "Charging" and during.count("Charging") == 4
    faulted = [r for r in site.central.of("StatusNotification") if r.status == "Faulted"]
    assert all(r.error_code != "NoError" for r in faulted)
    assert [(kind, end - start) for kind, start, end in label_spans(site)] == \
        [("STATUS_FLAPPING", pytest.approx(20, abs=0.5))]


async def test_a_label_still_open_at_shutdown_is_closed_then():
    site = Site("meter-gap:after=2,for=inf", seed=9)
    async with site:
        assert site.station.remote_start("TAG", 1, None) == "Accepted"
        await site.clock.advance(0)
        for _ in range(6):
            site.station.on_can_frame(frames.Frame(frames.MEASURED_CURRENT, "MeasuredCurrent",
                                                   AMPS))
            await site.clock.advance(1)
        assert site.labels == []
        site.station.close_faults()
    [label] = site.labels
    assert (label.charge_point_id, label.anomaly_type, label.source, label.seed) == \
        ("CP_F", "METER_VALUE_GAP", "cp", 9)
    assert label.parameters["kind"] == "meter-gap" and label.parameters["for"] is None


# -- the command line ---------------------------------------------------------------------------

def test_inject_takes_only_the_charge_points_kinds(capsys):
    args = build_parser().parse_args(["--inject", "meter-gap:for=5", "--inject", "status-flap",
                                      "--seed", "7"])
    assert [spec.kind for spec in args.inject] == ["meter-gap", "status-flap"]
    assert args.seed == 7
    valid = "meter-freeze, meter-backwards, energy-drift, clock-skew, meter-gap, status-flap"
    for bad, wanted in (("dropout", valid), ("teleport", valid),
                        ("clock-skew:minutes=0", "minutes=<simulated min>"),
                        ("meter-gap:speed=2", "after=<s> (default 30)")):
        with pytest.raises(SystemExit) as caught:
            build_parser().parse_args(["--inject", bad])
        assert caught.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("cp.py: error: argument --inject:") and wanted in error


def test_cp_py_with_a_bad_inject_is_one_line_and_exit_2():
    result = subprocess.run([sys.executable, str(ROOT / "cp.py"), "--inject", "teleport"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]  # after argparse's usage lines
    assert error.startswith("cp.py: error: argument --inject: unknown fault kind 'teleport'")
    assert "meter-gap" in error


def test_labels_go_to_the_bank_writer(caplog):
    clock, writer = FakeClock(), QueuedWrites()
    station = Station("CP_W", StateStore(":memory:"), clock)
    args = build_parser().parse_args(["--inject", "clock-skew:after=0,for=5", "--seed", "4",
                                      "--id", "CP_W"])
    with caplog.at_level(logging.WARNING):
        inject(args, [station], writer)
    assert "injecting clock-skew:after=0" in caplog.text
    station.transaction = object()  # a transaction runs: the fault shows
    station.meter.update(0.0, AMPS)
    assert station.reading(clock.now()).timestamp == clock.now() + timedelta(minutes=5)
    station.close_faults()
    bank = LabelBank()
    for write in writer.writes:
        write(bank)
    assert [(f["charge_point_id"], f["anomaly_type"], f["seed"], f["source"])
            for f in bank.labels] == [("CP_W", "TIMESTAMP_SKEW", 4, "cp")]
