"""The viewer's tables: rows of the MemoryBank as text no wider than a terminal.

Pure functions from dicts (as the MemoryBank returns them) to strings; times are shown as short
local time (:func:`evsim.timefmt.local_time`), free text is cut to fit rather than wrapped.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from tabulate import tabulate

from evsim.constants import SEVERITIES
from evsim.timefmt import local_time

WIDTH = 100


def number(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.2f}".rstrip("0").rstrip(".")


def one_line(value: Any) -> str:
    """Any value as one line of text; JSON values compact."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return " ".join(value.split())


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def fit_table(headers: Sequence[str], rows: Iterable[Sequence[str]], max_widths: Sequence[int],
              right: Sequence[int] = (), width: int = WIDTH) -> str:
    """A table no wider than ``width``: each column cut to its maximum, the last column (the
    one with free text) gets what is left."""
    cut = [[shorten(cell, limit) for cell, limit in zip(row, max_widths)] for row in rows]
    align = ["right" if i in right else "left" for i in range(len(headers))]

    def draw() -> str:
        return tabulate(cut, headers=list(headers), tablefmt="simple", colalign=align,
                        disable_numparse=True)
    table = draw()
    excess = max(map(len, table.splitlines())) - width
    if excess > 0 and cut:
        last = max(max(len(row[-1]) for row in cut) - excess, len(headers[-1]), 10)
        for row in cut:
            row[-1] = shorten(row[-1], last)
        table = draw()
    return table


def events_table(events: list[dict]) -> str:
    rows = [(str(e["id"]), local_time(e["timestamp"]), e["event_type"], e["source"],
             one_line(e["charge_point_id"]), one_line(e["description"]), one_line(e["data"]))
            for e in events]
    return fit_table(("ID", "Time", "Type", "Source", "CP", "Description", "Data"), rows,
                     (8, 14, 16, 8, 10, 30, WIDTH), right=(0,))


def anomalies_table(anomalies: list[dict]) -> str:
    rows = [(local_time(a["timestamp"]), a["severity"], a["anomaly_type"],
             one_line(a["charge_point_id"]),
             f"{number(a['current_value'])}/{number(a['expected_value'])}".strip("/"),
             number(a["deviation"]), one_line(a["description"])) for a in anomalies]
    return fit_table(("Time", "Sev", "Type", "CP", "Value/exp", "Dev", "Description"), rows,
                     (14, 8, 20, 10, 13, 7, WIDTH), right=(4, 5))


def sessions_table(sessions: list[dict]) -> str:
    rows = [(one_line(s["charge_point_id"]), one_line(s["transaction_id"]),
             local_time(s["start_time"]), local_time(s["end_time"]) or "active",
             number(s["energy_wh"]),
             "/".join(number(s[key]) or "-" for key in ("min_current", "avg_current",
                                                         "max_current")),
             one_line(s["sample_count"]), one_line(s["stop_reason"])) for s in sessions]
    return fit_table(("CP", "Tx", "Start", "End", "Energy Wh", "A min/avg/max", "Samples",
                      "Reason"), rows, (10, 6, 14, 14, 9, 17, 7, WIDTH), right=(1, 4, 6))


#: How the title of ``--fleet`` says its order, per ``--sort``.
FLEET_ORDER = {"anomalies": "most anomalies first", "seen": "longest silent first",
               "energy": "most energy first", "sessions": "most sessions first", "id": "by id"}


def fleet_status(row: dict) -> str:
    """The last status, with its error code when there is one to tell."""
    error = row["error_code"]
    return (row["status"] or "-") + (f" {error}" if error and error != "NoError" else "")


def anomalies_cell(row: dict) -> str:
    """The count, then each type's, most first."""
    kinds = sorted(row["anomaly_types"].items(), key=lambda item: (-item[1], item[0]))
    return f"{row['anomalies']:,}" + (": " if kinds else "") + ", ".join(
        f"{kind} {count:,}" for kind, count in kinds)


def sessions_cell(row: dict) -> str:
    still_open = row["open_sessions"]
    return f"{row['sessions']:,}" + (f" ({still_open:,} open)" if still_open else "")


def fleet_table(rows: list[dict]) -> str:
    table = [(one_line(r["charge_point_id"]), fleet_status(r), "yes" if r["connected"] else "no",
              sessions_cell(r), f"{r['energy_wh'] / 1000:,.2f}",
              local_time(r["last_seen"]) or "-", anomalies_cell(r)) for r in rows]
    return fit_table(("CP", "Status", "Online", "Sessions", "kWh", "Last seen", "Anomalies"),
                     table, (11, 22, 6, 11, 9, 14, WIDTH), right=(4,))


def fleet_title(data: dict) -> str:
    shown, total = len(data["rows"]), data["charge_points"]
    since = f", since {local_time(data['since'])}" if data.get("since") else ""
    return (f"Fleet: {shown:,} of {total:,} charge point{'' if total == 1 else 's'}, "
            f"{FLEET_ORDER[data['sort']]}{since}")


def patterns_table(patterns: list[dict]) -> str:
    rows = [(p["name"], str(p["occurrences"]), number(p["confidence"]),
             local_time(p["first_seen"]), local_time(p["last_seen"]), one_line(p["parameters"]))
            for p in patterns]
    return fit_table(("Name", "Seen", "Confidence", "First seen", "Last seen", "Parameters"),
                     rows, (24, 7, 10, 14, 14, WIDTH), right=(1, 2))


def stats_table(statistics: list[dict]) -> str:
    rows = [(s["name"] + (f" ({s['source']})" if s.get("source") else ""), one_line(s["unit"]),
             str(s["count"]),
             *(number(s[key]) for key in ("min", "max", "avg", "stddev", "latest")),
             local_time(s["latest_timestamp"])) for s in statistics]
    return fit_table(("Metric", "Unit", "Count", "Min", "Max", "Avg", "Stddev", "Latest",
                      "Latest at"), rows, (16, 5, 9, 9, 9, 9, 9, 9, 14),
                     right=(2, 3, 4, 5, 6, 7))


def summary_table(summary: dict) -> str:
    severities = summary["anomalies_by_severity"]
    last = summary["last_anomaly"]
    types = ", ".join(f"{name} {count:,}" for name, count in summary["event_types"].items())
    rows = [
        ("Database", summary["database"]),
        ("Events", f"{summary['total_events']:,}"),
        ("First / last event", f"{local_time(summary['first_event']) or '-'} / "
                               f"{local_time(summary['last_event']) or '-'}"),
        ("Event types", types or "-"),
        ("Charge points", ", ".join(summary["charge_points"]) or "-"),
        ("Anomalies", f"{summary['total_anomalies']:,} ("
                      + ", ".join(f"{name} {severities[name]:,}" for name in SEVERITIES) + ")"),
        ("Last anomaly", "-" if last is None else
            f"{local_time(last['timestamp'])} {last['severity']} {last['anomaly_type']}"
            f"{' on ' + last['charge_point_id'] if last['charge_point_id'] else ''}: "
            f"{one_line(last['description'])}"),
        ("Sessions", f"{summary['total_sessions']:,} ({summary['active_sessions']:,} active)"),
        ("Energy delivered", f"{summary['total_energy_wh'] / 1000:,.2f} kWh"),
        ("Metric samples", f"{summary['total_metrics']:,}"),
        ("Learned patterns", f"{summary['total_patterns']:,}"),
    ]
    return fit_table(("Summary", ""), rows, (18, WIDTH))


SCORE_HEADERS = ("Type", "Labels", "Anom", "TP", "FP", "Missed", "Prec", "Recall", "Median s",
                 "Worst s")


def score_table(kinds: list[dict]) -> str:
    """One row per anomaly type (as :meth:`~evsim.detection.score.KindScore.as_dict` gives it);
    latencies are simulated seconds from a label's start to its first anomaly."""
    def show(value: Optional[float], digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"
    rows = [(k["anomaly_type"], str(k["labels"]), str(k["anomalies"]), str(k["true_positives"]),
             str(k["false_positives"]), str(k["misses"]), show(k["precision"], 2),
             show(k["recall"], 2), show(k["median_latency_s"], 1),
             show(k["worst_latency_s"], 1)) for k in kinds]
    return fit_table(SCORE_HEADERS, rows, (28, 6, 6, 6, 6, 6, 5, 6, 9, 9),
                     right=tuple(range(1, 10)))


def render_score(data: dict) -> str:
    out = ["Score: labels (ground truth) against anomalies, per type; latency in simulated "
           "seconds"]
    if not data["labels"]:
        out.append("No labels (ground truth) to score: inject faults (--inject) or run a "
                   "scenario to record some.")
    if data["kinds"]:
        out.append(score_table(data["kinds"]))
    return "\n".join(out) + "\n"


def render_dataset(data: dict) -> str:
    rows = ", ".join(f"{count:,} {table}" for table, count in data["rows"].items())
    formats = (" as CSV and Parquet" if "parquet" in data["formats"]
               else " as CSV (no Parquet: pyarrow is not installed)")
    return f"Exported {rows} to {data['path']}{formats}\n"


def titled(title: str, table: str, empty: bool) -> str:
    return f"{title}\n{'(none)' if empty else table}\n"


def render(section: str, data: Any, limit: Optional[int] = None) -> str:
    """One section's data (as :class:`~evsim.viewer.sections.Viewer` returns it) as a titled
    table; ``limit`` is how many rows were asked for."""
    count = f" (last {limit}, newest first)" if limit is not None else ""
    if section == "summary":
        return summary_table(data) + "\n"
    if section == "score":
        return render_score(data)
    if section == "export_dataset":
        return render_dataset(data)
    if section == "fleet":
        return titled(fleet_title(data), fleet_table(data["rows"]), not data["rows"])
    if section == "export":
        rows = ", ".join(f"{count:,} {table}" for table, count in data["rows"].items())
        return f"Exported {rows} to {data['path']}\n"
    title, table = {
        "events": ("Events" + count, events_table),
        "anomalies": ("Anomalies" + count, anomalies_table),
        "sessions": ("Sessions" + count, sessions_table),
        "security": ("Security events" + count, events_table),
        "patterns": ("Learned patterns", patterns_table),
        "stats": ("Metric statistics", stats_table),
    }[section]
    return titled(title, table(data), not data)
