"""A small fleet end to end: cp.py --count 20 against csms.py --scenario-mix, real processes on
loopback; every charge point's sessions, the assignment, the ground truth and the anomalies are
checked in the MemoryBank, and the score read back. The fleet records its state only
(``--record state``): the central system records the traffic."""
from __future__ import annotations

from collections import Counter

from conftest import free_port, port_open, script, start, stop, wait_for
from test_e2e_anomalies import score_of

from evsim.bank import MemoryBank
from evsim.cp.fleet import fleet_ids
from evsim.csms.mix import parse_mix

COUNT, CYCLES, SEED, MIX = 20, 6, 5, "fluctuation=0.3,normal=0.7"
SPEED = "10"


def completed(db_path) -> int:
    """How many charge points' scenarios are complete."""
    try:
        with MemoryBank(db_path, readonly=True) as bank:
            return sum(e["description"] == "scenario complete" for e in
                       bank.get_recent_events(None, {"event_type": "SCENARIO_STEP"}))
    except Exception:  # noqa: BLE001 - the file or its tables not there yet
        return 0


def test_a_fleet_with_a_mix_runs_its_scenarios_and_only_the_fluctuating_ones_are_anomalies(
        db_path):
    expected = {i: parse_mix(MIX, SEED).scenario_of(i) for i in fleet_ids("CP_", COUNT)}
    fluctuating = {i for i, scenario in expected.items() if scenario == "fluctuation"}
    assert 0 < len(fluctuating) < COUNT  # the seed gives a real mix
    port = free_port()
    common = ("--speed", SPEED, "--db", str(db_path), "--log-level", "WARNING")  # a pipe holds 64 kB
    csms = start(script("csms.py", "--port", str(port), "--api-port", "0", "--scenario-mix", MIX,
                        "--seed", str(SEED), "--cycles", str(CYCLES), *common))
    cp = None
    try:
        wait_for(lambda: port_open(port) or csms.poll() is not None, message="csms")
        cp = start(script("cp.py", "--count", str(COUNT), "--stagger", "0.1", "--record", "state",
                          "--url", f"ws://127.0.0.1:{port}", *common))
        wait_for(lambda: completed(db_path) == COUNT, timeout=120,
                 message="every charge point's scenario complete")
    finally:
        results = [stop(proc, timeout=30) for proc in (cp, csms) if proc is not None]
    assert [code for code, _ in results] == [0, 0], results
    assert not any("Traceback" in out for _, out in results)

    with MemoryBank(db_path, readonly=True) as bank:
        assigned = {e["charge_point_id"]: e["data"]["scenario"] for e in
                    bank.get_recent_events(None, {"event_type": "SCENARIO_ASSIGNED"})}
        labels = bank.get_labels()
        anomalies = bank.get_anomalies(None)
        sessions = bank.get_sessions(None)
        recorded = bank.connection.read(lambda conn: conn.execute(
            "SELECT (SELECT count(*) FROM events WHERE source = 'cp' AND "
            "event_type = 'OCPP_MESSAGE'), (SELECT count(*) FROM metrics WHERE source = 'cp'), "
            "(SELECT count(DISTINCT charge_point_id) FROM events WHERE source = 'cp' AND "
            "event_type = 'STATUS'), (SELECT count(DISTINCT charge_point_id) FROM metrics "
            "WHERE source = 'csms')").fetchone())
    assert recorded == (0, 0, COUNT, COUNT)  # no traffic of its own, its state, theirs
    assert assigned == expected
    assert all(session["end_time"] for session in sessions)  # none left open
    count = Counter(session["charge_point_id"] for session in sessions)
    assert all(count[i] == 1 for i in expected if i not in fluctuating)
    # a remote start may lose its race with the stop 2 simulated seconds later at --speed
    assert all(CYCLES - 2 <= count[i] <= CYCLES for i in fluctuating)
    assert {(la["charge_point_id"], la["anomaly_type"], la["seed"], la["source"])
            for la in labels} == {(i, "CURRENT_FLUCTUATION", SEED, "csms") for i in fluctuating}
    assert {a["charge_point_id"] for a in anomalies} == fluctuating
    assert {a["anomaly_type"] for a in anomalies} == {"CURRENT_FLUCTUATION"}

    row = score_of(db_path, "CURRENT_FLUCTUATION")
    assert (row["true_positives"], row["false_positives"], row["misses"]) == \
        (len(fluctuating), 0, 0)
