"""Fault injection: --inject parsing, the windows and labels, the charger's faulty model and the
charge point's meter and status faults, all on explicit simulated time."""
import itertools
import logging
import math
from datetime import UTC, datetime, timedelta

import pytest

from evsim.faults import KINDS, parse_inject, parse_injections
from evsim.faults.charger import FaultyCharger
from evsim.faults.kinds import CHARGE_POINT, CHARGER, inject_help
from evsim.faults.labels import bank_recorder
from evsim.faults.meter import MeterFaults, StatusFaults, charge_point_faults

START = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    """Simulated seconds set by hand; wall time = START + t / speed."""

    def __init__(self, speed: float = 1.0) -> None:
        self.t, self.speed = 0.0, speed

    def sim(self) -> float:
        return self.t

    def now(self) -> datetime:
        return START + timedelta(seconds=self.t / self.speed)


# -- parsing ------------------------------------------------------------------------------------

def test_a_kind_alone_takes_every_default():
    spec = parse_inject("over-current")
    assert spec.kind == "over-current" and spec.anomaly_type == "OVER_CURRENT"
    assert dict(spec.params) == {"after": 30.0, "for": 120.0, "factor": 1.25}


def test_parameters_override_defaults_and_for_may_be_infinite():
    spec = parse_inject(" oscillation : amplitude=30, period=4,for=inf ")
    assert spec.params["amplitude"] == 30 and spec.params["period"] == 4
    assert math.isinf(spec.duration) and spec.after == 30
    assert str(parse_inject("dropout:after=5")) == "dropout:after=5,for=30"


@pytest.mark.parametrize("text, words", [
    ("teleport", ["unknown fault kind 'teleport'", "oscillation", "status-flap"]),
    ("dropout:colour=red", ["bad parameter 'colour=red' for dropout", "after=", "for="]),
    ("dropout:after", ["bad parameter 'after'"]),
    ("dropout:after=soon", ["bad value 'soon' for dropout after", "a number >= 0"]),
    ("dropout:after=-1", ["bad value '-1'"]),
    ("dropout:for=0", ["a number > 0 (or inf)"]),
    ("over-current:factor=1", ["from 1.05 to 4"]),
    ("energy-drift:percent=0", ["non-zero"]),
    ("oscillation:period=1", ["from 2 to 60"]),
])
def test_a_bad_injection_is_one_line_that_lists_what_is_valid(text, words):
    with pytest.raises(ValueError) as caught:
        parse_inject(text)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_each_process_takes_only_its_own_kinds():
    with pytest.raises(ValueError, match="meter-freeze is injected by cp.py, not "
                                         "charger_module.py"):
        parse_inject("meter-freeze", CHARGER)
    with pytest.raises(ValueError, match="valid kinds are meter-freeze"):
        parse_inject("nope", CHARGE_POINT)
    specs = parse_injections(["dropout", "over-current:factor=2"], CHARGER)
    assert [s.kind for s in specs] == ["dropout", "over-current"]
    assert parse_injections(None) == []


def test_the_table_covers_every_anomaly_type_once_and_says_who_injects():
    assert {k.process for k in KINDS.values()} == {CHARGER, CHARGE_POINT}
    assert len({k.anomaly_type for k in KINDS.values()}) == len(KINDS) == 10
    assert "dropout[:after=30,for=30]" in inject_help(CHARGER)
    assert "meter-gap" not in inject_help(CHARGER)


# -- windows and labels -------------------------------------------------------------------------

def test_a_label_covers_the_armed_window_while_the_fault_shows_and_counts_from_the_origin():
    clock, labels = Clock(speed=10), []
    charger = FaultyCharger([parse_inject("dropout:after=5,for=10")], sim=clock.sim,
                            now=clock.now, on_label=labels.append, charge_point_id="CP_9",
                            seed=3, speed=10)
    charger.set_limit(32)
    for second in range(40):  # nothing charges for 20 s: the origin waits for the start
        clock.t = float(second)
        if second == 20:
            charger.start()
        charger.tick(1.0)
    assert len(labels) == 1
    label = labels[0]
    assert (label.start_s, label.end_s) == (25.0, 35.0)
    assert label.start == START + timedelta(seconds=2.5) and label.end == START + \
        timedelta(seconds=3.5)
    assert label.record() == {"charge_point_id": "CP_9",
                              "anomaly_type": "ZERO_CURRENT_WHILE_CHARGING",
                              "start": label.start, "end": label.end,
                              "parameters": {"kind": "dropout", "after": 5.0, "for": 10.0,
                                             "speed": 10},
                              "seed": 3, "source": "charger"}


def test_a_stop_splits_the_label_and_shutdown_hands_over_the_open_one():
    clock, labels = Clock(), []
    charger = FaultyCharger([parse_inject("over-current:after=0,for=inf")], sim=clock.sim,
                            now=clock.now, on_label=labels.append, charge_point_id="CP_1")
    charger.start()
    for second in range(30):
        clock.t = float(second)
        if second == 10:
            charger.stop()
        if second == 20:
            charger.start()
        charger.tick(1.0)
    charger.close()
    assert [(la.start_s, la.end_s) for la in labels] == [(0.0, 10.0), (20.0, 29.0)]
    assert labels[0].parameters["for"] is None  # infinity is not JSON


def test_bank_recorder_hands_labels_to_the_writer_and_warns_once_without_record_label(caplog):
    class Writer:
        def __init__(self, bank):
            self.bank = bank

        def call(self, write):
            write(self.bank)

    class Bank:
        def __init__(self):
            self.labels = []

        def record_label(self, **fields):
            self.labels.append(fields)

    clock, bank = Clock(), Bank()
    made = []
    charger = FaultyCharger([parse_inject("dropout:after=0,for=2")], sim=clock.sim,
                            now=clock.now, on_label=made.append, charge_point_id="CP_1")
    charger.start()
    for second in range(4):
        clock.t = float(second)
        charger.tick(1.0)
    log = logging.getLogger("test")
    bank_recorder(Writer(bank), log)(made[0])
    assert bank.labels == [made[0].record()]
    old = bank_recorder(Writer(object()), log)
    with caplog.at_level(logging.WARNING):
        old(made[0])
        old(made[0])
    assert sum("no labels table" in r.message for r in caplog.records) == 1


# -- the charger --------------------------------------------------------------------------------

def run_charger(spec: str, seconds: int, limits=(), seed: int = 0, ramp: float = 1.0):
    """(published currents, labels) of a charger started at t=0 with limit 32 A."""
    clock, labels = Clock(), []
    charger = FaultyCharger([parse_inject(spec)], sim=clock.sim, now=clock.now,
                            on_label=labels.append, charge_point_id="CP_1", seed=seed, ramp=ramp)
    charger.set_limit(32)
    charger.start()
    published = []
    changes = dict(limits)
    for second in range(seconds):
        clock.t = float(second)
        if second in changes:
            charger.set_limit(changes[second])
        published.append(round(charger.tick(1.0), 2))
    charger.close()
    return published, labels


def test_over_current_settles_at_factor_times_the_limit_then_back():
    published, labels = run_charger("over-current:after=5,for=10,factor=1.5", 25)
    assert published[:5] == [32.0] * 5
    assert published[5:15] == [48.0] * 10
    assert published[15:] == [32.0] * 10
    assert [(la.start_s, la.end_s, la.anomaly_type) for la in labels] == \
        [(5.0, 15.0, "OVER_CURRENT")]


def test_ignore_limit_keeps_the_old_limit_follows_a_raise_and_the_request_after_the_end():
    published, labels = run_charger("ignore-limit:after=0,for=20", 30,
                                    limits=[(5, 16.0), (10, 40.0), (12, 8.0)])
    assert published[5:10] == [32.0] * 5  # lowered: not followed
    assert published[10:12] == [40.0] * 2  # raised: followed
    assert published[12:20] == [40.0] * 8  # lowered again: not followed
    assert published[20:] == [8.0] * 10  # the fault is over: the last request applies
    assert [(la.start_s, la.end_s) for la in labels] == [(5.0, 10.0), (12.0, 20.0)]


def test_dropout_is_zero_while_charging_and_the_ramp_starts_again_from_zero():
    published, labels = run_charger("dropout:after=3,for=4", 10, ramp=0.5)
    assert published[3:7] == [0.0] * 4
    assert 0 < published[7] < published[8] < 32
    assert [(la.start_s, la.end_s) for la in labels] == [(3.0, 7.0)]


def test_oscillation_hunts_below_the_limit_with_a_seeded_phase():
    published, labels = run_charger("oscillation:after=2,for=20,amplitude=20,period=4", 24,
                                    seed=1)
    swinging = published[2:22]
    assert set(swinging) == {32.0, 12.0} and max(published) <= 32.0
    assert all(swinging[k] == swinging[k + 4] for k in range(16))  # its period
    again, _ = run_charger("oscillation:after=2,for=20,amplitude=20,period=4", 24, seed=1)
    assert again == published
    phases = {tuple(run_charger("oscillation:after=0,period=4", 8, seed=s)[0]) for s in range(8)}
    assert len(phases) > 1  # the seed moves the phase
    assert labels[0].anomaly_type == "CURRENT_FLUCTUATION"


def test_a_charger_refuses_the_charge_points_faults():
    with pytest.raises(ValueError, match="injected by cp.py"):
        FaultyCharger([parse_inject("meter-gap")], sim=lambda: 0.0, now=lambda: START,
                      on_label=print, charge_point_id="CP_1")


# -- the charge point ---------------------------------------------------------------------------

def meter_run(spec: str, seconds: int = 40, amps: float = 16.0, speed: float = 1.0,
              tx=lambda t: t >= 5):
    """Readings of a meter at ``amps`` (230 V), one a second, and the labels."""
    labels = []
    faults = MeterFaults([parse_inject(spec)], charge_point_id="CP_1", on_label=labels.append,
                         seed=2, speed=speed)
    readings, energy = [], 0.0
    for second in range(seconds):
        t = float(second)
        now = START + timedelta(seconds=t / speed)
        readings.append(faults.apply(t, now, amps, energy, tx(t)))
        energy += amps * 230 / 3600
    faults.close(float(seconds), START + timedelta(seconds=seconds / speed))
    return readings, labels


def registers(readings):
    return [None if r is None else round(r.energy_wh, 2) for r in readings]


def test_meter_freeze_holds_the_register_and_it_carries_on_from_there():
    readings, labels = meter_run("meter-freeze:after=5,for=10")
    values = registers(readings)
    assert len(set(values[9:20])) == 1  # from the sample before the onset
    assert values[21] - values[20] == pytest.approx(16 * 230 / 3600, abs=0.01)
    assert values[-1] < 39 * 16 * 230 / 3600 - 10  # what it missed stays missed
    assert [(la.start_s, la.end_s, la.anomaly_type) for la in labels] == \
        [(10.0, 20.0, "METER_FREEZE")]


def test_meter_backwards_steps_down_every_so_often_never_below_zero():
    readings, labels = meter_run("meter-backwards:after=5,for=12,step=3,every=5")
    values = registers(readings)
    assert values[10] < values[9] and values[15] < values[14] and values[20] < values[19]
    assert all(b >= a for a, b in itertools.pairwise(values[21:]))
    big, _ = meter_run("meter-backwards:after=0,for=2,step=1000")
    assert min(registers(big)) == 0.0
    assert labels[0].anomaly_type == "ENERGY_REGISTER_DECREASE"


def test_energy_drift_grows_the_register_by_the_percentage():
    readings, _ = meter_run("energy-drift:after=5,for=inf,percent=-20", seconds=60)
    values = registers(readings)
    step = 16 * 230 / 3600
    assert values[30] - values[20] == pytest.approx(10 * step * 0.8, abs=0.01)


def test_clock_skew_shifts_every_timestamp_by_simulated_minutes():
    readings, labels = meter_run("clock-skew:after=5,for=10,minutes=-2", speed=10)
    offsets = [(r.timestamp - (START + timedelta(seconds=k / 10))).total_seconds()
               for k, r in enumerate(readings)]
    assert offsets[:10] == [0.0] * 10
    assert offsets[10:20] == [pytest.approx(-12.0)] * 10  # 120 simulated s at speed 10
    assert offsets[20:] == [0.0] * 20
    faults = MeterFaults([parse_inject("clock-skew:after=0")], charge_point_id="CP_1",
                         on_label=print)
    faults.apply(0.0, START, 10.0, 0.0, True)
    assert faults.timestamp(0.5, START) == START + timedelta(minutes=5)
    assert labels[0].anomaly_type == "TIMESTAMP_SKEW"


def test_meter_gap_swallows_the_samples_of_its_window_only_during_a_transaction():
    readings, labels = meter_run("meter-gap:after=5,for=10")
    missing = [k for k, r in enumerate(readings) if r is None]
    assert missing == list(range(10, 20))
    idle, none = meter_run("meter-gap:after=0", tx=lambda t: False)
    assert None not in idle and none == []
    assert [(la.start_s, la.end_s) for la in labels] == [(10.0, 20.0)]


def test_status_flap_flips_only_while_truly_charging_and_by_the_seed():
    def shown(seed):
        labels = []
        faults = StatusFaults([parse_inject("status-flap:after=2,for=12,every=2")],
                              charge_point_id="CP_1", on_label=labels.append, seed=seed)
        statuses = []
        for half in range(50):
            t = half / 2
            true = "Charging" if 5 <= t < 22 else "Available"
            statuses.append(faults.status(t, START + timedelta(seconds=t), true))
        return statuses, labels

    statuses, labels = shown(0)
    assert statuses[:14] == ["Available"] * 10 + ["Charging"] * 4
    flipping = statuses[14:38]
    assert {"SuspendedEVSE", "Faulted", "Charging"} == set(flipping)
    assert statuses[38:] == ["Charging"] * 6 + ["Available"] * 6
    assert [(la.start_s, la.end_s) for la in labels] == [(7.0, 19.0)]
    assert shown(0)[0] == statuses
    assert len({tuple(shown(s)[0]) for s in range(6)}) == 2  # which status comes first


def test_charge_point_faults_splits_meter_and_status_and_refuses_the_chargers():
    meter, status = charge_point_faults(parse_injections(["meter-gap", "status-flap"]),
                                        charge_point_id="CP_1", on_label=print)
    assert [w.spec.kind for w in meter.windows] == ["meter-gap"]
    assert [w.spec.kind for w in status.windows] == ["status-flap"]
    with pytest.raises(ValueError, match="dropout"):
        charge_point_faults([parse_inject("dropout")], charge_point_id="CP_1", on_label=print)
