"""What ``memory_viewer.py --score`` hands :func:`evsim.detection.score.score`: the labels and
anomalies of the MemoryBank, each label with the speed of its run, and the ``--since`` cut.

Pure functions over rows as the MemoryBank returns them (dicts, times as stored text).

Speed: a label carries the speed of its run in its parameters when its injector put it there;
otherwise the speed is that of the newest PROCESS_START event at or before the label's start
(from the label's own source when there is one, else from any process), or 1.

``--since``: the labels that start at or after it are scored, with the anomalies recorded at or
after it; an anomaly that falls in the window of a label that started before (and in no
window of a scored label) belongs to that earlier episode and is left out, rather than counted
as a false positive.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Optional

from evsim.detection.score import EARLY_S, LATE_S
from evsim.timefmt import parse_timestamp


def run_speeds(process_starts: Iterable[Mapping[str, Any]]) -> list[tuple[datetime, str, float]]:
    """(time, source, speed) of each PROCESS_START event whose data records a speed, oldest
    first."""
    speeds = []
    for event in process_starts:
        data = event.get("data")
        speed = data.get("speed") if isinstance(data, dict) else None
        if isinstance(speed, (int, float)) and not isinstance(speed, bool) and speed > 0:
            speeds.append((parse_timestamp(event["timestamp"]), str(event.get("source")),
                           float(speed)))
    return sorted(speeds, key=lambda item: item[0])


def speed_at(speeds: list[tuple[datetime, str, float]], at: datetime,
             source: Optional[str]) -> Optional[float]:
    """The speed of the newest run started at or before ``at``: from ``source`` if one
    did, else from any process; None if none did."""
    before = [item for item in speeds if item[0] <= at]
    own = [item for item in before if item[1] == source]
    chosen = own or before
    return chosen[-1][2] if chosen else None


def with_speed(labels: Iterable[Mapping[str, Any]],
               speeds: list[tuple[datetime, str, float]]) -> list[dict[str, Any]]:
    """The labels, each whose parameters lack a speed given the speed of its run (see the
    module docstring)."""
    out = []
    for label in labels:
        parameters = label.get("parameters")
        parameters = dict(parameters) if isinstance(parameters, dict) else {}
        if not parameters.get("speed"):
            speed = speed_at(speeds, parse_timestamp(label["start"]), label.get("source"))
            if speed is not None:
                parameters["speed"] = speed
        out.append({**label, "parameters": parameters})
    return out


def _window(label: Mapping[str, Any]) -> tuple[datetime, Optional[datetime]]:
    """When an anomaly matches ``label``: from ``EARLY_S`` before its start to ``LATE_S`` after
    its end (simulated seconds at the label's speed; no end: open)."""
    speed = float((label.get("parameters") or {}).get("speed") or 1.0)
    start = parse_timestamp(label["start"]) - timedelta(seconds=EARLY_S / speed)
    end = label.get("end")
    return start, (None if end is None
                   else parse_timestamp(end) + timedelta(seconds=LATE_S / speed))


def _inside(label: Mapping[str, Any], anomaly: Mapping[str, Any]) -> bool:
    if (label.get("charge_point_id"), label["anomaly_type"]) != (
            anomaly.get("charge_point_id"), anomaly["anomaly_type"]):
        return False
    start, end = _window(label)
    at = parse_timestamp(anomaly["timestamp"])
    return start <= at and (end is None or at <= end)


def without_earlier_episodes(anomalies: Iterable[Mapping[str, Any]],
                             earlier: Iterable[Mapping[str, Any]],
                             scored: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``anomalies`` but those in the window of an ``earlier`` label (one that started before
    ``--since``) and in no window of a ``scored`` label."""
    earlier, scored = list(earlier), list(scored)
    return [anomaly for anomaly in anomalies
            if not any(_inside(label, anomaly) for label in earlier)
            or any(_inside(label, anomaly) for label in scored)]
