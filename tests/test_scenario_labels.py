"""Ground truth of the central system's own anomaly: the ``fluctuation`` scenario's labels, as pure
logic and as the central system records them, on a FakeClock: no sockets, no real sleeps."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, Optional

import pytest

from evsim import cli
from evsim.clock import FakeClock, settle
from evsim.csms.registry import Station
from evsim.csms.scenario_labels import ScenarioLabels, anomaly_type_of
from evsim.csms.server import CentralSystem
from evsim.faults.labels import Label

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(sim_s: float, speed: float) -> datetime:
    """The wall-clock time of a FakeClock ``sim_s`` simulated seconds after its start."""
    return T0 + timedelta(seconds=sim_s / speed)


# -- the labels, pure -----------------------------------------------------------------------------

def test_only_the_fluctuation_scenario_is_an_anomaly():
    assert anomaly_type_of("fluctuation") == "CURRENT_FLUCTUATION"
    assert anomaly_type_of("normal") is None and anomaly_type_of("none") is None


async def test_a_stretch_is_labelled_from_its_start_to_its_end_as_csms_without_seed():
    clock = FakeClock(20.0)
    labels: list[Label] = []
    scenario = ScenarioLabels("fluctuation", clock, labels.append, cycles=3)
    await clock.advance(4)
    scenario.start("CP_1")
    await clock.advance(10)
    assert labels == [] and scenario.open == ["CP_1"]
    scenario.end("CP_1")
    assert labels == [Label("CP_1", "CURRENT_FLUCTUATION", 4.0, 14.0, at(4, 20), at(14, 20),
                            {"scenario": "fluctuation", "cycles": 3, "speed": 20.0}, None,
                            "csms")]
    assert labels[0].record()["seed"] is None and scenario.open == []


@pytest.mark.parametrize("scenario", ["normal", "none"])
async def test_a_scenario_that_is_no_anomaly_labels_nothing(scenario):
    clock = FakeClock()
    labels: list[Label] = []
    scenario_labels = ScenarioLabels(scenario, clock, labels.append)
    assert scenario_labels.start("CP_1") is None
    await clock.advance(30)
    scenario_labels.end("CP_1")
    scenario_labels.close()
    assert labels == []


async def test_each_charge_point_has_its_own_stretch_and_shutdown_ends_the_open_ones():
    clock = FakeClock()
    labels: list[Label] = []
    scenario = ScenarioLabels("fluctuation", clock, labels.append)
    scenario.start("CP_1")
    await clock.advance(5)
    scenario.start("CP_2")
    scenario.start("CP_1")  # already open: goes on
    await clock.advance(5)
    scenario.end("CP_2")
    scenario.end("CP_3")  # never started: nothing
    await clock.advance(5)
    scenario.close()
    assert [(label.charge_point_id, label.start_s, label.end_s) for label in labels] == \
        [("CP_2", 5.0, 10.0), ("CP_1", 0.0, 15.0)]
    scenario.close()
    assert len(labels) == 2


async def test_a_run_winding_down_after_a_newer_one_began_leaves_the_newer_open():
    clock = FakeClock()
    labels: list[Label] = []
    scenario = ScenarioLabels("fluctuation", clock, labels.append)
    old = scenario.start("CP_1")
    await clock.advance(5)
    scenario.end("CP_1")  # the connection was replaced
    new = scenario.start("CP_1")
    await clock.advance(1)
    scenario.end("CP_1", old)  # the old run's task ends only now
    assert scenario.open == ["CP_1"] and len(labels) == 1
    await clock.advance(1)
    scenario.end("CP_1", new)
    assert [(label.start_s, label.end_s) for label in labels] == [(0.0, 5.0), (5.0, 7.0)]


# -- as the central system records them -----------------------------------------------------------

class LabelWriter:
    """The part of a BankWriter the central system uses; label writes run against itself."""

    def __init__(self) -> None:
        self.labels: list[dict] = []
        self.steps: list[str] = []

    def event(self, event_type: str, description: str, data: Any = None,
              charge_point_id: Optional[str] = None) -> None:
        if event_type == "SCENARIO_STEP":
            self.steps.append(description)

    def metric(self, *args: Any, **kwargs: Any) -> None:
        pass

    def call(self, write: Any) -> None:
        write(self)

    def record_label(self, **fields: Any) -> None:
        self.labels.append(fields)


class FakeEndpoint:
    """A charge point's connection as the scenario sees it: every CALL accepted at once."""

    async def call(self, request: Any, suppress: bool = True) -> Any:
        return SimpleNamespace(status="Accepted")


class Central:
    """A CentralSystem on a FakeClock whose charge points connect and leave as ``handle`` makes
    them, without sockets."""

    def __init__(self, scenario: str, cycles: int = 0, speed: float = 20.0) -> None:
        self.clock = FakeClock(speed)
        self.writer = LabelWriter()
        self.supervisor = cli.Supervisor()
        self.system = CentralSystem(self.writer, self.supervisor, self.clock, scenario=scenario,
                                    cycles=cycles)

    async def connect(self, charge_point_id: str) -> Station:
        station = self.system.registry.station(charge_point_id)
        if self.system.registry.connect(station, FakeEndpoint()) is not None:
            self.system.stop_scenario(station)
        self.system.start_scenario(station)
        await settle()
        return station

    async def disconnect(self, station: Station) -> None:
        if self.system.registry.disconnect(station, station.link):
            self.system.stop_scenario(station)
        await settle()

    def spans(self) -> list[tuple[str, datetime, datetime]]:
        return [(label["charge_point_id"], label["start"], label["end"])
                for label in self.writer.labels]

    async def close(self) -> None:
        await self.supervisor.cancel()
        assert self.supervisor.failure is None


@pytest.fixture
async def central():
    made: list[Central] = []

    def make(scenario: str, **options: Any) -> Central:
        made.append(Central(scenario, **options))
        return made[-1]
    yield make
    for site in made:
        await site.close()


async def test_the_scenario_is_labelled_while_it_drives_each_connection(central):
    site = central("fluctuation")
    await site.clock.advance(2)
    station = await site.connect("CP_1")
    await site.clock.advance(20)
    assert site.writer.labels == [] and site.writer.steps
    await site.disconnect(station)
    await site.clock.advance(10)
    station = await site.connect("CP_1")  # a reconnect resumes the scenario: a second label
    await site.clock.advance(6)
    site.system.shutdown()
    assert site.spans() == [("CP_1", at(2, 20), at(22, 20)), ("CP_1", at(32, 20), at(38, 20))]
    label = site.writer.labels[0]
    assert (label["anomaly_type"], label["source"], label["seed"]) == \
        ("CURRENT_FLUCTUATION", "csms", None)
    assert label["parameters"] == {"scenario": "fluctuation", "cycles": 0, "speed": 20.0}


async def test_a_replaced_connection_and_a_pause_each_end_the_label(central):
    site = central("fluctuation")
    station = await site.connect("CP_1")
    await site.clock.advance(5)
    await site.connect("CP_1")  # the same id again: replaces the first connection
    await site.clock.advance(5)
    station.paused = True  # what the control API's pause does
    site.system.stop_scenario(station)
    await site.clock.advance(5)
    site.system.shutdown()
    assert site.spans() == [("CP_1", at(0, 20), at(5, 20)), ("CP_1", at(5, 20), at(10, 20))]


async def test_a_completed_scenario_ends_its_label_and_is_not_labelled_again(central):
    site = central("fluctuation", cycles=2)
    station = await site.connect("CP_1")
    await site.clock.advance(30)
    assert site.writer.steps[-1] == "scenario complete"
    assert site.spans() == [("CP_1", at(0, 20), at(16, 20))]
    await site.disconnect(station)
    await site.connect("CP_1")
    await site.clock.advance(10)
    site.system.shutdown()
    assert len(site.writer.labels) == 1


async def test_two_charge_points_have_a_label_each_and_normal_has_none(central):
    site = central("fluctuation")
    await site.connect("CP_1")
    await site.clock.advance(3)
    await site.connect("CP_2")
    await site.clock.advance(3)
    site.system.shutdown()
    assert sorted(site.spans()) == [("CP_1", at(0, 20), at(6, 20)),
                                    ("CP_2", at(3, 20), at(6, 20))]

    normal = central("normal")
    await normal.connect("CP_1")
    await normal.clock.advance(200)
    normal.system.shutdown()
    assert normal.writer.steps and normal.writer.labels == []
