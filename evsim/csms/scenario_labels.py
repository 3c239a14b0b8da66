"""Ground truth of the central system's own anomaly: the ``fluctuation`` scenario is a
CURRENT_FLUCTUATION, so every stretch in which it drives a charge point is labelled, as an
injected fault labels the stretches in which it shows (:mod:`evsim.faults.labels`).

A stretch starts when the scenario starts driving the charge point and ends when it stops driving
it: the scenario completes, the charge point disconnects, the scenario is paused or stopped, or
the central system shuts down (:meth:`ScenarioLabels.close`). A scenario that is no anomaly
(``normal``, ``none``) labels nothing. No I/O: times come from the injected clock, labels go to
``on_label`` when their stretch ends.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from evsim.clock import Clock
from evsim.faults.kinds import SCENARIO_FLUCTUATION
from evsim.faults.labels import Label, OnLabel

#: The scenarios that are anomalies, and the ``anomaly_type`` a detector should record for each.
SCENARIO_ANOMALIES = {SCENARIO_FLUCTUATION[0]: SCENARIO_FLUCTUATION[2]}
SOURCE = "csms"


def anomaly_type_of(scenario: str) -> Optional[str]:
    """The anomaly a scenario is (None: it is none)."""
    return SCENARIO_ANOMALIES.get(scenario)


@dataclass(frozen=True, eq=False)
class Stretch:
    """One stretch of a scenario driving a charge point, open until its label is handed over."""

    charge_point_id: str
    scenario: str
    start_s: float
    start: datetime


class ScenarioLabels:
    """The open stretch of each charge point the scenario drives, and their labels once closed."""

    def __init__(self, scenario: str, clock: Clock, on_label: OnLabel, cycles: int = 0,
                 seed: Optional[int] = None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.clock = clock
        self.on_label = on_label
        self.cycles = cycles
        self._open: dict[str, Stretch] = {}

    @property
    def open(self) -> list[str]:
        """The charge points whose stretch is open."""
        return list(self._open)

    def start(self, charge_point_id: str, scenario: Optional[str] = None) -> Optional[Stretch]:
        """The scenario (``scenario``, for a charge point a mix gave its own) starts driving
        ``charge_point_id``: its stretch opens (one already open goes on). None when the
        scenario is no anomaly."""
        scenario = scenario or self.scenario
        if anomaly_type_of(scenario) is None:
            return None
        if charge_point_id not in self._open:
            self._open[charge_point_id] = Stretch(charge_point_id, scenario, self.clock.sim(),
                                                  self.clock.now())
        return self._open[charge_point_id]

    def end(self, charge_point_id: str, stretch: Optional[Stretch] = None) -> None:
        """The scenario stopped driving ``charge_point_id``: its open stretch's label is handed
        over. With ``stretch``, only if that one is still open, so a run that winds down after
        a newer one began cannot end the newer one's label."""
        current = self._open.get(charge_point_id)
        if current is None or (stretch is not None and stretch is not current):
            return
        del self._open[charge_point_id]
        self.on_label(self._label(current))

    def close(self) -> None:
        """Shutdown: every open stretch ends now."""
        for charge_point_id in list(self._open):
            self.end(charge_point_id)

    def _label(self, stretch: Stretch) -> Label:
        parameters = {"scenario": stretch.scenario, "cycles": self.cycles,
                      "speed": self.clock.speed}
        return Label(stretch.charge_point_id, anomaly_type_of(stretch.scenario), stretch.start_s,
                     self.clock.sim(), stretch.start, self.clock.now(), parameters, self.seed,
                     SOURCE)
