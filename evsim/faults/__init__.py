"""Fault injection with ground truth: ``--inject KIND[:key=value,...]`` and ``--seed N``, the fault
models of the charger (:mod:`evsim.faults.charger`) and of the charge point
(:mod:`evsim.faults.meter`), and the :class:`~evsim.faults.labels.Label` each one makes while it
shows. No detector reads a label."""
from evsim.faults.kinds import KINDS, FaultSpec, parse_inject, parse_injections
from evsim.faults.labels import Label

__all__ = ["KINDS", "FaultSpec", "Label", "parse_inject", "parse_injections"]
