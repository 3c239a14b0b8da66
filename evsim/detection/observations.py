"""What the central system tells a :class:`~evsim.detection.site.SiteAnalyser`, and what it gets
back.

Observations are typed and carry their own times: ``timestamp`` as the charge point stamped the
message (None when it sent none) and ``received`` as the central system's clock had it, both
wall-clock datetimes; the analyser turns them into simulated seconds with the run's speed. A
:class:`Finding` is one step of an anomaly episode: the central system records an anomaly when
one ``started`` and updates it on ``escalated`` and ``ended``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional, Union

#: The measurands the analyser reads from a sample (OCPP 1.6 names, SI units: A, V, W, Wh).
CURRENT = "Current.Import"
OFFERED = "Current.Offered"
VOLTAGE = "Voltage"
POWER = "Power.Active.Import"
ENERGY = "Energy.Active.Import.Register"

#: The anomaly types, one per detector.
ANOMALY_TYPES = ("CURRENT_FLUCTUATION", "OVER_CURRENT", "PROFILE_IGNORED",
                 "ZERO_CURRENT_WHILE_CHARGING", "METER_FREEZE", "ENERGY_REGISTER_DECREASE",
                 "ENERGY_MISMATCH", "TIMESTAMP_SKEW", "METER_VALUE_GAP", "STATUS_FLAPPING")


@dataclass(frozen=True)
class MeterSample:
    """One sampled MeterValue: its measurands (main phase, in A, V, W, Wh), kilo units already
    scaled."""

    timestamp: datetime
    received: datetime
    measurands: Mapping[str, float]
    transaction_id: Optional[int] = None


@dataclass(frozen=True)
class StatusChange:
    """A StatusNotification of the connector."""

    status: str
    received: datetime
    timestamp: Optional[datetime] = None


@dataclass(frozen=True)
class TransactionStarted:
    transaction_id: Optional[int]
    received: datetime
    timestamp: Optional[datetime] = None
    meter_start_wh: Optional[float] = None


@dataclass(frozen=True)
class TransactionStopped:
    transaction_id: Optional[int]
    received: datetime
    timestamp: Optional[datetime] = None
    meter_stop_wh: Optional[float] = None


@dataclass(frozen=True)
class LimitSet:
    """The central system set the composite limit of the connector to ``amps`` (None: no limit
    any more) at ``received`` (its own clock: when it sent the profile)."""

    amps: Optional[float]
    received: datetime


Observation = Union[MeterSample, StatusChange, TransactionStarted, TransactionStopped, LimitSet]


@dataclass(frozen=True)
class Finding:
    """One step of an anomaly episode.

    ``t`` is the simulated time on the charge point's sample timeline at which it was decided;
    ``received`` the central system's receive time of the observation that decided it (record
    the anomaly at that time); ``values`` holds what the anomaly row can carry
    (``current_value``, ``expected_value``, ``deviation``) and the detector's own figures.
    """

    anomaly_type: str
    kind: str
    severity: str
    description: str
    t: float
    values: Mapping[str, Any] = field(default_factory=dict)
    received: Optional[datetime] = None
    transaction_id: Optional[int] = None
    detection: Any = None  # the fluctuation detector's Detection, for pattern learning
