"""What the viewer reads from the MemoryBank, one method per section, with the command line's
filters applied: the one place that knows which flag filters which table."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from evsim import cli
from evsim.bank import MemoryBank


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
