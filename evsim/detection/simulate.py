"""A whole charging site in pure code, for trying the detectors the way the central system will
run them: the charger model with its injected faults, an EV that draws what it wants, the
charge point sampling and reporting (with its injected faults), and the observations the
central system receives, in the order and at the times it receives them, with the labels the
faults made.

The charge point here is a model of what ``cp.py`` does with :mod:`evsim.faults.meter`: it
integrates the energy it measures, asks :class:`~evsim.faults.meter.MeterFaults` what to send
for each sample and :class:`~evsim.faults.meter.StatusFaults` which status to show, and sends
in order over one connection (a later message is never received before an earlier one). Time
is simulated seconds from 0; wall-clock times are ``START + t / speed``, and every delivery takes
a few milliseconds of wall time, which ``--speed`` turns into more simulated seconds.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Optional

from evsim.detection import observations as obs
from evsim.faults.charger import FaultyCharger
from evsim.faults.kinds import CHARGER, FaultSpec
from evsim.faults.labels import Label
from evsim.faults.meter import charge_point_faults

START = datetime(2026, 1, 1, tzinfo=UTC)
EV_RAMP_PER_S = 0.5  # an EV closes this much of the gap to what it may draw per second
NOISELESS_BELOW_A = 0.5  # a meter reads 0 when no current flows


@dataclass(frozen=True)
class Ev:
    """What the EV draws ``into`` seconds into its session: up to ``max_a``; tapering (CC-CV)
    from ``taper_from_s`` with time constant ``taper_tau_s`` down to ``floor_a``, where it
    stops (SuspendedEV) as a full battery does; and pausing (SuspendedEV) in ``pauses``."""

    max_a: float = 48.0
    taper_from_s: Optional[float] = None
    taper_tau_s: float = 300.0
    floor_a: float = 3.0
    pauses: tuple[tuple[float, float], ...] = ()

    def demand(self, into: float) -> Optional[float]:
        """Amps it wants, or None while it is suspended."""
        if any(begin <= into < begin + length for begin, length in self.pauses):
            return None
        if self.taper_from_s is None or into < self.taper_from_s:
            return self.max_a
        amps = self.max_a * math.exp(-(into - self.taper_from_s) / self.taper_tau_s)
        return amps if amps >= self.floor_a else None


@dataclass(frozen=True)
class Session:
    start_s: float
    stop_s: float
    ev: Ev = Ev()


@dataclass
class Scenario:
    """One run of one charge point."""

    name: str
    duration_s: float
    sessions: Sequence[Session]
    limits: Sequence[tuple[float, float]] = ((0.0, 32.0),)  # (t, amps) the central system sets
    injections: Sequence[FaultSpec] = ()
    seed: int = 0
    noise_a: float = 2.0
    sample_every_s: float = 1.0
    charger_period_s: float = 1.0
    speed: float = 1.0
    delay_s: tuple[float, float] = (0.001, 0.01)  # wall seconds a message takes to arrive
    offered: bool = False
    glitches: Sequence[tuple[float, float]] = ()  # (t, amps added to one reported sample)
    voltage: float = 230.0
    charge_point_id: str = "CP_1"
    extra_labels: Sequence[Label] = ()  # ground truth made by the scenario itself (csms)


@dataclass
class Run:
    """What a scenario produced: the observations as received, and the labels."""

    scenario: Scenario
    observations: list[obs.Observation] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)


class _Clock:
    def __init__(self, speed: float) -> None:
        self.speed, self.t = speed, 0.0

    def sim(self) -> float:
        return self.t

    def now(self) -> datetime:
        return wall(self.t, self.speed)


def wall(t: float, speed: float = 1.0) -> datetime:
    """The wall-clock time of simulated second ``t``."""
    return START + timedelta(seconds=t / speed)


def simulate(scenario: Scenario) -> Run:
    """Run a scenario to its end."""
    return _Site(scenario).run()


class _Site:
    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.result = Run(scenario, labels=list(scenario.extra_labels))
        self.clock = _Clock(scenario.speed)
        self.rng = random.Random(f"site:{scenario.seed}")
        charger_faults = [f for f in scenario.injections if f.info.process == CHARGER]
        cp_faults = [f for f in scenario.injections if f.info.process != CHARGER]
        label = self.result.labels.append
        common = dict(charge_point_id=scenario.charge_point_id, on_label=label,
                      seed=scenario.seed, speed=scenario.speed)
        self.charger = FaultyCharger(charger_faults, sim=self.clock.sim, now=self.clock.now,
                                     **common)
        self.meter, self.status_faults = charge_point_faults(cp_faults, **common)
        self.output = 0.0  # what the charger lets through
        self.ev_wish = 0.0  # what the EV would draw
        self.ev_level = 0.0  # what it draws
        self.energy_wh = 0.0
        self.session: Optional[Session] = None
        self.transactions = 0
        self.requested = 0.0
        self.shown: Optional[str] = None
        self.last_received = START - timedelta(days=1)

    def run(self) -> Run:
        s, step = self.s, self.s.charger_period_s
        events: list[tuple[float, int, str, object]] = []
        events += [(t, 0, "limit", amps) for t, amps in s.limits]
        for session in s.sessions:
            events += [(session.start_s, 1, "start", session), (session.stop_s, 1, "stop", session)]
        events += [(k * step, 2, "tick", None) for k in range(1, int(s.duration_s / step) + 1)]
        events += [(k * s.sample_every_s, 3, "sample", None)
                   for k in range(int(s.duration_s / s.sample_every_s) + 1)]
        events += [(k * 0.5, 4, "status", None) for k in range(int(s.duration_s / 0.5) + 1)]
        for t, _, what, arg in sorted(events, key=lambda e: e[:2]):
            self.clock.t = t
            getattr(self, f"_{what}")(t, arg)
        self.charger.close()
        now = self.clock.now()
        self.meter.close(self.clock.t, now)
        self.status_faults.close(self.clock.t, now)
        self.result.observations.sort(key=lambda o: o.received)
        return self.result

    def _send(self, make) -> None:
        """Deliver a message: a few ms of wall time, never before the one sent before it."""
        delay = timedelta(seconds=self.rng.uniform(*self.s.delay_s))
        received = max(self.clock.now() + delay, self.last_received + timedelta(microseconds=1))
        self.last_received = received
        self.result.observations.append(make(received))

    def _stamp(self, t: float) -> datetime:
        moment = self.meter.timestamp(t, self.clock.now())
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)  # as OCPP has it

    def _limit(self, t: float, amps: float) -> None:
        self.requested = amps
        self.charger.set_limit(amps)
        self._send(lambda received: obs.LimitSet(amps, received))

    def _start(self, t: float, session: Session) -> None:
        self.session = session
        self.transactions += 1
        tx, stamp, meter = self.transactions, self._stamp(t), round(self.energy_wh)
        self._send(lambda received: obs.TransactionStarted(tx, received, stamp, meter))
        self.charger.start()

    def _stop(self, t: float, session: Session) -> None:
        self.charger.stop()
        tx, stamp, meter = self.transactions, self._stamp(t), round(self.energy_wh)
        self._send(lambda received: obs.TransactionStopped(tx, received, stamp, meter))
        self.session = None

    def _demand(self, t: float) -> Optional[float]:
        if self.session is None:
            return 0.0
        return self.session.ev.demand(t - self.session.start_s)

    def _tick(self, t: float, _: object) -> None:
        """The charger moves; the EV draws what the charger lets through, up to what it wants
        (its own wish ramps up, as an EV's does after a start or a pause)."""
        step = self.s.charger_period_s
        self.output = self.charger.tick(step)
        demand = self._demand(t) or 0.0
        if demand > self.ev_wish:
            self.ev_wish += (demand - self.ev_wish) * (1 - (1 - EV_RAMP_PER_S) ** step)
        self.ev_wish = min(self.ev_wish, demand)
        self.ev_level = min(self.output, self.ev_wish)
        self.energy_wh += self.ev_level * self.s.voltage * step / 3600

    def _sample(self, t: float, _: object) -> None:
        s, now = self.s, self.clock.now()
        amps = self.ev_level
        if amps > NOISELESS_BELOW_A and s.noise_a:
            amps += self.rng.gauss(0, s.noise_a)
        amps += sum(extra for at, extra in s.glitches if abs(at - t) < s.sample_every_s / 2)
        amps = max(0.0, amps)
        in_tx = self.session is not None
        reading = self.meter.apply(t, now, amps, self.energy_wh, in_tx)
        if reading is None:
            return
        values = {obs.CURRENT: round(reading.amps, 1), obs.VOLTAGE: s.voltage,
                  obs.POWER: round(reading.amps * s.voltage, 1),
                  obs.ENERGY: round(reading.energy_wh, 1)}
        if s.offered:
            values[obs.OFFERED] = self.requested
        stamp = reading.timestamp.replace(
            microsecond=reading.timestamp.microsecond // 1000 * 1000)
        tx = self.transactions if in_tx else None
        self._send(lambda received: obs.MeterSample(stamp, received, values, tx))

    def _status(self, t: float, _: object) -> None:
        if self.session is None:
            true = "Available"
        else:
            true = "Charging" if self._demand(t) is not None else "SuspendedEV"
        shown = self.status_faults.status(t, self.clock.now(), true)
        if shown != self.shown:
            self.shown = shown
            stamp = self._stamp(t)
            self._send(lambda received: obs.StatusChange(shown, received, stamp))
