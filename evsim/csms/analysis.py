"""The central system's analysis of one charge point: a
:class:`~evsim.detection.site.SiteAnalyser` fed from what crosses OCPP, and the anomalies it
finds recorded in the MemoryBank.

What any OCPP 1.6J charge point sends feeds it: every MeterValues entry of the analysed
connector (its own timestamp, the receive time from the injected clock, its measurands with
``Current.Offered`` when reported), its StatusNotifications, Start/StopTransaction. What the
central system itself sent feeds it too: whenever a charging profile it set or cleared was
Accepted (SetChargingProfile, ClearChargingProfile, a RemoteStartTransaction with a TxProfile),
the composite limit in A of the profiles it knows the charge point has (:mod:`evsim.ocpp16.
profiles`), as a :class:`~evsim.detection.observations.LimitSet`; a schedule whose period
changes is seen at the next sample. The analyser decides in simulated seconds from the samples'
own timestamps (speed from the clock), so a loaded central system decides late, never
differently (ARCHITECTURE.md, "Time").

Each finding becomes one anomaly row per episode: recorded when it ``started`` (at the receive
time of what decided it), updated when it ``escalated`` or ``ended``. A CURRENT_FLUCTUATION
names the known pattern it looks like and is learned as a pattern when it ends
(:mod:`evsim.detection.patterns`).

Memory is bounded per charge point whatever it sends: samples closer than
:data:`MIN_SAMPLE_SPACING_S` on its sample timeline are not analysed (the detectors keep
windows of simulated time, so this bounds what they hold), status changes are analysed at most
:data:`STATUS_PER_S` a simulated second after a burst of :data:`STATUS_BURST`, and at most
:data:`~evsim.ocpp16.profiles.MAX_PROFILES` profiles are known.
"""
from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Optional

from ocpp.charge_point import camel_to_snake_case

from evsim.clock import Clock
from evsim.constants import CONNECTOR_ID
from evsim.csms.recording import Writer, meter_samples
from evsim.detection import fluctuation, patterns
from evsim.detection.observations import (
    Finding,
    LimitSet,
    MeterSample,
    Observation,
    StatusChange,
    TransactionStarted,
    TransactionStopped,
)
from evsim.detection.site import Detectors, SiteAnalyser
from evsim.ocpp16 import profiles
from evsim.timefmt import parse_ocpp_time

log = logging.getLogger("csms")

#: The connector analysed (the simulator's charge points have one; a third party's others are
#: not, so that two connectors' samples never mix on one timeline).
ANALYSED_CONNECTOR = CONNECTOR_ID
#: Simulated seconds: a sample closer than this to the last one analysed is not analysed
#: (20 a simulated second; the detectors are made for up to 10).
MIN_SAMPLE_SPACING_S = 0.05
#: Status changes analysed at once, then this many per simulated second.
STATUS_BURST = 60
STATUS_PER_S = 2.0
#: The anomaly row's own columns; a finding's other figures go into ``pattern``.
ROW_VALUES = ("current_value", "expected_value", "deviation")
#: The actions whose Accepted answer changes the profiles the charge point has.
PROFILE_ACTIONS = ("SetChargingProfile", "ClearChargingProfile", "RemoteStartTransaction")


class ChargePointAnalysis:
    """One charge point's analysis across its connections; ``writer`` records what it finds
    (None: nothing recorded), every time is read from ``clock``.

    Each method takes one thing that crossed OCPP and returns the findings it caused (already
    handed to the writer), oldest first.
    """

    def __init__(self, charge_point_id: str, writer: Optional[Writer], clock: Clock,
                 detectors: Optional[Detectors] = None) -> None:
        self.charge_point_id = charge_point_id
        self.writer = writer
        self.clock = clock
        self.site = SiteAnalyser(charge_point_id, clock.speed, detectors)
        self.profiles = profiles.ProfileStore(math.inf, speed=clock.speed)
        self.samples = 0  # analysed
        self.dropped = 0  # too close to the one before
        self.closed = False
        self._last_t: Optional[float] = None
        self._limit: Optional[float] = None
        self._transaction_id: Optional[int] = None
        self._transaction_start: Optional[datetime] = None
        self._tokens = float(STATUS_BURST)
        self._tokens_at: Optional[float] = None
        self._open: dict[str, int] = {}  # anomaly type -> row of its open episode (writer thread)

    # -- what the charge point sends --------------------------------------------------------------

    def meter_values(self, connector_id: int, meter_value: list,
                     transaction_id: Optional[int]) -> list[Finding]:
        """A MeterValues (snake_case keys, as the ocpp library hands it over)."""
        if connector_id != ANALYSED_CONNECTOR:
            return []
        found: list[Finding] = []
        for sample in meter_samples(meter_value, self.clock.now(), transaction_id):
            found += self.sample(sample)
        return found

    def sample(self, sample: MeterSample) -> list[Finding]:
        """One sample; not analysed if it lies too close to the last one on the timeline."""
        if self.closed:
            return []
        placed = copy.copy(self.site.timeline).sample(sample.timestamp, sample.received)
        if self._last_t is not None and placed.t - self._last_t < MIN_SAMPLE_SPACING_S:
            self.dropped += 1
            return []
        self._last_t = placed.t
        self.samples += 1
        return self._limit_now(sample.received) + self._observe(sample)

    def status(self, connector_id: int, status: str,
               timestamp: Optional[str] = None) -> list[Finding]:
        """A StatusNotification (``timestamp`` as sent, if it was)."""
        if connector_id != ANALYSED_CONNECTOR or self.closed or not self._status_allowed():
            return []
        return self._observe(StatusChange(status, self.clock.now(), _time(timestamp)))

    def transaction_started(self, connector_id: int, transaction_id: int, timestamp: str,
                            meter_start_wh: Optional[float] = None) -> list[Finding]:
        if connector_id != ANALYSED_CONNECTOR or self.closed:
            return []
        received = self.clock.now()
        self._transaction_id, self._transaction_start = transaction_id, received
        found = self._observe(TransactionStarted(transaction_id, received, _time(timestamp),
                                                 meter_start_wh))
        return found + self._limit_now(received)  # a TxProfile is in force from now on

    def transaction_stopped(self, transaction_id: int, timestamp: str,
                            meter_stop_wh: Optional[float] = None) -> list[Finding]:
        """A StopTransaction recorded: it ends the session if it is the analysed one."""
        if self.closed or transaction_id not in (self._transaction_id, self.site.transaction_id):
            return []
        received = self.clock.now()
        found: list[Finding] = []
        if self.site.in_session and self.site.transaction_id == transaction_id:
            found = self._observe(TransactionStopped(transaction_id, received, _time(timestamp),
                                                     meter_stop_wh))
        self.profiles.end_transaction()  # a TxProfile lives as long as its transaction
        self._transaction_id = self._transaction_start = None
        return found + self._limit_now(received)

    # -- what the central system sent -------------------------------------------------------------

    def profile_answered(self, action: str, payload: Mapping[str, Any],
                         status: Any) -> list[Finding]:
        """A CALL of ours answered: if it changed the charging profiles (``status`` Accepted),
        the profiles known change and the analyser is told the limit now in force."""
        if action not in PROFILE_ACTIONS or str(status) != "Accepted" or self.closed:
            return []
        request = camel_to_snake_case(dict(payload))
        try:
            if action == "SetChargingProfile":
                self._install(request.get("connector_id"), request.get("cs_charging_profiles"))
            elif action == "RemoteStartTransaction":
                if request.get("charging_profile") is None:
                    return []
                self._install(request.get("connector_id") or ANALYSED_CONNECTOR,
                              request["charging_profile"])
            else:
                self.profiles.clear(request.get("id"), request.get("connector_id"),
                                    request.get("charging_profile_purpose"),
                                    request.get("stack_level"))
        except (profiles.ProfileError, TypeError, ValueError) as exc:
            log.info("%s: %s not followed by the analysis: %s", self.charge_point_id, action, exc)
            return []
        return self._limit_now(self.clock.now())

    def _install(self, connector_id: Any, raw: Any) -> None:
        if not isinstance(raw, Mapping) or not isinstance(connector_id, int):
            raise profiles.ProfileError("no charging profile")
        if connector_id not in (0, ANALYSED_CONNECTOR):
            return  # another connector's
        profile = profiles.parse(raw)
        # a TxProfile sent with RemoteStartTransaction is in force once its transaction runs
        self.profiles.install(connector_id, profile, transaction_id=profile.transaction_id,
                              transaction_running=True)

    # -- shutdown ---------------------------------------------------------------------------------

    def close(self) -> list[Finding]:
        """End every open episode (the central system stops, or forgets the charge point)."""
        if self.closed:
            return []
        self.closed = True
        return self._record(self.site.close(self.clock.now()))

    # -- inside -----------------------------------------------------------------------------------

    def _limit_now(self, received: datetime) -> list[Finding]:
        """Tell the analyser the composite limit at ``received`` if it is not the one it has."""
        if not self.profiles.installed and self._limit is None:
            return []
        amps: Optional[float] = self.profiles.limit(received, self._transaction_start)
        if amps is not None and math.isinf(amps):
            amps = None  # no profile sets one: the charge point's own
        if amps == self._limit:
            return []
        self._limit = amps
        return self._observe(LimitSet(amps, received))

    def _status_allowed(self) -> bool:
        now = self.clock.sim()
        if self._tokens_at is not None:
            self._tokens = min(float(STATUS_BURST),
                               self._tokens + (now - self._tokens_at) * STATUS_PER_S)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _observe(self, observation: Observation) -> list[Finding]:
        return self._record(self.site.observe(observation))

    def _record(self, findings: list[Finding]) -> list[Finding]:
        for finding in findings:
            level = logging.INFO if finding.kind == "ended" else logging.WARNING
            log.log(level, "%s: %s %s: %s", self.charge_point_id, finding.anomaly_type,
                    finding.kind, finding.description)
            if self.writer is not None:
                moment = finding.received or self.clock.now()
                self.writer.call(lambda bank, f=finding, at=moment: self._store(bank, f, at))
        return findings

    def _store(self, bank: Any, finding: Finding, moment: datetime) -> None:
        """Runs in the writer thread, in order, so the anomaly id is there for what follows."""
        if finding.anomaly_type == fluctuation.ANOMALY_TYPE and finding.detection is not None:
            fields = _fluctuation_fields(bank, finding.detection)
        else:
            extra = {k: v for k, v in finding.values.items() if k not in ROW_VALUES}
            fields = dict(severity=finding.severity, description=finding.description,
                          pattern=extra or None,
                          **{k: finding.values.get(k) for k in ROW_VALUES})
        if finding.kind == "started":
            self._open[finding.anomaly_type] = bank.record_anomaly(
                finding.anomaly_type, charge_point_id=self.charge_point_id,
                transaction_id=finding.transaction_id, timestamp=moment, **fields)
            return
        anomaly_id = self._open.get(finding.anomaly_type)
        if finding.kind == "ended":
            fields["end_time"] = moment
            self._open.pop(finding.anomaly_type, None)
        if anomaly_id is not None:
            bank.update_anomaly(anomaly_id, **fields)


def _fluctuation_fields(bank: Any, detection: fluctuation.Detection) -> dict[str, Any]:
    """A fluctuation's row: it names the known pattern it looks like (None: a new one) until it
    ends, when it is learned as a pattern with its final figures."""
    known = patterns.match_pattern(bank.get_patterns(), detection)
    ended = detection.kind == "ended"
    if ended:
        name, parameters, confidence = patterns.merge_pattern(known, detection)
        bank.learn_pattern(name, parameters, confidence)
    else:
        name = known["name"] if known else None
    fields: dict[str, Any] = dict(severity=detection.severity, description=detection.description,
                                  pattern={"name": name, **detection.pattern_parameters()})
    if not ended:  # an episode that ended by itself has the figures of a calm window
        fields.update(current_value=detection.current_a, expected_value=detection.expected_a,
                      deviation=detection.deviation_a)
    return fields


def _time(text: Optional[str]) -> Optional[datetime]:
    """An OCPP timestamp as sent, None when absent or unreadable."""
    try:
        return parse_ocpp_time(text) if text else None
    except (TypeError, ValueError):
        return None
