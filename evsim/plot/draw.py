"""Renders a :class:`~evsim.plot.chart.Chart` with matplotlib, and writes PNGs whole.

Without ``gui`` a figure is made without pyplot, so rendering a PNG never needs a display.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

from evsim import cli
from evsim.plot.chart import Chart

DEFAULT_OUTPUT = "current.png"
DPI = 100
SEVERITY_COLORS = {"LOW": "#bf9000", "MEDIUM": "#e69138", "HIGH": "#cc0000",
                   "CRITICAL": "#7f0000"}
ALARM_RED = "#d00000"


def new_figure(size: tuple[int, int], gui: bool = False):
    """A figure of exactly ``size`` pixels; pyplot (and its GUI backend) only when ``gui``."""
    figsize = (size[0] / DPI, size[1] / DPI)
    if gui:
        import matplotlib.pyplot as plt
        return plt.figure(figsize=figsize, dpi=DPI, layout="constrained")
    from matplotlib.figure import Figure
    return Figure(figsize=figsize, dpi=DPI, layout="constrained")


def draw(fig, chart: Chart) -> None:
    """Redraw ``fig``: the chart on the left, the indicator and the figures on the right."""
    fig.clear()
    scale = min(1.0, max(0.7, fig.get_figwidth() * DPI / 1000))
    grid = fig.add_gridspec(1, 2, width_ratios=(2.6, 1))
    ax, panel = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    ax.set_title(chart.title, loc="left", fontsize=12)
    ax.set_xlabel(chart.xlabel)
    ax.set_ylabel("current (A)")
    ax.grid(True, alpha=0.3)
    peak = 0.0
    for label, xs, amps in chart.series:
        ax.plot(xs, amps, lw=1.6, label=label, marker="." if len(xs) < 120 else None)
        peak = max([peak, *amps])
    ax.set_ylim(0, max(10.0, peak * 1.15))
    if chart.xlim is not None:
        ax.set_xlim(*chart.xlim)
    first_xs = chart.series[0][1] if chart.series else []
    if first_xs and isinstance(first_xs[0], datetime):
        locator = AutoDateLocator(tz=first_xs[0].tzinfo)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=first_xs[0].tzinfo))
    if len(chart.series) > 1:
        ax.legend(loc="upper left", fontsize=8)
    for begin, end in chart.episodes:
        ax.axvspan(begin, end, color=ALARM_RED, alpha=0.12, lw=0)
    for x, severity in chart.markers:
        color = SEVERITY_COLORS.get(severity, ALARM_RED)
        ax.axvline(x, color=color, ls="--", lw=1)
        ax.scatter([x], [0.96], marker="v", s=90, color=color, zorder=5,
                   transform=ax.get_xaxis_transform(), clip_on=False)
    if chart.waiting:
        ax.text(0.5, 0.5, chart.waiting, transform=ax.transAxes, ha="center", va="center",
                fontsize=15, color="0.4")

    panel.axis("off")
    if chart.alarm:
        panel.text(0.03, 0.99, chart.alarm, va="top", fontsize=11 * scale, weight="bold",
                   color="white", bbox=dict(boxstyle="round,pad=0.5", facecolor=ALARM_RED,
                                            edgecolor="none"))
    else:
        panel.text(0.03, 0.99, chart.calm, va="top", fontsize=12 * scale, color="#38761d",
                   bbox=dict(boxstyle="round,pad=0.5", facecolor="#d9ead3", edgecolor="none"))
    panel.text(0.03, 0.76, "\n".join(chart.stats), va="top", fontsize=9 * scale,
               family="monospace", linespacing=1.6)
    panel.text(0.03, 0.5, "\n".join(chart.history), va="top", fontsize=9 * scale,
               family="monospace", linespacing=1.5)


def save_png(fig, path: Path) -> None:
    """Write the PNG through a temporary file, so a reader never sees half an image."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        fig.savefig(partial, format="png", dpi=DPI)
        os.replace(partial, path)
    except OSError as exc:
        raise cli.SimError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
