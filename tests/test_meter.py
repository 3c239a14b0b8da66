"""The energy register: integration in simulated time, and what it refuses to integrate."""
import pytest

from evsim.cp.meter import EnergyMeter


def test_integrates_amps_times_volts_over_simulated_seconds():
    meter = EnergyMeter(230.0)
    meter.update(0.0, 10.0)
    assert meter.update(3600.0, 10.0) == pytest.approx(2300.0)
    assert meter.register_wh == 2300


def test_same_energy_whatever_the_sample_spacing():
    coarse, fine = EnergyMeter(230.0), EnergyMeter(230.0)
    for t in range(0, 61, 10):
        coarse.update(float(t), 32.0)
    for t in range(0, 601):
        fine.update(t / 10, 32.0)
    assert coarse.energy_wh == pytest.approx(fine.energy_wh) == pytest.approx(32 * 230 * 60 / 3600)


def test_each_interval_at_the_current_of_its_first_sample():
    meter = EnergyMeter(100.0)
    meter.update(0.0, 0.0)
    meter.update(36.0, 100.0)
    assert meter.energy_wh == 0.0
    assert meter.update(72.0, 0.0) == pytest.approx(100.0)


def test_a_silent_gap_is_not_integrated_nor_a_sample_from_the_past():
    meter = EnergyMeter(230.0, max_gap_s=3.0)
    meter.update(0.0, 10.0)
    meter.update(100.0, 10.0)
    assert meter.energy_wh == 0.0
    meter.update(50.0, 10.0)
    assert meter.energy_wh == 0.0
    meter.update(101.0, 10.0)
    assert meter.energy_wh == pytest.approx(230 * 10 / 3600)


def test_rejects_a_voltage_that_is_not_positive():
    with pytest.raises(ValueError):
        EnergyMeter(0.0)
