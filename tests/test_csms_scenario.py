"""The scenario as data, and the runner that keeps its time, on a FakeClock against a fake link:
no sockets, no real sleeps."""
from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace
from typing import Any, Optional

import pytest
from ocpp.exceptions import GenericError

from evsim.clock import FakeClock
from evsim.csms.scenario import SCENARIOS, LinkClosed, ScenarioRunner, Step, scenario_steps


class FakeLink:
    """A charge point as the scenario runner sees it; notes the simulated time of every CALL.

    ``delays`` (call number -> simulated seconds the answer takes), ``failures`` (call number ->
    exception raised instead of an answer)."""

    def __init__(self, clock: FakeClock, delays: Optional[dict] = None,
                 failures: Optional[dict] = None) -> None:
        self.clock = clock
        self.delays = delays or {}
        self.failures = failures or {}
        self.calls: list[tuple[float, Any]] = []

    async def call(self, request: Any) -> Any:
        number = len(self.calls)
        self.calls.append((self.clock.sim(), request))
        if number in self.delays:
            await self.clock.sleep(self.delays[number])
        if number in self.failures:
            raise self.failures[number]
        return SimpleNamespace(status="Accepted")

    @property
    def actions(self) -> list[str]:
        return [type(request).__name__ for _, request in self.calls]

    @property
    def times(self) -> list[float]:
        return [t for t, _ in self.calls]


class Reports:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def __call__(self, description: str, data: dict) -> None:
        self.lines.append((description, data))

    @property
    def descriptions(self) -> list[str]:
        return [d for d, _ in self.lines]



# -- the scenario, as data ------------------------------------------------------------------------

def test_scenario_steps():
    cycle = ["set_limit", "set_limit", "remote_start", "remote_stop"]
    assert [s.action for s in scenario_steps("fluctuation", 2)] == cycle * 2
    assert [s.amps for s in scenario_steps("fluctuation", 1)] == [0.0, 100.0, None, None]
    assert sum(s.wait_s for s in scenario_steps("fluctuation", 1)) == 8
    assert list(scenario_steps("normal", 2)) == [Step("remote_start", 32.0, 6),
                                                 Step("set_tx_limit", 16.0, 4),
                                                 Step("set_tx_limit", 32.0, 6),
                                                 Step("remote_stop", None, 0)]
    assert list(scenario_steps("normal", 0)) == [Step("remote_start", 32.0, 60),
                                                 Step("set_tx_limit", 16.0, 60),
                                                 Step("set_tx_limit", 32.0, None)]
    assert list(scenario_steps("none", 3)) == []
    endless = scenario_steps("fluctuation", 0)
    assert len([next(endless) for _ in range(40)]) == 40
    with pytest.raises(ValueError):
        list(scenario_steps("chaos", 1))
    assert SCENARIOS == ("fluctuation", "normal", "none")


@pytest.mark.parametrize(("scenario", "cycles"), [("fluctuation", 3), ("normal", 2),
                                                  ("normal", 0)])
def test_scenario_steps_from_a_later_step_are_the_rest(scenario, cycles):
    whole = list(itertools.islice(scenario_steps(scenario, cycles), 20))
    for start in range(len(whole) + 2):
        assert list(itertools.islice(scenario_steps(scenario, cycles, start), 20 - start)) == \
            whole[start:]


def test_a_step_far_into_an_endless_scenario_is_found_at_once():
    step = next(scenario_steps("fluctuation", 0, 10**12 + 2))
    assert step == Step("remote_start", None, 2)


# -- the scenario runner --------------------------------------------------------------------------

async def run_scenario(clock: FakeClock, runner: ScenarioRunner, link: FakeLink,
                       transaction_id: Optional[int] = 7, sim_seconds: float = 30) -> asyncio.Task:
    task = asyncio.create_task(runner.run(link, lambda: transaction_id))
    await clock.advance(sim_seconds)
    return task


@pytest.mark.parametrize("speed", [1.0, 20.0])
async def test_steps_keep_the_same_simulated_schedule_at_every_speed(speed):
    clock = FakeClock(speed)
    reports = Reports()
    runner = ScenarioRunner("fluctuation", 2, clock, reports)
    link = FakeLink(clock)
    task = await run_scenario(clock, runner, link)
    assert task.done() and runner.complete
    assert link.actions == ["SetChargingProfile", "SetChargingProfile", "RemoteStartTransaction",
                            "RemoteStopTransaction"] * 2
    assert link.times == pytest.approx([0, 2, 3, 5, 8, 10, 11, 13])
    assert reports.descriptions[:4] == ["SetChargingProfile limit 0 A -> Accepted",
                                        "SetChargingProfile limit 100 A -> Accepted",
                                        "RemoteStartTransaction -> Accepted",
                                        "RemoteStopTransaction 7 -> Accepted"]
    assert reports.descriptions[-1] == "scenario complete"
    assert reports.lines[0][1] == {"action": "set_limit", "amps": 0.0, "outcome": "Accepted",
                                   "wait_s": 2}


async def test_a_set_limit_profile_starts_before_now_on_the_injected_clock():
    clock = FakeClock()
    link = FakeLink(clock)
    await run_scenario(clock, ScenarioRunner("fluctuation", 1, clock, Reports()), link)
    profile = link.calls[0][1].cs_charging_profiles
    assert profile["chargingSchedule"]["startSchedule"] == "2025-12-31T23:59:00.000Z"
    assert profile["chargingProfilePurpose"] == "TxDefaultProfile"


async def test_a_slow_answer_shifts_the_schedule_instead_of_bunching_steps():
    clock = FakeClock(20.0)
    link = FakeLink(clock, delays={0: 5.0})  # the 0 A limit is answered 5 s later (wait: 2 s)
    reports = Reports()
    await run_scenario(clock, ScenarioRunner("fluctuation", 1, clock, reports), link)
    assert link.times == pytest.approx([0, 5, 6, 8])


async def test_remote_stop_is_skipped_without_a_transaction():
    clock = FakeClock()
    link = FakeLink(clock)
    reports = Reports()
    runner = ScenarioRunner("fluctuation", 2, clock, reports)
    await run_scenario(clock, runner, link, transaction_id=None)
    assert link.actions == ["SetChargingProfile", "SetChargingProfile",
                            "RemoteStartTransaction"] * 2
    assert reports.descriptions.count("RemoteStopTransaction skipped: no transaction running") == 2
    assert link.times == pytest.approx([0, 2, 3, 8, 10, 11])  # the skipped step keeps its time
    assert runner.steps_done == 8 and runner.complete


async def test_a_failed_step_is_reported_and_the_scenario_goes_on():
    clock = FakeClock()
    link = FakeLink(clock, failures={0: GenericError(description="no"),
                                     1: TimeoutError("no answer")})
    reports = Reports()
    await run_scenario(clock, ScenarioRunner("fluctuation", 1, clock, reports), link)
    assert reports.descriptions[0].startswith("SetChargingProfile limit 0 A -> failed:")
    assert reports.descriptions[1] == "SetChargingProfile limit 100 A -> failed: no answer"
    assert len(link.calls) == 4


async def test_a_reconnect_resumes_at_the_first_step_not_done():
    clock = FakeClock()
    reports = Reports()
    runner = ScenarioRunner("fluctuation", 1, clock, reports)
    first = FakeLink(clock, failures={2: LinkClosed()})  # closed during RemoteStart
    await run_scenario(clock, runner, first)
    assert first.actions[-1] == "RemoteStartTransaction" and runner.steps_done == 2
    assert not runner.complete

    second = FakeLink(clock)
    start = clock.sim()
    await run_scenario(clock, runner, second)
    assert second.actions == ["RemoteStartTransaction", "RemoteStopTransaction"]
    assert second.times == pytest.approx([start, start + 2])
    assert runner.complete and reports.descriptions[-1] == "scenario complete"

    third = FakeLink(clock)  # a complete scenario is not driven again
    await run_scenario(clock, runner, third)
    assert third.calls == [] and reports.descriptions.count("scenario complete") == 1


def limit_of(profile: dict) -> float:
    return profile["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]


@pytest.mark.parametrize("speed", [1.0, 20.0])
async def test_normal_runs_one_transaction_curtailed_once_until_stopped(speed):
    clock = FakeClock(speed)
    link = FakeLink(clock)
    reports = Reports()
    runner = ScenarioRunner("normal", 0, clock, reports)
    task = await run_scenario(clock, runner, link, sim_seconds=1000)
    assert link.actions == ["RemoteStartTransaction", "SetChargingProfile", "SetChargingProfile"]
    assert link.times == pytest.approx([0, 60, 120])  # absolute deadlines, simulated seconds
    start, lower, back = (request for _, request in link.calls)
    assert limit_of(start.charging_profile) == 32.0
    assert start.charging_profile["chargingProfilePurpose"] == "TxProfile"
    for request, amps in ((lower, 16.0), (back, 32.0)):
        profile = request.cs_charging_profiles
        assert limit_of(profile) == amps and request.connector_id == 1
        assert (profile["chargingProfilePurpose"], profile["transactionId"],
                profile["chargingProfileId"]) == ("TxProfile", 7,
                                                  start.charging_profile["chargingProfileId"])
    assert reports.descriptions[1:] == ["SetChargingProfile TxProfile limit 16 A -> Accepted",
                                        "SetChargingProfile TxProfile limit 32 A -> Accepted"]
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_finite_normal_session_is_curtailed_in_its_middle_and_stopped():
    clock = FakeClock()
    link = FakeLink(clock, delays={1: 3.0})  # answered 3 s late: the deadlines stay
    runner = ScenarioRunner("normal", 2, clock, Reports())
    await run_scenario(clock, runner, link)
    assert link.actions == ["RemoteStartTransaction", "SetChargingProfile", "SetChargingProfile",
                            "RemoteStopTransaction"]
    assert link.times == pytest.approx([0, 6, 10, 16]) and runner.complete


async def test_the_curtailment_is_skipped_without_a_transaction():
    clock = FakeClock()
    link = FakeLink(clock)
    reports = Reports()
    await run_scenario(clock, ScenarioRunner("normal", 1, clock, reports), link,
                       transaction_id=None)
    assert link.actions == ["RemoteStartTransaction"]
    assert reports.descriptions.count("SetChargingProfile skipped: no transaction running") == 2
