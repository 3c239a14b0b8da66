"""The scenarios the central system drives on a charge point, and the runner that keeps their time.

A scenario is data (:func:`scenario_steps`); :class:`ScenarioRunner` sends its steps to one charge
point on absolute deadlines from the injected clock, so round trips do not stretch the cycle and
its period is the same at every ``--speed`` (ARCHITECTURE.md, "Time").
"""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional, Protocol

from ocpp.exceptions import OCPPError
from ocpp.v16 import call

from evsim.clock import Clock
from evsim.constants import CONNECTOR_ID
from evsim.ocpp16 import profiles as charging_profiles

#: The scenario names, defined here only (csms.py --list-scenarios prints them for run_all.sh).
SCENARIOS = ("fluctuation", "normal", "none")
ID_TAG = "SIMULATOR"
PROFILE_ID = 1
NORMAL_LIMIT_A = 32.0
#: ``normal`` curtails each session once, as smart charging does: to this limit, for a while.
CURTAILED_LIMIT_A = 16.0
#: An endless ``normal`` session curtails after this many simulated seconds, for as long.
CURTAIL_AFTER_S = 60.0
CURTAIL_FOR_S = 60.0
#: An Absolute profile starts this far back, so a charge point whose clock is a little behind
#: already has it in force.
CLOCK_MARGIN = timedelta(minutes=1)


@dataclass(frozen=True)
class Step:
    """One scenario step: ``action`` (set_limit: a TxDefaultProfile; remote_start, with a
    TxProfile of ``amps`` if given; set_tx_limit: a TxProfile of ``amps`` for the transaction
    running; remote_stop), then wait ``wait_s`` simulated seconds (None: until the scenario is
    stopped)."""

    action: str
    amps: Optional[float]
    wait_s: Optional[float]


#: The seed's cycle: limit 0 A, limit 100 A, start, stop; 8 simulated seconds.
FLUCTUATION_CYCLE = (Step("set_limit", 0.0, 2), Step("set_limit", 100.0, 1),
                     Step("remote_start", None, 2), Step("remote_stop", None, 3))
CYCLE_SECONDS = sum(step.wait_s for step in FLUCTUATION_CYCLE)


def scenario_steps(scenario: str, cycles: int, start: int = 0) -> Iterator[Step]:
    """The steps of a scenario from step number ``start``; ``cycles`` 0 means forever.

    ``normal`` is one transaction that lasts as long as ``cycles`` fluctuation cycles would
    (forever for 0), so the control case runs as long as the anomalous one, curtailed once as
    smart charging does: 32 A, then 16 A, then 32 A again (for 3/8, 1/4 and 3/8 of it, so a
    short one still reaches 32 A; endless: 16 A from 60 s to 120 s), so that a lowered limit
    exists to follow or to ignore.
    """
    if scenario == "fluctuation":
        length = len(FLUCTUATION_CYCLE)
        first_cycle, offset = divmod(start, length)  # no walk over the steps already done
        rounds = itertools.count(first_cycle) if cycles == 0 else range(first_cycle, cycles)
        for number in rounds:
            yield from FLUCTUATION_CYCLE[offset if number == first_cycle else 0:]
    elif scenario == "normal":
        length = CYCLE_SECONDS * cycles
        before, during, after = ((length * 3 / 8, length / 4, length * 3 / 8) if cycles
                                 else (CURTAIL_AFTER_S, CURTAIL_FOR_S, None))
        steps = [Step("remote_start", NORMAL_LIMIT_A, before),
                 Step("set_tx_limit", CURTAILED_LIMIT_A, during),
                 Step("set_tx_limit", NORMAL_LIMIT_A, after)]
        if cycles:
            steps.append(Step("remote_stop", None, 0))
        yield from steps[start:]
    elif scenario != "none":
        raise ValueError(f"unknown scenario {scenario!r}")


class LinkClosed(Exception):
    """The connection to the charge point closed during a step: the step is not done."""


class Link(Protocol):
    """The charge point as the runner sees it: a CALL answered by its CALLRESULT payload;
    TimeoutError or OCPPError when it fails, LinkClosed when the connection went away."""

    async def call(self, request: Any) -> Any: ...


class ScenarioRunner:
    """Drives one charge point through a scenario and remembers, across its connections, how many
    steps are done: a reconnect resumes at the first step not done.

    A step is done once its CALL has an outcome (answer, CALLERROR or timeout). ``report`` is told
    each step's outcome (description, data) for the log and the SCENARIO_STEP event.
    """

    def __init__(self, scenario: str, cycles: int, clock: Clock,
                 report: Callable[[str, dict], None]) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}")
        self.scenario = scenario
        self.cycles = cycles
        self.clock = clock
        self.report = report
        self.steps_done = 0
        self.complete = False
        self.resting = False

    async def run(self, link: Link, transaction_id: Callable[[], Optional[int]]) -> None:
        """Run the steps not done yet on ``link``; ``transaction_id()`` is the transaction
        running now (None: none), for RemoteStopTransaction.

        Each step is due ``wait_s`` simulated seconds after the previous one was due; a slow
        answer shifts the rest of the schedule instead of bunching the next steps together.
        """
        if self.complete:
            return
        due = self.clock.sim()
        for step in scenario_steps(self.scenario, self.cycles, self.steps_done):
            try:
                await self._do(step, link, transaction_id())
            except LinkClosed:
                return  # the step is done again on the next connection
            self.steps_done += 1
            if step.wait_s is None:
                await self._rest(asyncio.Event().wait())  # until the scenario is stopped
            due += step.wait_s
            now = self.clock.sim()
            if now > due:
                due = now
            elif due > now:
                await self._rest(self.clock.sleep(due - now))
        self.complete = True
        self.report("scenario complete", {})

    async def _rest(self, wait: Awaitable[Any]) -> None:
        """Wait between steps; meanwhile ``resting`` says that no CALL of this runner is under
        way (what a test waits for before it moves its clock on)."""
        self.resting = True
        try:
            await wait
        finally:
            self.resting = False

    async def _do(self, step: Step, link: Link, transaction_id: Optional[int]) -> None:
        request, what = self._request(step, transaction_id)
        if request is None:
            self.report(what, {"action": step.action})
            return
        try:
            response = await link.call(request)
            outcome = getattr(response, "status", "answered")
        except (TimeoutError, OCPPError) as exc:
            outcome = f"failed: {exc}"
        self.report(f"{what} -> {outcome}", {"action": step.action, "amps": step.amps,
                                              "outcome": str(outcome), "wait_s": step.wait_s})

    def _request(self, step: Step, transaction_id: Optional[int]) -> tuple[Any, str]:
        """The CALL of a step and how it is described; None for a step with nothing to send."""
        if step.action == "set_limit":
            profile = charging_profiles.build(PROFILE_ID, step.amps, purpose="TxDefaultProfile",
                                              start=self.clock.now() - CLOCK_MARGIN)
            return (call.SetChargingProfile(connector_id=CONNECTOR_ID,
                                            cs_charging_profiles=profile),
                    f"SetChargingProfile limit {step.amps:g} A")
        if step.action == "set_tx_limit":
            if transaction_id is None:
                return None, "SetChargingProfile skipped: no transaction running"
            profile = charging_profiles.build(PROFILE_ID + 1, step.amps, purpose="TxProfile",
                                              transaction_id=transaction_id)
            return (call.SetChargingProfile(connector_id=CONNECTOR_ID,
                                            cs_charging_profiles=profile),
                    f"SetChargingProfile TxProfile limit {step.amps:g} A")
        if step.action == "remote_start":
            profile = None
            if step.amps is not None:
                profile = charging_profiles.build(PROFILE_ID + 1, step.amps, purpose="TxProfile")
            return (call.RemoteStartTransaction(id_tag=ID_TAG, connector_id=CONNECTOR_ID,
                                                charging_profile=profile),
                    "RemoteStartTransaction" + (f" at {step.amps:g} A" if profile else ""))
        if transaction_id is None:
            return None, "RemoteStopTransaction skipped: no transaction running"
        return (call.RemoteStopTransaction(transaction_id=transaction_id),
                f"RemoteStopTransaction {transaction_id}")
