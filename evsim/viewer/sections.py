"""What the viewer reads from the MemoryBank, one method per section, with the command line's
filters applied: the one place that knows which flag filters which table."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from evsim import cli
from evsim.bank import MemoryBank, format_timestamp
from evsim.detection.score import score as score_labels
from evsim.viewer import scoring

#: ``--sort`` of ``--fleet``: the key that puts the rows worth a look first, ties by id.
FLEET_SORTS: dict[str, Callable[[dict], Any]] = {
    "anomalies": lambda row: (-row["anomalies"], row["charge_point_id"]),
    "seen": lambda row: (row["last_seen"] or "", row["charge_point_id"]),
    "energy": lambda row: (-row["energy_wh"], row["charge_point_id"]),
    "sessions": lambda row: (-row["sessions"], row["charge_point_id"]),
    "id": lambda row: row["charge_point_id"],
}


class Viewer:
    """The sections the viewer shows, read from ``bank`` with the filters in ``args``."""

    def __init__(self, bank: MemoryBank, args: argparse.Namespace):
        self.bank = bank
        self.args = args

    def event_filters(self, search: Optional[str] = None) -> dict:
        args = self.args
        return {"event_type": args.type, "source": args.source, "charge_point_id": args.cp,
                "since": args.since, "search": search or args.search}

    def summary(self) -> dict:
        return self.bank.get_dashboard_summary()

    def events(self, limit: Optional[int], search: Optional[str] = None) -> list[dict]:
        return self.bank.get_recent_events(limit, self.event_filters(search))

    def anomalies(self, limit: Optional[int]) -> list[dict]:
        args = self.args
        return self.bank.get_anomalies(limit, severity=args.severity, anomaly_type=args.type,
                                       charge_point_id=args.cp, since=args.since)

    def sessions(self, limit: Optional[int]) -> list[dict]:
        return self.bank.get_sessions(limit, charge_point_id=self.args.cp, since=self.args.since)

    def fleet(self, limit: Optional[int]) -> dict:
        """One row per charge point (only ``--cp``'s with it), ordered by ``--sort``, the first
        ``limit``: the fleet is read whole (one GROUP BY per table) and sorted here, as 2,000
        rows are nothing to sort and the order needs figures from several tables."""
        args = self.args
        rows = [row for row in self.bank.get_fleet(since=args.since)
                if args.cp is None or row["charge_point_id"] == args.cp]
        rows.sort(key=FLEET_SORTS[args.sort])
        return {"charge_points": len(rows), "sort": args.sort,
                "since": None if args.since is None else format_timestamp(args.since),
                "rows": rows if limit is None else rows[:limit]}

    def security(self, limit: Optional[int]) -> list[dict]:
        """Refused connections, key changes and the charge points' security events."""
        return self.bank.get_recent_events(limit, {**self.event_filters(), "event_type": "SECURITY"})

    def patterns(self) -> list[dict]:
        return self.bank.get_patterns()

    def stats(self) -> list[dict]:
        """One row per metric and source: the charge point and the central system record the
        same samples, so mixing sources would count each twice."""
        sources = [self.args.source] if self.args.source else self.bank.get_metric_sources()
        rows = [self.bank.get_metric_statistics(name, since=self.args.since,
                                                charge_point_id=self.args.cp, source=source)
                for name in self.bank.get_metric_names() for source in sources]
        return [row for row in rows if row["count"]]

    def export(self, path: Path) -> dict:
        """JSON: the whole database. CSV: the events that match the filters, streamed.
        ValueError for the database's own files."""
        try:
            if path.suffix.lower() == ".csv":
                rows = {"events": self.bank.export_csv(path, "events", **self.event_filters())}
            else:
                rows = self.bank.export_json(path)
        except OSError as exc:
            raise cli.SimError(f"cannot export to {path}: {exc.strerror or exc}") from None
        return {"path": str(path), "rows": rows}

    def score(self) -> dict:
        """Labels against anomalies per anomaly type (:mod:`evsim.viewer.scoring` says which
        and at what speed), with ``--cp`` and ``--since``: ``{"labels", "anomalies", "kinds"}``,
        ``kinds`` one :meth:`~evsim.detection.score.KindScore.as_dict` per type."""
        bank, cp, since = self.bank, self.args.cp, self.args.since
        speeds = scoring.run_speeds(bank.get_recent_events(None, {"event_type": "PROCESS_START"}))
        labels = scoring.with_speed(bank.get_labels(charge_point_id=cp, since=since), speeds)
        anomalies = bank.get_anomalies(None, charge_point_id=cp, since=since)
        if since is not None:
            scored = {label["id"] for label in labels}
            earlier = [label for label in bank.get_labels(charge_point_id=cp, until=since)
                       if label["id"] not in scored]
            anomalies = scoring.without_earlier_episodes(
                anomalies, scoring.with_speed(earlier, speeds), labels)
        kinds = score_labels(labels, anomalies)
        return {"labels": len(labels), "anomalies": len(anomalies),
                "kinds": [kind.as_dict() for kind in kinds.values()]}

    def export_dataset(self, directory: Path) -> dict:
        """Metrics, events, labels and anomalies (of ``--cp``, since ``--since``) as one CSV
        file per table in ``directory``, and Parquet too when pyarrow is installed."""
        filters = {"charge_point_id": self.args.cp, "since": self.args.since}
        try:
            written = self.bank.export_dataset(
                directory, **{key: value for key, value in filters.items() if value is not None})
        except OSError as exc:
            raise cli.SimError(f"cannot export to {directory}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise cli.UsageError(f"--export-dataset {exc}") from None
        return {"path": str(directory), **written}
