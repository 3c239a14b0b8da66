"""The fault kinds a process can inject, their parameters, and ``--inject KIND[:key=value,...]``.

One table says which process owns each kind, which ``anomaly_type`` the central system must record
for it, and its parameters with their defaults, so the command line, the README and the
benchmark agree. Times are simulated seconds; ``after=`` counts from the first moment the fault
can show (the charger's first start, the charge point's first transaction), ``for=`` may be
``inf``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Optional

CHARGER = "charger_module.py"
CHARGE_POINT = "cp.py"
CENTRAL_SYSTEM = "csms.py"

Check = tuple[Callable[[float], bool], str]

_NON_NEGATIVE: Check = (lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
_POSITIVE_OR_INF: Check = (lambda v: v > 0, "a number > 0 (or inf)")
_POSITIVE: Check = (lambda v: math.isfinite(v) and v > 0, "a number > 0")


def _between(low: float, high: float) -> Check:
    return (lambda v: low <= v <= high, f"a number from {low:g} to {high:g}")


def _nonzero_within(limit: float) -> Check:
    return (lambda v: v != 0 and -limit <= v <= limit, f"a non-zero number from -{limit:g} to "
                                                       f"{limit:g}")


@dataclass(frozen=True)
class Kind:
    """One injectable fault: who injects it, what the detector must call it, its parameters."""

    name: str
    process: str
    anomaly_type: str
    what: str
    defaults: Mapping[str, float]
    checks: Mapping[str, Check] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)


def _kind(name: str, process: str, anomaly_type: str, what: str, after: float, for_s: float,
          **extra: tuple[float, Check, str]) -> Kind:
    defaults = {"after": after, "for": for_s, **{key: value[0] for key, value in extra.items()}}
    checks = {"after": _NON_NEGATIVE, "for": _POSITIVE_OR_INF,
              **{key: value[1] for key, value in extra.items()}}
    units = {"after": "s", "for": "s", **{key: value[2] for key, value in extra.items()}}
    return Kind(name, process, anomaly_type, what, defaults, checks, units)


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    _kind("oscillation", CHARGER, "CURRENT_FLUCTUATION",
          "the charger's own control loop hunts while charging: its output drops by amplitude "
          "every other half period, nothing commanded", 30, 120,
          amplitude=(20.0, _between(1, 250), "A peak to peak"),
          period=(6.0, _between(2, 60), "s")),
    _kind("over-current", CHARGER, "OVER_CURRENT",
          "the current settles above the active limit (limit x factor)", 30, 120,
          factor=(1.25, _between(1.05, 4), "x limit")),
    _kind("ignore-limit", CHARGER, "PROFILE_IGNORED",
          "a lowered limit (0x210) is not followed; a raised one is", 0, math.inf),
    _kind("dropout", CHARGER, "ZERO_CURRENT_WHILE_CHARGING",
          "the current falls to 0 A while the connector stays Charging", 30, 30),
    _kind("meter-freeze", CHARGE_POINT, "METER_FREEZE",
          "the energy register stops while current flows", 30, 60),
    _kind("meter-backwards", CHARGE_POINT, "ENERGY_REGISTER_DECREASE",
          "the energy register steps down by step Wh every every s", 30, 30,
          step=(50.0, _POSITIVE, "Wh"), every=(10.0, _POSITIVE, "s")),
    _kind("energy-drift", CHARGE_POINT, "ENERGY_MISMATCH",
          "the register grows percent % faster (negative: slower) than the energy delivered",
          30, 300, percent=(20.0, _nonzero_within(90), "%")),
    _kind("clock-skew", CHARGE_POINT, "TIMESTAMP_SKEW",
          "sample timestamps run minutes ahead (negative: behind) of the central system", 30, 120,
          minutes=(5.0, _nonzero_within(1440), "simulated min")),
    _kind("meter-gap", CHARGE_POINT, "METER_VALUE_GAP",
          "MeterValues stop during the transaction", 30, 60),
    _kind("status-flap", CHARGE_POINT, "STATUS_FLAPPING",
          "the connector flips Charging/SuspendedEVSE/Faulted every every s", 30, 60,
          every=(4.0, _between(0.5, 600), "s")),
)}

#: What the central system's own scenario labels (not an --inject kind).
SCENARIO_FLUCTUATION = ("fluctuation", CENTRAL_SYSTEM, "CURRENT_FLUCTUATION")


@dataclass(frozen=True)
class FaultSpec:
    """One parsed ``--inject``: its kind and every parameter (defaults filled in)."""

    kind: str
    params: Mapping[str, float]

    @property
    def info(self) -> Kind:
        return KINDS[self.kind]

    @property
    def anomaly_type(self) -> str:
        return KINDS[self.kind].anomaly_type

    @property
    def after(self) -> float:
        return self.params["after"]

    @property
    def duration(self) -> float:
        return self.params["for"]

    def __str__(self) -> str:
        return f"{self.kind}:" + ",".join(f"{k}={v:g}" for k, v in self.params.items())


def parse_inject(text: str, process: Optional[str] = None) -> FaultSpec:
    """``KIND[:key=value,...]`` -> :class:`FaultSpec`; ValueError with a one-line message that
    lists what is valid (the CLI turns it into exit 2)."""
    name, _, rest = text.strip().partition(":")
    kind = KINDS.get(name.strip())
    if kind is None:
        valid = _kinds_of(process)
        raise ValueError(f"unknown fault kind {name.strip()!r}: valid kinds are {valid}")
    if process is not None and kind.process != process:
        raise ValueError(f"{kind.name} is injected by {kind.process}, not {process} "
                         f"(valid here: {_kinds_of(process)})")
    params = dict(kind.defaults)
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, raw = (part.strip() for part in item.partition("="))
        if key not in kind.defaults or not equals:
            raise ValueError(f"bad parameter {item!r} for {kind.name}: valid are "
                             f"{_keys_of(kind)}")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        accept, wanted = kind.checks[key]
        if math.isnan(value) or not accept(value):
            raise ValueError(f"bad value {raw!r} for {kind.name} {key}: must be {wanted} "
                             f"(valid parameters: {_keys_of(kind)})")
        params[key] = value
    return FaultSpec(kind.name, params)


def parse_injections(texts: Iterable[str], process: Optional[str] = None) -> list[FaultSpec]:
    """Every ``--inject`` of a command line (the option is repeatable)."""
    return [parse_inject(text, process) for text in texts or ()]


def _kinds_of(process: Optional[str]) -> str:
    return ", ".join(name for name, kind in KINDS.items()
                     if process is None or kind.process == process)


def _keys_of(kind: Kind) -> str:
    return ", ".join(f"{key}=<{kind.units.get(key, '')}> (default {value:g})"
                     for key, value in kind.defaults.items())


def inject_help(process: str) -> str:
    """The ``--inject`` help text of a process: its kinds and their parameters."""
    kinds = [kind for kind in KINDS.values() if kind.process == process]
    return ("inject a fault, repeatable: " + "; ".join(
        f"{kind.name}[:{','.join(f'{k}={v:g}' for k, v in kind.defaults.items())}]"
        for kind in kinds) + " (times in simulated seconds)")


def main(argv: Optional[Iterable[str]] = None) -> int:
    """``--owner KIND[:key=value,...]``: print the process that injects it (for run_all.sh), or
    the one-line error of a bad kind or parameter on stderr and exit 2."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "--owner":
        print("usage: python -m evsim.faults.kinds --owner KIND[:key=value,...]",
              file=sys.stderr)
        return 2
    try:
        print(parse_inject(args[1]).info.process)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
