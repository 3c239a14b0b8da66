"""How well the detectors did: labels (ground truth) against anomalies (what was recorded), per
anomaly type.

Both come as dicts, as the MemoryBank holds them: a label has ``charge_point_id``,
``anomaly_type``, ``start``, ``end`` (wall-clock UTC, a datetime or its ISO text; an open label
has no end) and ``parameters`` (whose ``speed``, when present, turns wall seconds into
simulated ones); an anomaly has ``charge_point_id``, ``anomaly_type`` and ``timestamp``.

An anomaly matches a label of the same type and charge point when it was recorded between the
label's start (less ``early_s``) and its end (plus ``late_s``, as some faults can only be seen
once they are over: a gap when the samples resume). Each label's first matching anomaly is a
true positive, and its latency is the simulated seconds from the label's start to it. Every
other anomaly is a false positive, whether it matches no label or repeats one already matched
(one anomaly per episode); ``duplicates`` counts the latter. A label without a match is a miss.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Optional

from evsim.timefmt import parse_timestamp

EARLY_S = 1.0
LATE_S = 60.0


@dataclass
class KindScore:
    """The score of one anomaly type."""

    anomaly_type: str
    labels: int = 0
    anomalies: int = 0
    true_positives: int = 0
    false_positives: int = 0
    duplicates: int = 0
    misses: int = 0
    latencies_s: list[float] = field(default_factory=list)

    @property
    def precision(self) -> Optional[float]:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else None

    @property
    def recall(self) -> Optional[float]:
        return self.true_positives / self.labels if self.labels else None

    @property
    def median_latency_s(self) -> Optional[float]:
        return statistics.median(self.latencies_s) if self.latencies_s else None

    @property
    def worst_latency_s(self) -> Optional[float]:
        return max(self.latencies_s) if self.latencies_s else None

    def as_dict(self) -> dict[str, Any]:
        figures = asdict(self)
        del figures["latencies_s"]
        return {**figures, "precision": _round(self.precision), "recall": _round(self.recall),
                "median_latency_s": _round(self.median_latency_s),
                "worst_latency_s": _round(self.worst_latency_s)}


def score(labels: Iterable[Mapping[str, Any]], anomalies: Iterable[Mapping[str, Any]], *,
          speed: Optional[float] = None, early_s: float = EARLY_S,
          late_s: float = LATE_S) -> dict[str, KindScore]:
    """Per anomaly type (sorted by name), the score of ``anomalies`` against ``labels``.

    ``speed`` overrides the labels' own (default 1) for turning wall seconds into simulated
    ones, and so the windows ``early_s``/``late_s``, which are simulated seconds."""
    scores: dict[str, KindScore] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for label in labels:
        kind = str(label["anomaly_type"])
        scores.setdefault(kind, KindScore(kind)).labels += 1
        parameters = label.get("parameters") or {}
        rate = speed or float(parameters.get("speed") or 1.0)
        start = _moment(label["start"])
        end = _moment(label["end"]) if label.get("end") is not None else None
        groups.setdefault((str(label.get("charge_point_id")), kind), []).append(
            {"start": start, "end": end, "speed": rate, "matched": False})
    for group in groups.values():
        group.sort(key=lambda item: item["start"])
    for anomaly in sorted(anomalies, key=lambda a: _moment(a["timestamp"])):
        kind = str(anomaly["anomaly_type"])
        result = scores.setdefault(kind, KindScore(kind))
        result.anomalies += 1
        at = _moment(anomaly["timestamp"])
        candidates = [label for label in groups.get((str(anomaly.get("charge_point_id")), kind),
                                                    [])
                      if _within(label, at, early_s, late_s)]
        fresh = [label for label in candidates if not label["matched"]]
        if fresh:
            label = fresh[0]
            label["matched"] = True
            result.true_positives += 1
            result.latencies_s.append(
                max(0.0, (at - label["start"]).total_seconds() * label["speed"]))
        else:
            result.false_positives += 1
            result.duplicates += bool(candidates)
    for (_, kind), group in groups.items():
        scores[kind].misses += sum(not label["matched"] for label in group)
    return dict(sorted(scores.items()))


def _within(label: Mapping[str, Any], at: datetime, early_s: float, late_s: float) -> bool:
    rate = label["speed"]
    after_start = (at - label["start"]).total_seconds() * rate >= -early_s
    end = label["end"]
    before_end = end is None or (at - end).total_seconds() * rate <= late_s
    return after_start and before_end


def _moment(value: Any) -> datetime:
    return value if isinstance(value, datetime) else parse_timestamp(str(value))


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None or math.isnan(value) else round(value, 3)


def table(scores: Mapping[str, KindScore]) -> list[list[Any]]:
    """Rows for printing: type, labels, anomalies, TP, FP, misses, precision, recall, median
    and worst latency (s)."""
    def show(value: Optional[float], digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"
    return [[s.anomaly_type, s.labels, s.anomalies, s.true_positives, s.false_positives,
             s.misses, show(s.precision), show(s.recall), show(s.median_latency_s, 1),
             show(s.worst_latency_s, 1)] for s in scores.values()]


HEADERS = ["anomaly_type", "labels", "anomalies", "TP", "FP", "missed", "precision", "recall",
           "median latency s", "worst latency s"]
