"""The charge point's energy register: current x voltage integrated over simulated time.

Pure: the caller passes the simulated time of every sample, so ``--speed 10`` integrates the same
Wh as ``--speed 1``.
"""
from __future__ import annotations


class EnergyMeter:
    """A cumulative Wh register fed with (simulated seconds, amps) samples.

    Each interval is integrated at the current of its first sample (the charger holds its
    current until the next frame). An interval longer than ``max_gap_s`` is not integrated:
    while the charger was silent nothing is known about the energy delivered.
    """

    def __init__(self, voltage: float, energy_wh: float = 0.0,
                 max_gap_s: float | None = None) -> None:
        if not voltage > 0:
            raise ValueError(f"voltage must be positive, got {voltage}")
        self.voltage = voltage
        self.energy_wh = energy_wh
        self.max_gap_s = max_gap_s
        self.amps: float | None = None
        self._last_t: float | None = None

    def update(self, t: float, amps: float) -> float:
        """Take a sample at simulated time ``t`` (s); returns the register (Wh)."""
        if self._last_t is not None and self.amps is not None:
            dt = t - self._last_t
            if dt > 0 and (self.max_gap_s is None or dt <= self.max_gap_s):
                self.energy_wh += self.amps * self.voltage * dt / 3600.0
        if self._last_t is None or t >= self._last_t:
            self._last_t = t
        self.amps = amps
        return self.energy_wh

    @property
    def register_wh(self) -> int:
        """The register as OCPP's meterStart/meterStop carry it: whole Wh."""
        return int(self.energy_wh)
