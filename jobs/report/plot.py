"""The charts of a run: the metric per attempt (the mail and report.html) and the training
curves per epoch (report.html)."""

from __future__ import annotations

import io
import math
from typing import Any

PASS_COLOR = "#1a7f37"
LINE_COLOR = "#0969da"
FAIL_COLOR = "#cf222e"
# one colour per attempt in the curves chart (matplotlib's tab10, which prints and projects well)
CURVE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def metric_plot_png(attempts: list[dict[str, Any]], metric: str, threshold: float) -> bytes:
    """A PNG of `metric` per attempt: the values, the threshold line, failed attempts as red ×.

    Attempts without a metric value (failed, or still running) are drawn as a marker on the
    bottom edge, so a run whose every attempt failed still gives a readable chart.
    """
    # heavy library: matplotlib costs ~0.5 s to import, paid only when a plot is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # Figure + Agg canvas directly: no pyplot global state, safe in threads and without a display.
    figure = Figure(figsize=(6.4, 3.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()

    scored = [(a["n"], a["metric_value"]) for a in attempts if a.get("metric_value") is not None]
    unscored = [a for a in attempts if a.get("metric_value") is None]
    if scored:
        xs, ys = zip(*scored, strict=True)
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


def _curve_series(attempt: dict[str, Any], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of one log key in an attempt's curve; a null (non-finite) value is NaN,
    which leaves a gap in the line."""
    history = ((attempt.get("curve") or {}).get("history")) or []
    # A warm-started attempt's curve begins with its parent's epochs: drawn from where it took
    # over (joining the parent's last point), it does not hide the parent's line.
    first = attempt.get("warm_epoch") if attempt.get("warm_from") is not None else None
    first = first if isinstance(first, int) else 0
    xs, ys = [], []
    for entry in history:
        if not isinstance(entry, dict) or not isinstance(entry.get("epoch"), int) or key not in entry:
            continue
        if entry["epoch"] < first:
            continue
        value = entry[key]
        xs.append(entry["epoch"])
        ys.append(float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan)
    return xs, ys


def _has(attempts: list[dict[str, Any]], key: str) -> bool:
    return any(any(math.isfinite(y) for y in _curve_series(a, key)[1]) for a in attempts)


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def curves_plot_png(attempts: list[dict[str, Any]], metric: str, best: int | None = None) -> bytes | None:
    """A PNG of the training curves, one line per attempt: on the left the gated metric's
    validation twin per epoch (`val_<metric>`, or the train metric when no curve has the twin),
    on the right the loss (solid) and val_loss (dashed). The best attempt is drawn thicker; a
    warm-started attempt from the epoch it continued at.
    None when no attempt left a curve with any of them.
    """
    with_curve = [a for a in attempts if (a.get("curve") or {}).get("history")]
    base = metric[4:] if metric.startswith("val_") else metric
    metric_key = next((k for k in (f"val_{base}", base) if base != "loss" and _has(with_curve, k)), None)
    loss_keys = [k for k in ("loss", "val_loss") if _has(with_curve, k)]
    panels = [p for p in (metric_key, "loss" if loss_keys else None) if p]
    if not panels:
        return None

    # heavy library: matplotlib costs ~0.5 s to import, paid only when a plot is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(4.8 * len(panels) + 0.6, 3.4), dpi=100)
    FigureCanvasAgg(figure)
    colors = CURVE_COLORS  # by attempt number, so an attempt keeps its colour in both panels
    handles: dict[int | None, Any] = {}  # by attempt number
    for index, panel in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        keys = [metric_key] if panel == metric_key else loss_keys
        drawn: list[float] = []
        for position, attempt in enumerate(with_curve):
            n = attempt.get("n")
            color = colors[((n - 1) if isinstance(n, int) else position) % len(colors)]
            is_best = attempt.get("n") == best
            for key in keys:
                xs, ys = _curve_series(attempt, key)
                if not xs:
                    continue
                line, = axes.plot(
                    xs, ys, color=color, linewidth=2.8 if is_best else 1.3,
                    linestyle="--" if key == "val_loss" else "-", alpha=1.0 if is_best else 0.85,
                    marker="o" if len(xs) == 1 else None, zorder=4 if is_best else 3,
                )
                drawn.extend(_finite(ys))
                handles.setdefault(attempt.get("n"), line)  # the legend's sample: a solid line
        if panel == "loss":
            positive = [v for v in drawn if v > 0]
            if positive and len(positive) == len(drawn) and max(positive) / min(positive) > 100:
                axes.set_yscale("log")  # a diverged attempt would flatten everyone else's line
            axes.set_ylabel(" / ".join(loss_keys))
            axes.set_title("loss" + (" (dashed: val_loss)" if loss_keys == ["loss", "val_loss"] else ""),
                           fontsize="medium")
        else:  # the metric's panel
            axes.set_ylabel(panel)
            axes.set_title(f"{panel} per epoch", fontsize="medium")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)

    labels = []
    ordered = [a for a in with_curve if a.get("n") in handles]
    for attempt in ordered:
        label = f"attempt {attempt.get('n')}"
        if attempt.get("n") == best:
            label += " (best)"
        elif attempt.get("status") == "failed":
            label += " (failed)"
        labels.append(label)
    figure.axes[0].legend([handles[a.get("n")] for a in ordered], labels, loc="best", fontsize="small")
    figure.tight_layout()

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
