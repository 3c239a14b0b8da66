"""The fluctuation detector on synthetic signals shaped by the real charger ramp."""
import asyncio
import math
import random

import pytest

from evsim.bank import MemoryBank
from evsim.canbus import frames
from evsim.charger.model import Charger
from evsim.charger.node import ChargerNode
from evsim.clock import FakeClock
from evsim.detection import fluctuation
from evsim.detection.fluctuation import DetectorConfig, FluctuationDetector
from evsim.detection.patterns import match_pattern, merge_pattern
from evsim.detection.signals import (
    SEED_CYCLE_S,
    SEED_FIRST_SWING_S,
    charger_signal,
    detections,
    seed_commands,
    sine,
    steady,
    waveform,
)

TWO_CYCLES_END = 2 * SEED_CYCLE_S

# How the seed's current reaches the csms: the charger ticks every `period` s; the charge point
# reports it every 1 s (at some phase) or, at the 0x300 rate, every frame.
SITE_SHAPES = {
    "charger 1 s, sampled 1 s": dict(period=1.0),
    "charger 1 s, sampled 1 s half a second late": dict(period=1.0, offset=0.5),
    "charger 0.1 s, sampled 1 s": dict(period=0.1, offset=0.3),
    "charger 0.1 s, every 0x300 frame": dict(period=0.1, sample_every=None),
    "charger 0.1 s ramping 20 % per tick, sampled 1 s": dict(period=0.1, ramp_per_tick=0.2),
    "+/-2 A noise": dict(period=1.0, noise=2.0, seed=7),
}


def kinds(found):
    return [detection.kind for _, detection in found]


@pytest.mark.parametrize("shape", SITE_SHAPES.values(), ids=SITE_SHAPES.keys())
def test_seed_scenario_fires_within_its_first_two_cycles(shape):
    found = detections(charger_signal(seed_commands(2), TWO_CYCLES_END, **shape))
    assert kinds(found)[:1] == ["started"] and "ended" not in kinds(found)
    t, detection = found[0]
    assert SEED_FIRST_SWING_S < t < TWO_CYCLES_END
    assert detection.swings == 3
    assert detection.period_s == pytest.approx(SEED_CYCLE_S, abs=1.0)
    assert detection.amplitude_a > 25 and detection.severity in ("MEDIUM", "HIGH", "CRITICAL")
    assert 0 < detection.expected_a < detection.amplitude_a
    assert detection.deviation_a > 10 and "3 swings" in detection.description


def test_the_seed_signal_has_the_realistic_ramp_not_a_square_wave():
    samples = charger_signal(seed_commands(2), TWO_CYCLES_END)
    assert [round(a, 1) for t, a in samples if 3 <= t <= 7] == [20.0, 36.0, 28.8, 23.0, 18.4]
    detection = detections(samples)[0][1]
    assert (detection.amplitude_a, detection.severity) == (36.0, "MEDIUM")


@pytest.mark.parametrize("sample_every, period", [(1.0, 1.0), (None, 0.1)])
@pytest.mark.parametrize("level", [6, 32, 80])
def test_steady_session_with_2_amp_noise_never_fires(level, sample_every, period):
    samples = steady(level, 600, period=period, sample_every=sample_every, noise=2.0, seed=level)
    detector = FluctuationDetector()
    assert detections(samples, detector) == []
    assert detector.swings <= 1 and not detector.active


@pytest.mark.parametrize("commands", [
    [(0.0, "limit", 32.0), (1.0, "start", None)],
    [(0.0, "limit", 100.0), (0.0, "start", None), (30.0, "stop", None)],
    [(0.0, "limit", 100.0), (1.0, "start", None), (6.0, "stop", None)],
    [(0.0, "limit", 63.0), (0.0, "start", None), (30.0, "limit", 16.0)],
], ids=["start", "stop", "start then stop", "one limit step"])
def test_a_single_start_or_stop_never_fires(commands):
    samples = charger_signal(commands, 90, noise=2.0)
    detector = FluctuationDetector()
    assert detections(samples, detector) == []
    assert detector.swings <= 2


@pytest.mark.parametrize("ramp_s", [30.0, 120.0])
def test_a_slow_ramp_never_fires(ramp_s):
    up_and_down = lambda t: 80 * min(1.0, t / ramp_s, max(0.0, (3 * ramp_s - t) / ramp_s))
    assert detections(waveform(up_and_down, 3 * ramp_s, noise=2.0)) == []


def test_a_slow_oscillation_is_not_a_fluctuation_but_a_fast_one_is():
    assert detections(waveform(sine(32, 30, 60.0), 300)) == []
    assert kinds(detections(waveform(sine(32, 30, 6.0), 30)))[:1] == ["started"]


def test_an_episode_is_one_anomaly_escalated_then_ended_after_calm():
    fluctuating = charger_signal(seed_commands(10), 10 * SEED_CYCLE_S)
    end = fluctuating[-1][0]
    calm = [(end + 1 + k, 0.0) for k in range(60)]
    detector = FluctuationDetector()
    found = detections(fluctuating + calm, detector)
    assert kinds(found) == ["started", "escalated", "escalated", "ended"]
    severities = [detection.severity for _, detection in found]
    assert severities == ["MEDIUM", "HIGH", "CRITICAL", "CRITICAL"]
    ended_at, ended = found[-1]
    assert ended.swings >= 19 and ended.started_at == found[0][1].started_at
    # a window without swings, once the tail of the last ramp has settled to noise
    assert end < ended_at <= end + 1 + DetectorConfig().window_s + 5
    assert not detector.active
    again = [(t + calm[-1][0] + 1, a) for t, a in fluctuating[:int(2 * SEED_CYCLE_S)]]
    assert kinds(detections(again, detector)) == ["started"]


def test_severity_grows_with_the_size_of_the_swings():
    def first(peak_to_peak):
        return detections(waveform(sine(60, peak_to_peak, 8.0), 20))[0][1]
    small, large = first(15), first(150)
    assert (small.severity, large.severity) == ("LOW", "CRITICAL")
    assert large.amplitude_a > 6 * small.amplitude_a > 0


def test_steady_session_with_gaussian_noise_of_2_amps_for_hours_never_fires():
    """Outliers of 8 A (4 sigma) come every hour or so; alone, one is not a swing."""
    clean = steady(32, 3600)
    for hour in range(20):
        rng = random.Random(hour)
        assert detections([(t, a + rng.gauss(0, 2.0)) for t, a in clean]) == [], f"hour {hour}"


def test_single_outliers_are_not_swings_but_two_samples_in_a_row_are():
    def with_spikes(width):
        return [(t, 47.0 if t % 5 < width else 32.0) for t in range(60)]
    assert detections(steady(32, 60) + [(60 + t, a) for t, a in with_spikes(1)]) == []
    assert kinds(detections(with_spikes(2)))[:1] == ["started"]


JITTER_S = 0.003


async def site_on_a_fake_clock(speed: float, duration_s: float, seed: int) -> list:
    """What the csms feeds the detector at ``speed``: the charger node ticking on its period,
    the seed's commands on deadlines of their own half a period out of phase, every 0x300
    stamped with the clock's simulated time plus a few ms of wall-clock jitter (x speed)."""
    clock, rng, samples = FakeClock(speed), random.Random(seed), []

    class Csms:
        """The charger's link, seen from the csms that stamps what arrives."""

        async def send(self, msg) -> None:
            jitter = rng.uniform(-JITTER_S, JITTER_S) * speed
            samples.append((clock.sim() + jitter, frames.decode(msg).amps))

    node = ChargerNode(Charger(), clock, period_s=1.0)

    async def scenario() -> None:
        begin = clock.sim() + 0.5
        for t, action, amps in seed_commands(int(duration_s // SEED_CYCLE_S)):
            await clock.sleep(begin + t - clock.sim())
            msg = frames.set_limit(amps) if action == "limit" else getattr(frames, action)()
            node.on_frame(frames.decode(msg))

    tasks = [asyncio.create_task(node.publish(Csms())), asyncio.create_task(scenario())]
    await clock.advance(duration_s)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return samples


async def test_same_decisions_at_two_speeds_ten_times_apart():
    """The charger node and the scenario on one clock at speeds 2 and 20: the detector decides
    from the samples' simulated stamps, so the decisions agree within the jitter."""
    slow, fast = [detections(await site_on_a_fake_clock(speed, 2 * SEED_CYCLE_S, int(speed)))
                  for speed in (2.0, 20.0)]
    assert kinds(slow) == kinds(fast) == ["started"]
    for (t_slow, at_slow), (t_fast, at_fast) in zip(slow, fast):
        assert at_slow.swings == at_fast.swings == 3
        assert at_slow.severity == at_fast.severity
        assert at_slow.period_s == pytest.approx(at_fast.period_s, abs=0.3)
        assert at_slow.period_s == pytest.approx(SEED_CYCLE_S, abs=0.5)
        assert at_slow.amplitude_a == pytest.approx(at_fast.amplitude_a, abs=1.0)
        assert t_slow == pytest.approx(t_fast, abs=0.5)


def test_close_ends_an_open_episode_and_bad_samples_are_ignored():
    detector = FluctuationDetector()
    samples = charger_signal(seed_commands(2), TWO_CYCLES_END)
    assert kinds(detections(samples, detector)) == ["started"]
    last = samples[-1][0]
    assert detector.update(last + 1, math.nan) is None
    assert detector.update(last - 5, 500.0) is None
    assert detector.active and detector.swings == 4
    ended = detector.close(last + 1)
    assert ended.kind == "ended" and ended.swings == 4 and not detector.active
    assert detector.close(last + 2) is None


@pytest.mark.parametrize("bad", [dict(min_swing_a=0), dict(min_swings=1), dict(window_s=-1),
                                 dict(severity_scores=(5.0, 2.0, 10.0))])
def test_config_refuses_nonsense(bad):
    with pytest.raises(ValueError):
        DetectorConfig(**bad)


def started(samples):
    return next(d for _, d in detections(samples) if d.kind == "started")


def learn(bank, detection):
    """What the recorder (csms.py) does once per episode."""
    pattern = match_pattern(bank.get_patterns(), detection)
    bank.learn_pattern(*merge_pattern(pattern, detection))
    return pattern


def test_a_pattern_is_recognised_again_in_a_later_episode_across_restarts(db_path):
    first = started(charger_signal(seed_commands(3), 24, noise=2.0, seed=1))
    second = started(charger_signal(seed_commands(3), 24, period=0.1, offset=0.6, seed=2))
    other = started(waveform(sine(60, 100, 3.0), 20))

    with MemoryBank(db_path) as bank:
        assert learn(bank, first) is None
    with MemoryBank(db_path) as bank:
        known = learn(bank, second)
        assert known is not None and known["name"].startswith("current_fluctuation_8s_")
        assert learn(bank, other) is None
        patterns = {p["name"]: p for p in bank.get_patterns()}

    assert len(patterns) == 2
    seed_pattern = patterns[known["name"]]
    assert seed_pattern["occurrences"] == 2
    period, amplitude = (seed_pattern["parameters"][key] for key in ("period_s", "amplitude_a"))
    assert period["n"] == amplitude["n"] == 2
    assert period["mean"] == pytest.approx((first.period_s + second.period_s) / 2, abs=0.01)
    assert amplitude["min"] == min(first.amplitude_a, second.amplitude_a)
    assert 0.5 < seed_pattern["confidence"] < 2 / 3 + 0.001
    assert known["confidence"] == 0.5


def test_match_pattern_skips_other_and_malformed_patterns():
    detection = started(charger_signal(seed_commands(3), 24))
    name, parameters, _ = merge_pattern(None, detection)
    patterns = [{"name": "daily_peak", "parameters": parameters},
                {"name": "current_fluctuation_x", "parameters": {"period_s": "?"}},
                {"name": "current_fluctuation_far",
                 "parameters": {**parameters, "amplitude_a": {"n": 1, "mean": 90.0}}},
                {"name": name, "parameters": parameters}]
    assert match_pattern(patterns, detection)["name"] == name
    assert match_pattern(patterns[:3], detection) is None


def test_the_pattern_functions_are_still_reachable_from_the_detector_module():
    """csms.py imports them as detector.match_pattern / detector.merge_pattern."""
    assert fluctuation.match_pattern is match_pattern
    assert fluctuation.merge_pattern is merge_pattern
    with pytest.raises(AttributeError):
        fluctuation.no_such_name  # noqa: B018
