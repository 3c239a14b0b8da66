"""``--from-db``: a past session or time range drawn from the MemoryBank's current metrics.

Anomalies come from the MemoryBank as csms.py recorded them, not from running the detector
again: stored timestamps are wall-clock, and at ``--speed 10`` they are 10 times closer.
"""
from __future__ import annotations

import argparse
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import matplotlib

from evsim import cli
from evsim.bank import MemoryBank, MemoryBankError
from evsim.constants import RECORDER, SEVERITIES
from evsim.plot.chart import Chart, History, current_stats, detected_bands, ground_truth_bands
from evsim.plot.draw import draw, new_figure, save_png
from evsim.timefmt import local_time, parse_timestamp

#: ``--from-db`` given without a transaction id: the range of --since/--until.
RANGE = object()

log = logging.getLogger("plot")


def find_session(bank: MemoryBank, transaction_id: int, charge_point_id: Optional[str]) -> dict:
    sessions = [s for s in bank.get_sessions(limit=None, charge_point_id=charge_point_id)
                if s["transaction_id"] == transaction_id]
    if not sessions:
        raise cli.SimError(f"no session with transaction id {transaction_id}"
                           + (f" on {charge_point_id}" if charge_point_id else "")
                           + f" in {bank.path}")
    if len(sessions) > 1:
        raise cli.SimError(f"transaction id {transaction_id} is on several charge points ("
                           + ", ".join(sorted({s['charge_point_id'] for s in sessions}))
                           + "): choose one with --cp")
    return sessions[0]


def current_samples(bank: MemoryBank, **filters: Any) -> list[dict]:
    """Each current sample once: as the central system received it, else as the charge point
    reported it (a charge point run against another central system)."""
    return (bank.get_metrics("current", source=RECORDER, **filters)
            or bank.get_metrics("current", **filters))


def local_x(stamp: str) -> datetime:
    """Where a stored timestamp falls on the chart's axis of local time."""
    return parse_timestamp(stamp).astimezone()


def past_chart(bank: MemoryBank, args: argparse.Namespace) -> Chart:
    """The chart of a session (``--from-db TX``) or of a time range (``--since``/``--until``)."""
    if args.from_db is not RANGE:
        session = find_session(bank, args.from_db, args.cp)
        cp = session["charge_point_id"]
        rows = current_samples(bank, charge_point_id=cp, transaction_id=args.from_db)
        since, until = session["start_time"], session["end_time"]
        what = f"session {cp} transaction {args.from_db}"
    else:
        cp = args.cp
        rows = current_samples(bank, charge_point_id=cp, since=args.since, until=args.until)
        since = until = None
        what = "current" + (f" of {cp}" if cp else "")
    if not rows:
        raise cli.SimError(f"no current samples for {what} in {bank.path}")
    since = since or rows[0]["timestamp"]
    until = until or rows[-1]["timestamp"]
    by_charge_point: dict[str, tuple[list, list[float]]] = {}
    for row in rows:
        xs, amps = by_charge_point.setdefault(row["charge_point_id"] or "?", ([], []))
        xs.append(parse_timestamp(row["timestamp"]).astimezone())
        amps.append(row["value"])
    anomalies = bank.get_anomalies(None, charge_point_id=cp, since=since, until=until)
    labels = bank.get_labels_overlapping(since, until, charge_point_id=cp)
    window = (local_x(since), local_x(until))
    history = History.of(anomalies)
    worst = max((a["severity"] for a in anomalies), key=SEVERITIES.index, default=None)
    return Chart(
        title=f"{what[0].upper()}{what[1:]}: {local_time(since)} to {local_time(until)[6:]}",
        xlabel="local time",
        series=[(name, xs, values) for name, (xs, values) in sorted(by_charge_point.items())],
        stats=current_stats([row["value"] for row in rows])[1:] + [f"samples {len(rows):5d}"],
        alarm=f"{len(anomalies)} ANOMAL{'Y' if len(anomalies) == 1 else 'IES'}\nworst {worst}"
        if anomalies else None,
        calm="no anomaly recorded",
        markers=[(local_x(a["timestamp"]), a["severity"]) for a in anomalies],
        history=history.lines(),
        ground_truth=ground_truth_bands(labels, local_x, window, cp),
        detected=detected_bands(anomalies, local_x, window, cp))


def from_db(args: argparse.Namespace, output: Path) -> int:
    """Draw the chart ``args`` ask for into ``output``; the MemoryBank is only read."""
    matplotlib.use("Agg")
    try:
        with MemoryBank(args.db, readonly=True) as bank:
            chart = past_chart(bank, args)
    except MemoryBankError as exc:
        raise cli.SimError(exc) from None
    fig = new_figure(args.size)
    draw(fig, chart)
    save_png(fig, output)
    log.info("wrote %s", output)
    return 0
