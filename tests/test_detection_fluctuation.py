"""The fluctuation detector's harder cases: swings of a single sample, a 14 A sine sampled four
times a period, noise it must estimate rather than outshout, glitches, starts and stops."""
import math
import random

import numpy as np
import pytest

from evsim.detection.fluctuation import DetectorConfig, FluctuationDetector, chi2_ratio
from evsim.detection.glitches import GlitchFilter
from evsim.detection.noise import NoiseEstimator
from evsim.detection.signals import detections


def started(samples, detector=None):
    return [(t, d) for t, d in detections(samples, detector) if d.kind == "started"]


def calm_then(shape, calm_s=120, duration=120, every=1.0, sigma=0.0, uniform=0.0, seed=0,
              level=32.0):
    """``level`` A for ``calm_s`` (the detector learns the noise), then ``shape(t)``."""
    rng = random.Random(seed)
    samples = []
    for k in range(int((calm_s + duration) / every)):
        t = k * every
        amps = level if t < calm_s else shape(t - calm_s)
        amps += rng.gauss(0, sigma) if sigma else 0.0
        amps += rng.uniform(-uniform, uniform) if uniform else 0.0
        samples.append((t, max(0.0, amps)))
    return samples


def square(amplitude, period, base=32.0):
    return lambda t: base + (amplitude if int(t // (period / 2)) % 2 == 0 else 0.0)


def sine(peak_to_peak, period, mean=40.0, phase=0.0):
    return lambda t: mean + peak_to_peak / 2 * math.sin(2 * math.pi * t / period + phase)


@pytest.mark.parametrize("amplitude", [12, 14, 36])
@pytest.mark.parametrize("uniform", [0.0, 2.0])
def test_single_sample_swings_at_period_2s_fire_within_two_samples_of_the_third_swing(
        amplitude, uniform):
    """Every sample is a swing: up at 120 s, down at 121, up at 122 (the third swing)."""
    found = started(calm_then(square(amplitude, 2.0), uniform=uniform, seed=amplitude))
    assert found, "not detected"
    t, detection = found[0]
    assert 122 <= t <= 124
    assert detection.swings >= 3 and detection.period_s == pytest.approx(2.0, abs=0.5)


@pytest.mark.parametrize("uniform", [0.0, 2.0])
def test_a_14A_sine_of_period_4s_at_one_sample_a_second_fires(uniform):
    """40, 47, 40, 33, 40, ...: the turning points are single samples."""
    found = started(calm_then(sine(14, 4.0), uniform=uniform, seed=3))
    assert found
    t, detection = found[0]
    assert t < 120 + 20 and detection.period_s == pytest.approx(4.0, abs=1.0)
    assert 10 <= detection.amplitude_a <= 18


def test_the_decision_comes_two_samples_after_the_sample_that_completes_the_third_swing():
    samples = calm_then(square(20, 8.0), uniform=0.0)  # swings at 120, 124, 128
    assert started(samples)[0][0] == 130


def test_a_sine_whose_samples_swing_less_than_10A_is_no_fluctuation():
    """Sampled 45 degrees off its peaks, a 14 A sine swings 9.9 A between samples."""
    assert started(calm_then(sine(14, 4.0, phase=math.pi / 4))) == []
    assert started(calm_then(sine(8, 4.0), uniform=2.0)) == []  # an 8 A ripple with noise


@pytest.mark.parametrize("rate, hours", [(1, 24), (10, 3)])
def test_gaussian_noise_of_2A_makes_no_episode_at_1_and_10_samples_a_second(rate, hours):
    """The 1,000-hour runs are benchmarks/detection.py's; these spans still hold thousands of
    the noise's 4-sigma samples."""
    rng = np.random.default_rng(rate)
    detector = FluctuationDetector()
    step = 1 / rate
    for k, amps in enumerate((32 + rng.normal(0, 2, int(hours * 3600 * rate))).tolist()):
        assert detector.update(k * step, amps) is None, f"episode at {k * step} s"
    assert detector.noise_a == pytest.approx(2.0, rel=0.1)


def test_the_noise_is_estimated_not_assumed():
    """Until it knows, the detector assumes 2 A; a clean current lowers it to the floor, a
    noisy one is measured; and noise raises the swing bar above 10 A only when it must."""
    fresh = FluctuationDetector()
    assert fresh.noise_a == 2.0 and fresh.threshold_a == 12.0
    clean = FluctuationDetector()
    for k in range(300):
        clean.update(float(k), 32.0)
    assert clean.noise_a == DetectorConfig().noise_floor_a and clean.threshold_a == 10.0
    noisy = FluctuationDetector()
    rng = np.random.default_rng(5)
    for k, amps in enumerate((32 + rng.normal(0, 3, 3000)).tolist()):
        noisy.update(float(k), amps)
    assert noisy.noise_a == pytest.approx(3.0, rel=0.15) and noisy.threshold_a > 15


def test_a_fluctuation_does_not_raise_the_noise_estimate_that_would_hide_it():
    """A limit toggling between 32 and 63 A every 2 s from the first minute: the samples that
    move by 10 A or more never teach the noise estimate."""
    detector = FluctuationDetector()
    samples = calm_then(square(31, 4.0), calm_s=40, duration=60, uniform=2.0)
    assert started(samples, detector)
    assert detector.noise_a < 2.5


def test_noise_stretches_no_swing_out_of_an_old_turning_point():
    """The extreme of an ever longer stretch grows; a turning point older than memory_s gives
    way, so a swing needs two samples 10 A apart within seconds of each other."""
    estimator_sigma, rng = 2.0, np.random.default_rng(9)
    detector, swings = FluctuationDetector(), 0
    leg = None
    for k, amps in enumerate((32 + rng.normal(0, estimator_sigma, 36000)).tolist()):
        detector.update(float(k), amps)
        if detector._zigzag.leg is not leg:
            swings, leg = swings + 1, detector._zigzag.leg
    assert swings <= 3  # in ten hours


@pytest.mark.parametrize("seed", range(3))
def test_starts_and_stops_among_noise_never_fire(seed):
    """A start or a stop is one swing; noise must not add the two others."""
    rng = np.random.default_rng(seed)
    detector, t = FluctuationDetector(), 0.0
    for _ in range(300):
        for amps in (32 + rng.normal(0, 2, 60)).tolist() + [0.0] * 20:
            assert detector.update(t, amps) is None or detector.active is False
            t += 1
    assert not detector.active


def test_isolated_glitches_are_taken_out_but_not_a_square_wave():
    glitches = GlitchFilter()
    signal = [32, 32, 32, 60, 32, 32, 32, 10, 32, 32, 32]
    out = [glitches.push(float(k), a, height=5.0, calm=5.0) for k, a in enumerate(signal)]
    assert [round(a) for _, a in filter(None, out)] == [32] * 9
    square_wave = GlitchFilter()
    signal = [32, 32, 52, 32, 52, 32, 52, 32]
    out = [square_wave.push(float(k), a, height=5.0, calm=5.0) for k, a in enumerate(signal)]
    assert [a for _, a in filter(None, out)] == [32, 32, 52, 32, 52, 32]
    assert [a for _, a in square_wave.flush()] == [52, 32]


def test_isolated_glitches_in_noise_never_fire():
    rng = random.Random(4)
    samples, next_glitch = [], 20
    for k in range(3600):
        amps = 32 + rng.gauss(0, 2)
        if k == next_glitch:
            amps += rng.choice((-1, 1)) * rng.uniform(10, 30)
            next_glitch += rng.randint(15, 60)
        samples.append((float(k), amps))
    assert started(samples) == []


def test_an_episode_at_the_edge_of_the_noise_goes_on_while_the_current_still_swings():
    """16 A swings in 2 A noise can go a window without a counted swing; the window's variance
    keeps the episode open: one anomaly."""
    samples = calm_then(square(16, 6.0), duration=600, sigma=2.0, seed=11)
    samples += [(samples[-1][0] + 1 + k, 32.0) for k in range(60)]
    kinds = [d.kind for _, d in detections(samples)]
    assert kinds.count("started") == 1 and kinds[-1] == "ended"


def test_the_chi_square_bound_is_strict_for_few_samples():
    assert chi2_ratio(3, 5.5) > 10 > chi2_ratio(30, 5.5) > 2
    assert chi2_ratio(1000, 3.0) == pytest.approx(1 + 3 * math.sqrt(2 / 1000), rel=0.02)


def test_the_noise_estimator_ignores_ramps_and_steps():
    estimator, rng = NoiseEstimator(), np.random.default_rng(2)
    ramp = np.arange(3000) * 0.5
    steps = np.where((np.arange(3000) // 200) % 2 == 0, 0.0, 30.0)
    for amps in (ramp + steps + rng.normal(0, 1.0, 3000)).tolist():
        estimator.add(amps)
    assert estimator.sigma == pytest.approx(1.0, rel=0.12)
