"""Renders a :class:`~evsim.plot.chart.Chart` with matplotlib, and writes PNGs whole.

Without ``gui`` a figure is made without pyplot, so rendering a PNG never needs a display.
Ground truth and detected episodes are drawn in two lanes along the bottom of the chart, each
band captioned with its anomaly type.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.patches import Patch

from evsim import cli
from evsim.plot.chart import Band, Chart, captions

DEFAULT_OUTPUT = "current.png"
DPI = 100
SEVERITY_COLORS = {"LOW": "#bf9000", "MEDIUM": "#e69138", "HIGH": "#cc0000",
                   "CRITICAL": "#7f0000"}
ALARM_RED = "#d00000"
#: The chart's share of the figure's width; the panel has the rest.
CHART_SHARE = 2.6 / 3.6
#: The width of a caption, about that of the longest anomaly type.
CAPTION_PX = 110
GROUND_TRUTH = "ground truth (injected)"
DETECTED = "detected"
#: Each lane's (bottom, top) in axes fractions, room for its captions above it, and its style.
LANES = {GROUND_TRUTH: (0.015, 0.065), DETECTED: (0.115, 0.165)}
LANE_STYLES = {GROUND_TRUTH: dict(facecolor="#3c78d833", edgecolor="#1c4587", hatch="///", lw=0.6),
               DETECTED: dict(facecolor="#8e7cc366", edgecolor="#351c75", lw=0.8)}


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
    grid = fig.add_gridspec(1, 2, width_ratios=(CHART_SHARE, 1 - CHART_SHARE))
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
    lanes = {GROUND_TRUTH: chart.ground_truth, DETECTED: chart.detected}
    for name, bands in lanes.items():
        draw_lane(ax, name, bands)
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
    lane_handles = [Patch(label=name, **LANE_STYLES[name]) for name, bands in lanes.items()
                    if bands]
    if lane_handles:
        panel.legend(handles=lane_handles, loc="lower left", fontsize=8 * scale, frameon=False)


def caption_gap(ax) -> float:
    """How much of the x axis a caption takes: :data:`CAPTION_PX` of the axes' width."""
    left, right = ax.get_xlim()
    width_px = ax.get_figure().get_figwidth() * DPI * CHART_SHARE
    return (right - left) * CAPTION_PX / width_px


def draw_lane(ax, name: str, bands: list[Band]) -> None:
    """The bands of one lane: spans, or a marker for an episode whose end is not known,
    captioned with their kind where there is room (:func:`~evsim.plot.chart.captions`)."""
    bottom, top = LANES[name]
    style = LANE_STYLES[name]
    on_lane = ax.get_xaxis_transform()
    for band, caption in zip(bands, captions(bands, ax.xaxis.convert_units, caption_gap(ax))):
        if band.end is None:
            ax.plot([band.start], [(bottom + top) / 2], marker=">", ms=7, ls="",
                    color=style["edgecolor"], transform=on_lane)
        else:
            ax.axvspan(band.start, band.end, ymin=bottom, ymax=top, **style)
        if caption:
            ax.text(band.start, top + 0.004, caption, transform=on_lane, fontsize=6.5,
                    color=style["edgecolor"], va="bottom", clip_on=True)


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
