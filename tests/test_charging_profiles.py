
"""Charging profiles: what the central system builds, what the charge point accepts, the limit
in force."""
from datetime import UTC, datetime, timedelta

import pytest

from evsim.ocpp16 import profiles as cpf
from evsim.ocpp16.profiles import ProfileError, ProfileStore
from evsim.timefmt import ocpp_time

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def profile(**changes):
    data = cpf.build(1, 16, start=NOW)
    data.update(changes)
    return data


def test_built_profile_is_valid_1_6_and_parses_back():
    from ocpp.messages import Call, _validate_payload
    wire = cpf.build(7, 100, purpose="TxDefaultProfile", stack_level=2, start=NOW)
    _validate_payload(Call("1", "SetChargingProfile", {"connectorId": 1,
                                                       "csChargingProfiles": wire}), "1.6")
    parsed = cpf.parse(wire)
    assert (parsed.id, parsed.stack_level, parsed.purpose, parsed.kind, parsed.unit) == \
        (7, 2, "TxDefaultProfile", "Absolute", "A")
    assert parsed.periods == (cpf.Period(0, 100.0),) and parsed.start_schedule == NOW
    assert cpf.parse(cpf.build(1, 32, purpose="TxProfile")).kind == "Relative"


@pytest.mark.parametrize("changes, reason", [
    ({"chargingProfilePurpose": "Whatever"}, "unknown purpose"),
    ({"stackLevel": 99}, "stack level"),
    ({"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": []}}, "1 to 24"),
    ({"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": 5, "limit": 1}]}}, "start at 0"),
    ({"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": 1}, {"startPeriod": 0, "limit": 2}]}}, "increasing"),
    ({"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": -1}]}}, "negative"),
    ({"chargingSchedule": {"chargingRateUnit": "VA", "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": 1}]}}, "unit"),
    ({"chargingProfileKind": "Recurring"}, "recurrencyKind"),
    ({"transactionId": 5}, "only a TxProfile"),
    ({"chargingSchedule": None}, "malformed"),
])
def test_profiles_a_charge_point_cannot_apply(changes, reason):
    with pytest.raises(ProfileError, match=reason):
        cpf.parse(profile(**changes))


def test_limit_in_watts_is_converted_at_the_nominal_voltage():
    watts = cpf.parse(cpf.build(1, 3680, unit="W", start=NOW))
    assert watts.limit_at(NOW, voltage=230.0) == pytest.approx(16.0)


def test_schedule_periods_elapse_in_simulated_seconds():
    data = profile(chargingSchedule={"chargingRateUnit": "A", "startSchedule": ocpp_time(NOW),
                                     "duration": 100, "chargingSchedulePeriod": [
                                         {"startPeriod": 0, "limit": 10},
                                         {"startPeriod": 50, "limit": 20}]})
    parsed = cpf.parse(data)
    assert parsed.limit_at(NOW + timedelta(seconds=4), speed=10) == 10
    assert parsed.limit_at(NOW + timedelta(seconds=6), speed=10) == 20
    assert parsed.limit_at(NOW + timedelta(seconds=11), speed=10) is None
    assert parsed.limit_at(NOW - timedelta(seconds=1)) is None


def test_validity_window():
    parsed = cpf.parse(profile(validFrom=ocpp_time(NOW), validTo=ocpp_time(NOW + timedelta(hours=1))))
    assert parsed.limit_at(NOW - timedelta(seconds=1)) is None
    assert parsed.limit_at(NOW + timedelta(minutes=30)) == 16
    assert parsed.limit_at(NOW + timedelta(hours=1)) is None


def test_store_default_then_tx_default_then_tx_profile_capped_by_max():
    store = ProfileStore(32.0)
    assert store.limit(NOW) == 32.0
    store.install(1, cpf.parse(cpf.build(1, 0, start=NOW)))
    assert store.limit(NOW) == 0.0
    store.install(1, cpf.parse(cpf.build(1, 100, start=NOW)))  # same id: replaces
    assert store.limit(NOW) == 100.0 and len(store.installed) == 1
    store.install(1, cpf.parse(cpf.build(2, 40, purpose="TxProfile")), 9, transaction_running=True)
    assert store.limit(NOW, transaction_start=NOW) == 40.0
    assert store.limit(NOW) == 100.0
    store.install(0, cpf.parse(cpf.build(3, 20, purpose="ChargePointMaxProfile", start=NOW)))
    assert store.limit(NOW, transaction_start=NOW) == 20.0
    store.end_transaction()
    assert [i.profile.id for i in store.installed] == [1, 3]


def test_highest_stack_level_wins_and_same_stack_and_purpose_replaces():
    store = ProfileStore(32.0)
    store.install(1, cpf.parse(cpf.build(1, 10, stack_level=0, start=NOW)))
    store.install(1, cpf.parse(cpf.build(2, 20, stack_level=1, start=NOW)))
    assert store.limit(NOW) == 20.0
    store.install(1, cpf.parse(cpf.build(3, 5, stack_level=1, start=NOW)))
    assert store.limit(NOW) == 5.0 and {i.profile.id for i in store.installed} == {1, 3}


def test_install_rules_for_connectors_and_transactions():
    store = ProfileStore(32.0)
    tx_profile = cpf.parse(cpf.build(2, 40, purpose="TxProfile"))
    with pytest.raises(ProfileError, match="transaction in progress"):
        store.install(1, tx_profile)
    with pytest.raises(ProfileError, match="needs a connector"):
        store.install(0, tx_profile, 1, True)
    with pytest.raises(ProfileError, match="not in progress"):
        store.install(1, cpf.parse(cpf.build(2, 40, purpose="TxProfile", transaction_id=5)), 6,
                      True)
    with pytest.raises(ProfileError, match="no connector 2"):
        store.install(2, cpf.parse(cpf.build(1, 1, start=NOW)))
    with pytest.raises(ProfileError, match="connector 0"):
        store.install(1, cpf.parse(cpf.build(1, 1, purpose="ChargePointMaxProfile", start=NOW)))


def test_clear_by_id_or_by_criteria_restores_the_default():
    store = ProfileStore(32.0)
    store.install(1, cpf.parse(cpf.build(1, 10, stack_level=0, start=NOW)))
    store.install(1, cpf.parse(cpf.build(2, 20, stack_level=1, start=NOW)))
    assert store.clear(profile_id=2, purpose="TxProfile") == 1
    assert store.clear(purpose="TxProfile") == 0
    assert store.clear(connector_id=1, stack_level=0) == 1
    assert store.limit(NOW) == 32.0


def composite(store, duration, unit="A", start=None, now=NOW):
    return [(p.start_s, p.limit) for p in store.composite(now, duration, unit, start)]


def test_composite_schedule_stacks_purposes_and_levels_over_time():
    store = ProfileStore(32.0)
    default = profile(chargingSchedule={"chargingRateUnit": "A", "startSchedule": ocpp_time(NOW),
                                        "chargingSchedulePeriod": [
                                            {"startPeriod": 0, "limit": 20},
                                            {"startPeriod": 600, "limit": 10}]})
    store.install(0, cpf.parse(default))
    higher = cpf.build(2, 6, stack_level=3, start=NOW + timedelta(seconds=300))
    higher["chargingSchedule"]["duration"] = 100
    store.install(1, cpf.parse(higher))
    assert composite(store, 900) == [(0, 20.0), (300, 6.0), (400, 20.0), (600, 10.0)]
    cap = cpf.build(3, 2300, purpose="ChargePointMaxProfile", unit="W", start=NOW)
    store.install(0, cpf.parse(cap))
    assert composite(store, 900) == [(0, 10.0), (300, 6.0), (400, 10.0)]
    assert composite(store, 900, "W") == [(0, 2300.0), (300, 1380.0), (400, 2300.0)]
    store.install(1, cpf.parse(cpf.build(4, 8, purpose="TxProfile")), 1, transaction_running=True)
    assert composite(store, 900, start=NOW) == [(0, 8.0)]  # a TxProfile beats TxDefault
    assert composite(store, 0) == [(0, 10.0)]
    with pytest.raises(ProfileError, match="unit"):
        store.composite(NOW, 60, "VA")


def test_composite_schedule_validity_recurrence_and_relative_profiles():
    store = ProfileStore(32.0)
    daily = profile(chargingProfileKind="Recurring", recurrencyKind="Daily",
                    validTo=ocpp_time(NOW + timedelta(days=1, hours=12)),
                    chargingSchedule={"chargingRateUnit": "A",
                                      "startSchedule": ocpp_time(NOW - timedelta(hours=12)),
                                      "duration": 3600,
                                      "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6}]})
    store.install(1, cpf.parse(daily))  # 6 A from midnight to 01:00, every day until +36 h
    hour = 3600
    periods = composite(store, 2 * 24 * hour)
    assert periods == [(0, 32.0), (12 * hour, 6.0), (13 * hour, 32.0)]  # validTo ends day 2
    relative = ProfileStore(32.0)
    steps = cpf.build(5, 16)  # Relative: from the start of the transaction
    steps["chargingSchedule"]["chargingSchedulePeriod"].append({"startPeriod": 60, "limit": 8})
    relative.install(1, cpf.parse(steps))
    assert composite(relative, 120) == [(0, 16.0), (60, 8.0)]
    started = NOW - timedelta(seconds=30)
    assert composite(relative, 120, start=started) == [(0, 16.0), (30, 8.0)]


def test_composite_schedule_counts_simulated_seconds():
    store = ProfileStore(32.0, speed=10)
    data = cpf.build(1, 20, start=NOW)
    data["chargingSchedule"]["chargingSchedulePeriod"].append({"startPeriod": 50, "limit": 5})
    store.install(1, cpf.parse(data))
    assert composite(store, 100) == [(0, 20.0), (50, 5.0)]
    later = NOW + timedelta(seconds=2)  # 20 simulated seconds on
    assert composite(store, 100, now=later) == [(0, 20.0), (30, 5.0)]
