"""csms.py --scenario-mix: a scenario per charge point from its id and the seed alone."""
from __future__ import annotations

import subprocess
from collections import Counter

import pytest
from conftest import script

from evsim.cp.fleet import fleet_ids
from evsim.csms.mix import ScenarioMix, parse_mix


def test_a_mix_is_scaled_to_shares_in_the_order_given():
    mix = parse_mix("fluctuation=1, normal=3", seed=7)
    assert mix == ScenarioMix((("fluctuation", 0.25), ("normal", 0.75)), 7)
    assert str(mix) == "fluctuation=0.25,normal=0.75"


def test_the_assignment_depends_on_the_id_and_the_seed_only():
    mix = parse_mix("fluctuation=0.1,normal=0.9", seed=3)
    ids = fleet_ids("CP_", 2000)
    assigned = [mix.scenario_of(i) for i in ids]
    assert assigned == [mix.scenario_of(i) for i in reversed(ids)][::-1]  # any order
    shares = Counter(assigned)
    assert 150 <= shares["fluctuation"] <= 250 and shares.keys() == {"fluctuation", "normal"}
    other_seed = parse_mix("fluctuation=0.1,normal=0.9", seed=4)
    assert [other_seed.scenario_of(i) for i in ids] != assigned
    assert {parse_mix("normal=1,fluctuation=0").scenario_of(i) for i in ids} == {"normal"}


@pytest.mark.parametrize("text, error", [
    ("teleport=1", "unknown scenario 'teleport' in the mix; valid: fluctuation, normal, none"),
    ("normal=lots", "normal=lots: the weight must be a number"),
    ("normal=-1", "normal=-1: the weight must be 0 or more"),
    ("normal=0,none=0", "the mix needs a weight above 0"),
    ("normal=1,normal=2", "normal is twice in the mix"),
])
def test_a_bad_mix_is_one_line_naming_what_is_valid(text, error):
    with pytest.raises(ValueError) as caught:
        parse_mix(text)
    assert str(caught.value).startswith(error)


@pytest.mark.parametrize("args, error", [
    (["--scenario-mix", "normal=x"], "--scenario-mix: normal=x: the weight must be a number"),
    (["--scenario", "normal", "--scenario-mix", "normal=1"], "not allowed with argument"),
    (["--seed", "3"], "--seed is the seed of --scenario-mix, which is not given"),
])
def test_csms_py_refuses_a_bad_mix_with_exit_2(args, error, tmp_path):
    done = subprocess.run(script("csms.py", "--port", "0", "--db", str(tmp_path / "m.db"), *args),
                          capture_output=True, text=True, timeout=60)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and last.startswith("csms.py: error:") and error in last
    assert not (tmp_path / "m.db").exists()
