"""The SiteAnalyser, the path csms.py will feed: typed observations in, findings out, on the
charge point's sample timeline; every fault kind on a simulated site, and the normal sessions
that must raise nothing."""
from datetime import timedelta

import pytest

from evsim.detection import observations as obs
from evsim.detection.cases import FAULT_KINDS, NEGATIVES, fault_case, fluctuation_scenario_case
from evsim.detection.cases import replay as replay_run
from evsim.detection.score import score
from evsim.detection.simulate import START, Scenario, Session, simulate
from evsim.detection.site import SiteAnalyser
from evsim.detection.timeline import Timeline
from evsim.faults import parse_inject


def at(seconds: float, speed: float = 1.0):
    return START + timedelta(seconds=seconds / speed)


def sample(t, amps, received=None, tx=1, **extra):
    values = {obs.CURRENT: amps, obs.VOLTAGE: 230.0, **extra}
    return obs.MeterSample(at(t), received or at(t + 0.01), values, tx)


def started_types(findings):
    return [f.anomaly_type for f in findings if f.kind == "started"]


# -- every kind, end to end on a simulated site -------------------------------------------------

@pytest.mark.parametrize("kind", FAULT_KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_fault_kind_is_one_anomaly_of_its_type_inside_its_label(kind, seed):
    labels, anomalies = replay_run(simulate(fault_case(kind, seed)))
    assert len(labels) == 1
    assert [a["anomaly_type"] for a in anomalies] == [labels[0]["anomaly_type"]]
    result = score(labels, anomalies)[labels[0]["anomaly_type"]]
    assert (result.true_positives, result.false_positives, result.misses) == (1, 0, 0)


def test_the_central_systems_own_fluctuation_scenario_is_one_anomaly():
    labels, anomalies = replay_run(simulate(fluctuation_scenario_case(0)))
    assert [a["anomaly_type"] for a in anomalies] == ["CURRENT_FLUCTUATION"]
    assert labels[0]["source"] == "csms"


@pytest.mark.parametrize("case", NEGATIVES)
@pytest.mark.parametrize("seed", [0, 1])
def test_a_normal_session_raises_nothing(case, seed):
    assert replay_run(simulate(NEGATIVES[case](seed)))[1] == []


def test_the_same_run_at_speed_1_and_100_decides_the_same():
    """Delivery takes milliseconds of wall time, seconds of simulated time at speed 100: the
    decisions go by the samples' own timestamps."""
    found = {}
    for speed in (1.0, 100.0):
        scenario = Scenario("speeds", 300.0, [Session(5.0, 280.0)], [(0.0, 32.0)],
                            injections=[parse_inject("dropout:after=60,for=40"),
                                        parse_inject("oscillation:after=150,for=60")],
                            speed=speed, noise_a=1.0, seed=4)
        run = simulate(scenario)
        analyser = SiteAnalyser("CP_1", speed)
        origin = START.timestamp() * speed  # simulated second 0 on the timeline
        found[speed] = [(f.anomaly_type, f.kind, f.t - origin)
                        for o in run.observations for f in analyser.observe(o)]
    slow, fast = found[1.0], found[100.0]
    assert [f[:2] for f in slow] == [f[:2] for f in fast]
    assert ("ZERO_CURRENT_WHILE_CHARGING", "started") in [f[:2] for f in slow]
    assert all(abs(a[2] - b[2]) <= 1.5 for a, b in zip(slow, fast))


# -- the analyser's bookkeeping -----------------------------------------------------------------

def test_findings_carry_the_receive_time_and_the_transaction():
    analyser = SiteAnalyser("CP_1")
    analyser.observe(obs.TransactionStarted(7, at(0)))
    analyser.observe(obs.StatusChange("Charging", at(0)))
    found = []
    for t in range(1, 40):
        found += analyser.observe(sample(t, 32.0 if t < 15 else 0.0, tx=7, **{
            obs.OFFERED: 32.0}))
    zero = [f for f in found if f.anomaly_type == "ZERO_CURRENT_WHILE_CHARGING"]
    assert zero and zero[0].transaction_id == 7
    assert zero[0].received == at(zero[0].t - START.timestamp() + 0.01)
    stopped = analyser.observe(obs.TransactionStopped(7, at(40)))
    assert [(f.anomaly_type, f.kind, f.transaction_id) for f in stopped] == \
        [("ZERO_CURRENT_WHILE_CHARGING", "ended", 7)]
    assert analyser.transaction_id is None


def test_current_offered_outranks_the_limit_the_central_system_set():
    def run(offered):
        analyser = SiteAnalyser("CP_1")
        analyser.observe(obs.LimitSet(16.0, at(0)))
        analyser.observe(obs.TransactionStarted(1, at(0)))
        extra = {obs.OFFERED: 40.0} if offered else {}
        return [f for t in range(1, 60) for f in analyser.observe(sample(t, 32.0, **extra))]
    assert started_types(run(offered=False)) == ["OVER_CURRENT"]
    assert started_types(run(offered=True)) == []


def test_a_sample_with_a_transaction_opens_the_session_the_analyser_missed():
    analyser = SiteAnalyser("CP_1")
    analyser.observe(sample(0, 10.0, tx=3))
    assert analyser.in_session and analyser.transaction_id == 3


def test_close_ends_the_open_episodes():
    analyser = SiteAnalyser("CP_1")
    analyser.observe(obs.LimitSet(16.0, at(0)))
    analyser.observe(obs.TransactionStarted(1, at(0)))
    for t in range(1, 60):
        analyser.observe(sample(t, 32.0))
    closed = analyser.close(at(61))
    assert [(f.anomaly_type, f.kind) for f in closed] == [("OVER_CURRENT", "ended")]
    assert closed[0].received == at(61)
    with pytest.raises(TypeError):
        analyser.observe("not an observation")


# -- the timeline -------------------------------------------------------------------------------

def test_the_timeline_runs_through_a_clock_jump_but_not_through_a_gap():
    line = Timeline(speed=10)
    placed = [line.sample(at(k, 10), at(k + 0.05, 10)) for k in range(5)]
    assert [round(p.t - placed[0].t, 2) for p in placed] == [0, 1, 2, 3, 4]
    ahead = line.sample(at(5 + 300, 10), at(5.05, 10))  # the clock jumps 5 minutes ahead
    assert ahead.jumped and round(ahead.t - placed[0].t, 2) == 5 and ahead.offset > 290
    back = line.sample(at(6, 10), at(6.05, 10))  # and back
    assert back.jumped and round(back.t - placed[0].t, 2) == 6
    gap = line.sample(at(70, 10), at(70.05, 10))
    assert not gap.jumped and round(gap.t - placed[0].t, 2) == 70
    assert round(line.at_received(at(70.05, 10)) - gap.t, 6) == 0


def test_a_backlog_after_a_reconnection_keeps_its_timestamps():
    line = Timeline()
    burst = [line.sample(at(k), at(100 + k * 0.001)) for k in range(60)]
    assert not any(p.jumped for p in burst)
    assert [round(p.t - burst[0].t) for p in burst] == list(range(60))
