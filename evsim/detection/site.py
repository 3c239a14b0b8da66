"""Everything the central system concludes about one charge point, from what crosses OCPP.

:class:`SiteAnalyser` takes the typed observations of :mod:`evsim.detection.observations` in the
order they were received and returns the :class:`~evsim.detection.observations.Finding` s they
cause, one detector per anomaly type. It places every observation on the charge point's sample
timeline (:mod:`evsim.detection.timeline`), so detectors decide from the samples' own timestamps
in simulated seconds, and knows the session (transaction), the status and the limit in force:
the charge point's ``Current.Offered`` when it reports it, else the last limit the central
system said it set. The registers in Start/StopTransaction are whole Wh (coarser than the
samples' register), so the register is judged from the samples alone. Pure: no clock, no I/O;
the central system records what it returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Optional

from evsim.detection import fluctuation
from evsim.detection.current import ZeroCurrentDetector
from evsim.detection.energy import EnergyDetector
from evsim.detection.limits import LimitDetector
from evsim.detection.observations import (
    CURRENT,
    ENERGY,
    OFFERED,
    POWER,
    VOLTAGE,
    Finding,
    LimitSet,
    MeterSample,
    Observation,
    StatusChange,
    TransactionStarted,
    TransactionStopped,
)
from evsim.detection.status import FlappingDetector
from evsim.detection.timeline import Timeline
from evsim.detection.timing import GapDetector, SkewDetector

NOMINAL_VOLTAGE = 230.0  # for the expected energy when a sample has neither voltage nor power


@dataclass
class Detectors:
    """The detectors of one charge point (replace one to tune it)."""

    fluctuation: fluctuation.FluctuationDetector = field(
        default_factory=fluctuation.FluctuationDetector)
    limits: LimitDetector = field(default_factory=LimitDetector)
    zero: ZeroCurrentDetector = field(default_factory=ZeroCurrentDetector)
    energy: EnergyDetector = field(default_factory=EnergyDetector)
    skew: SkewDetector = field(default_factory=SkewDetector)
    gap: GapDetector = field(default_factory=GapDetector)
    flapping: FlappingDetector = field(default_factory=FlappingDetector)


class SiteAnalyser:
    """One charge point's analysis: ``observe(observation)`` returns the findings it caused."""

    def __init__(self, charge_point_id: str, speed: float = 1.0,
                 detectors: Optional[Detectors] = None) -> None:
        self.charge_point_id = charge_point_id
        self.timeline = Timeline(speed)
        self.detectors = detectors or Detectors()
        self.transaction_id: Optional[int] = None
        self.in_session = False
        self.status: Optional[str] = None
        self._offered_seen = False
        self._t: Optional[float] = None

    @property
    def speed(self) -> float:
        return self.timeline.speed

    def observe(self, observation: Observation) -> list[Finding]:
        """One observation, in the order received; returns the findings, oldest first."""
        if isinstance(observation, MeterSample):
            found = self._sample(observation)
        elif isinstance(observation, StatusChange):
            found = self._status(observation)
        elif isinstance(observation, TransactionStarted):
            found = self._started(observation)
        elif isinstance(observation, TransactionStopped):
            found = self._stopped(observation)
        elif isinstance(observation, LimitSet):
            found = self._limit_set(observation)
        else:
            raise TypeError(f"not an observation: {observation!r}")
        found = [replace(f, received=observation.received,
                         transaction_id=f.transaction_id or self.transaction_id) for f in found]
        if isinstance(observation, TransactionStopped):
            self.transaction_id = None
        return found

    def close(self, received: Optional[datetime] = None) -> list[Finding]:
        """Shutdown: end every open episode."""
        if self._t is None:
            return []
        t, d = self._t, self.detectors
        found: list[Finding] = []
        detection = d.fluctuation.close(t)
        if detection is not None:
            found.append(self._fluctuation_finding(detection, t))
        for detector in (d.limits, d.zero, d.energy, d.skew, d.flapping):
            found += detector.close(t)
        return [replace(f, received=received, transaction_id=self.transaction_id)
                for f in found]

    # -- observations ---------------------------------------------------------------------------

    def _sample(self, sample: MeterSample) -> list[Finding]:
        placed = self.timeline.sample(sample.timestamp, sample.received)
        t, d, values = placed.t, self.detectors, sample.measurands
        self._t = t
        found: list[Finding] = []
        if sample.transaction_id is not None and not self.in_session:
            found += self._open(t, sample.transaction_id)
        if placed.jumped:
            d.energy.gap()
        found += d.skew.update(t, placed.offset)
        found += d.gap.update(t, placed.jumped)
        amps, offered = values.get(CURRENT), values.get(OFFERED)
        if offered is not None:
            self._offered_seen = True
            d.limits.set_limit(t, offered)
        if amps is not None:
            detection = d.fluctuation.update(t, amps)
            if detection is not None:
                found.append(self._fluctuation_finding(detection, t))
            if self.in_session:
                found += d.limits.update(t, amps)
                found += d.zero.update(t, amps, d.limits.limit)
        found += d.energy.update(t, values.get(ENERGY), _power(values))
        found += d.flapping.tick(t)
        return found

    def _status(self, change: StatusChange) -> list[Finding]:
        t = self.timeline.stamped(change.timestamp, change.received)
        self._t = max(self._t or t, t)
        self.status = change.status
        d = self.detectors
        return d.zero.status(t, change.status) + d.flapping.update(t, change.status)

    def _started(self, started: TransactionStarted) -> list[Finding]:
        t = self.timeline.stamped(started.timestamp, started.received)
        self._t = max(self._t or t, t)
        found = self._close_session(t) if self.in_session else []
        return found + self._open(t, started.transaction_id)

    def _stopped(self, stopped: TransactionStopped) -> list[Finding]:
        t = self.timeline.stamped(stopped.timestamp, stopped.received)
        self._t = max(self._t or t, t)
        return self._close_session(t)

    def _limit_set(self, limit: LimitSet) -> list[Finding]:
        if not self._offered_seen:
            self.detectors.limits.set_limit(self.timeline.at_received(limit.received),
                                            limit.amps)
        return []

    # -- sessions -------------------------------------------------------------------------------

    def _open(self, t: float, transaction_id: Optional[int]) -> list[Finding]:
        self.in_session, self.transaction_id = True, transaction_id
        d = self.detectors
        found: list[Finding] = []
        for detector in (d.limits, d.zero, d.energy, d.gap, d.flapping):
            found += detector.session(t, True)
        return found

    def _close_session(self, t: float) -> list[Finding]:
        d = self.detectors
        found: list[Finding] = []
        for detector in (d.limits, d.zero, d.energy, d.gap, d.flapping):
            found += detector.session(t, False)
        self.in_session = False
        return found

    def _fluctuation_finding(self, detection: fluctuation.Detection, t: float) -> Finding:
        return Finding(fluctuation.ANOMALY_TYPE, detection.kind, detection.severity,
                       detection.description, t,
                       {"current_value": detection.current_a,
                        "expected_value": detection.expected_a,
                        "deviation": detection.deviation_a,
                        **detection.pattern_parameters()},
                       detection=detection)


def _power(values: dict) -> Optional[float]:
    """The power of a sample: voltage x current, else the power measurand, else the current at
    the nominal voltage."""
    amps, volts = values.get(CURRENT), values.get(VOLTAGE)
    if amps is not None and volts is not None:
        return amps * volts
    if values.get(POWER) is not None:
        return values[POWER]
    return amps * NOMINAL_VOLTAGE if amps is not None else None
