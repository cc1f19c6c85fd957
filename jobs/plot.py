"""The metric-per-attempt chart shared by the mail and report.html."""

from __future__ import annotations

import io
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PASS_COLOR = "#1a7f37"
LINE_COLOR = "#0969da"
FAIL_COLOR = "#cf222e"


def metric_plot_png(attempts: list[dict[str, Any]], metric: str, threshold: float) -> bytes:
    """A PNG of `metric` per attempt: the values, the threshold line, failed attempts as red ×.

    Attempts without a metric value (failed, or still running) are drawn as a marker on the
    bottom edge, so a run whose every attempt failed still gives a readable chart.
    """
    # Figure + Agg canvas directly: no pyplot global state, safe in threads and without a display.
    figure = Figure(figsize=(6.4, 3.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()

    scored = [(a["n"], a["metric_value"]) for a in attempts if a.get("metric_value") is not None]
    unscored = [a for a in attempts if a.get("metric_value") is None]
    if scored:
        xs, ys = zip(*scored)
        axes.plot(xs, ys, marker="o", color=LINE_COLOR, label=metric, zorder=3)
    axes.axhline(threshold, color=PASS_COLOR, linestyle="--", linewidth=1.2,
                 label=f"threshold {threshold:g}")

    failed = [a["n"] for a in unscored if a.get("status") == "failed"]
    pending = [a["n"] for a in unscored if a.get("status") != "failed"]
    bottom = axes.get_xaxis_transform()  # x in data units, y in axes fraction
    if failed:
        axes.scatter(failed, [0.04] * len(failed), marker="x", s=60, color=FAIL_COLOR,
                     transform=bottom, label="failed", zorder=4, clip_on=False)
    if pending:
        axes.scatter(pending, [0.04] * len(pending), marker="o", s=40, facecolors="none",
                     edgecolors="grey", transform=bottom, label="no value", zorder=4)

    if scored:
        values = [y for _, y in scored] + [threshold]
        low, high = min(values), max(values)
        margin = (high - low) * 0.15 or abs(high) * 0.05 or 0.05
        axes.set_ylim(low - margin, high + margin)
    numbers = [a["n"] for a in attempts] or [1]
    axes.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("attempt")
    axes.set_ylabel(metric)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
