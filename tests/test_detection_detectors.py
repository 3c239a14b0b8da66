"""Each detector alone, on samples in simulated seconds: the limit, zero-current, energy,
timing and status detectors, and the episode they share."""
import random

import pytest

from evsim.detection.current import ZeroCurrentDetector
from evsim.detection.energy import EnergyDetector
from evsim.detection.episodes import Episode
from evsim.detection.limits import LimitDetector
from evsim.detection.status import FlappingDetector
from evsim.detection.timing import GapDetector, SkewDetector


def kinds(findings):
    return [(f.anomaly_type, f.kind) for f in findings]


def feed(detector, samples, **kwargs):
    found = []
    for t, amps in samples:
        found += detector.update(t, amps, **kwargs)
    return found


def noisy(level, start, stop, sigma=2.0, seed=0):
    rng = random.Random(seed)
    return [(float(t), level + rng.gauss(0, sigma)) for t in range(start, stop)]


# -- episodes -----------------------------------------------------------------------------------

def test_an_episode_starts_after_hold_and_ends_after_clear():
    episode = Episode("X", hold_s=2.0, clear_s=3.0)
    steps = [(0, True), (1, True), (2, True), (3, True), (4, False), (5, False), (6, True),
             (7, False), (8, False), (9, False), (10, False)]
    found = [f for t, holds in steps if (f := episode.step(float(t), holds, "x"))]
    assert [(f.kind, f.t) for f in found] == [("started", 2.0), ("ended", 9.0)]
    assert "ended after 7 s" in found[1].description
    assert episode.close(11.0) is None


# -- limits -------------------------------------------------------------------------------------

def limit_run(samples, limits, session_at=0.0):
    detector = LimitDetector()
    detector.session(session_at, True)
    found, changes = [], sorted(limits)
    for t, amps in samples:
        while changes and changes[0][0] <= t:
            detector.set_limit(*changes.pop(0))
        found += detector.update(t, amps)
    return found


@pytest.mark.parametrize("seed", range(3))
def test_a_noisy_current_at_its_limit_is_never_over_it(seed):
    assert limit_run(noisy(32, 0, 3600, seed=seed), [(0.0, 32.0)]) == []


def test_over_current_is_one_episode_from_settling_above_until_back_under():
    samples = noisy(32, 0, 60) + noisy(40, 60, 200, seed=1) + noisy(32, 200, 260, seed=2)
    found = limit_run(samples, [(0.0, 32.0)])
    assert kinds(found) == [("OVER_CURRENT", "started"), ("OVER_CURRENT", "ended")]
    assert 60 < found[0].t <= 80 and 200 < found[1].t <= 225
    assert found[0].values["expected_value"] == 32.0


def test_a_lowered_limit_not_followed_is_profile_ignored_not_over_current():
    samples = noisy(32, 0, 200)
    found = limit_run(samples, [(0.0, 32.0), (60.0, 16.0), (150.0, 32.0)])
    assert kinds(found) == [("PROFILE_IGNORED", "started"), ("PROFILE_IGNORED", "ended")]
    assert 65 <= found[0].t <= 75 and "16.0 A not followed" in found[0].description


def test_a_lowered_limit_followed_late_or_overshot_is_what_it_is():
    followed = noisy(32, 0, 62) + noisy(16, 62, 200, seed=3)
    assert limit_run(followed, [(0.0, 32.0), (60.0, 16.0)]) == []
    overshot = noisy(32, 0, 62) + noisy(22, 62, 200, seed=4)  # follows, but to 22 A
    assert kinds(limit_run(overshot, [(0.0, 32.0), (60.0, 16.0)]))[:1] == \
        [("OVER_CURRENT", "started")]


def test_no_limit_known_no_judgement_and_a_stop_ends_the_episode():
    assert limit_run(noisy(40, 0, 100), []) == []
    detector = LimitDetector()
    detector.session(0.0, True)
    detector.set_limit(0.0, 16.0)
    found = feed(detector, noisy(30, 0, 60))
    found += detector.session(60.0, False)
    assert kinds(found) == [("OVER_CURRENT", "started"), ("OVER_CURRENT", "ended")]
    assert "session ended" in found[-1].description


# -- zero current -------------------------------------------------------------------------------

def zero_run(samples, statuses, limit=32.0):
    detector = ZeroCurrentDetector()
    detector.session(0.0, True)
    found, changes = [], sorted(statuses)
    for t, amps in samples:
        while changes and changes[0][0] <= t:
            found += detector.status(*changes.pop(0))
        found += detector.update(t, amps, limit)
    return found


def test_no_current_while_charging_fires_once_and_ends_when_current_returns():
    samples = noisy(32, 0, 60) + [(float(t), 0.0) for t in range(60, 90)] + noisy(32, 90, 120)
    found = zero_run(samples, [(0.0, "Charging")])
    assert kinds(found) == [("ZERO_CURRENT_WHILE_CHARGING", "started"),
                            ("ZERO_CURRENT_WHILE_CHARGING", "ended")]
    assert 67 <= found[0].t <= 71  # 80 % of the last 10 s at 0 A


def test_suspended_a_zero_limit_a_fresh_start_or_a_small_noisy_current_is_no_zero_current():
    zeros = [(float(t), 0.0) for t in range(0, 100)]
    assert zero_run(zeros, [(0.0, "SuspendedEV")]) == []
    assert zero_run(zeros, [(0.0, "Charging")], limit=0.0) == []
    start = [(float(t), 0.0) for t in range(0, 8)] + noisy(32, 8, 60)
    assert zero_run(start, [(0.0, "Charging")]) == []
    rng = random.Random(1)
    small = [(float(t), max(0.0, 3 + rng.gauss(0, 2))) for t in range(600)]
    assert zero_run(small, [(0.0, "Charging")]) == []


# -- energy -------------------------------------------------------------------------------------

def energy_run(rate=1.0, seconds=400, amps=16.0, change=None, sigma=1.0, step_wh=None):
    """A register counting ``amps`` at 230 V (``rate`` x faster or slower from ``change``)."""
    detector, rng = EnergyDetector(), random.Random(7)
    detector.session(0.0, True)
    found, register = [], 100.0
    for t in range(seconds):
        factor = rate if change is not None and t >= change else 1.0
        register += amps * 230 / 3600 * factor
        shown = round(register, 1) if step_wh is None else step_wh * (register // step_wh)
        reading = amps + rng.gauss(0, sigma)
        found += detector.update(float(t), shown, reading * 230)
    return found


def test_an_honest_register_raises_nothing_at_any_resolution():
    assert energy_run() == []
    assert energy_run(amps=6.0, sigma=2.0) == []
    assert energy_run(step_wh=1.0, amps=6.0) == [] and energy_run(step_wh=10.0, amps=32.0) == []


@pytest.mark.parametrize("rate", [1.2, 0.8])
def test_a_register_counting_20_percent_off_is_one_mismatch(rate):
    found = energy_run(rate=rate, change=100)
    assert kinds(found) == [("ENERGY_MISMATCH", "started")]
    assert 100 < found[0].t < 200


def test_a_frozen_register_is_a_freeze_not_a_mismatch():
    found = energy_run(rate=0.0, change=100, seconds=200)
    assert kinds(found) == [("METER_FREEZE", "started")]
    assert 109 <= found[0].t <= 111


def test_a_register_that_steps_down_is_one_decrease_episode():
    detector = EnergyDetector()
    detector.session(0.0, True)
    found = []
    register = 500.0
    for t in range(120):
        register += 1.0
        if t in (20, 30, 40):
            register -= 50
        found += detector.update(float(t), register, 3680.0)
    assert kinds(found) == [("ENERGY_REGISTER_DECREASE", "started"),
                            ("ENERGY_REGISTER_DECREASE", "ended")]
    assert found[0].t == 20 and found[1].t == 70


def test_no_flow_no_freeze_and_a_gap_is_not_integrated():
    detector = EnergyDetector()
    detector.session(0.0, True)
    assert [f for t in range(100) for f in detector.update(float(t), 100.0, 0.0)] == []
    gapped = EnergyDetector()
    gapped.session(0.0, True)
    found = []
    for t in list(range(0, 100)) + list(range(160, 300)):
        found += gapped.update(float(t), 100 + t * 1.0, 3600.0)  # 1 Wh/s, on through the gap
    assert found == []


# -- timing -------------------------------------------------------------------------------------

def test_a_steady_skew_is_one_episode_a_backlog_catching_up_is_none():
    detector = SkewDetector()
    jitter = random.Random(3)
    found = [f for t in range(20) for f in detector.update(float(t), -0.01)]
    found += [f for t in range(20, 80)
              for f in detector.update(float(t), 300.0 - jitter.uniform(0, 1))]
    found += [f for t in range(80, 100) for f in detector.update(float(t), 0.0)]
    assert kinds(found) == [("TIMESTAMP_SKEW", "started"), ("TIMESTAMP_SKEW", "ended")]
    assert found[0].t == 29 and "300 s ahead" in found[0].description
    backlog = SkewDetector()
    offsets = [-120 + 1.0 * k for k in range(121)]  # a backlog delivered at once
    assert [f for k, o in enumerate(offsets) for f in backlog.update(float(k), o)] == []


def test_a_gap_is_decided_when_the_samples_resume_and_a_clock_jump_is_none():
    detector = GapDetector()
    detector.session(0.0, True)
    found = [f for t in range(1, 30) for f in detector.update(float(t), False)]
    found += detector.update(95.0, False)
    assert kinds(found) == [("METER_VALUE_GAP", "started")]
    assert found[0].values["gap_s"] == 66.0
    assert detector.update(400.0, True) == []  # the clock jumped: no gap
    found = detector.session(500.0, False)
    assert kinds(found) == [("METER_VALUE_GAP", "started")]  # nothing until the stop


def test_the_usual_interval_sets_the_gap():
    detector = GapDetector()
    detector.session(0.0, True)
    found = [f for t in range(60, 1200, 60) for f in detector.update(float(t), False)]
    found += detector.update(1400.0, False)
    assert found == []  # 260 s is under 5 x 60 s
    assert kinds(detector.update(1800.0, False)) == [("METER_VALUE_GAP", "started")]


# -- status -------------------------------------------------------------------------------------

def test_flapping_is_five_changes_in_a_minute_pauses_and_session_edges_are_not():
    detector = FlappingDetector()
    assert detector.update(0.0, "Preparing") == []
    detector.session(1.0, True)
    found = detector.update(1.0, "Charging")
    for t, status in [(60, "SuspendedEV"), (120, "Charging"), (200, "SuspendedEV"),
                      (260, "Charging")]:
        found += detector.update(float(t), status)
    assert found == []
    statuses = ["SuspendedEVSE", "Charging", "Faulted", "Charging", "SuspendedEVSE"]
    for k, status in enumerate(statuses):
        found += detector.update(300.0 + 4 * k, status)
    assert kinds(found) == [("STATUS_FLAPPING", "started")]
    found += detector.tick(340.0) + detector.tick(377.0)
    assert kinds(found)[-1] == ("STATUS_FLAPPING", "ended")
