"""`report.html` per run: the attempts table (with why each was chosen), the metric per attempt
plotted, the training curves per epoch, the winning diff.

The page is jobs/report/templates/report.html.j2, rendered with autoescape: every value this module
hands it is plain text (model and metric names, tweaks, reasons, errors, the diff …) and is
escaped by Jinja2, so nothing a pushed script or the store holds can become markup. The charts
are base64 PNGs that pushtune draws itself (jobs/report/plot.py)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from jobs.classify.notebook import handed_back_notebook
from jobs.clock import utc_text
from jobs.loop import shown_log_tail
from jobs.report.plot import curves_plot_png, metric_plot_png
from jobs.store.run_store import RunStore, run_dir
from jobs.train.metrics import captured
from jobs.tune.objective import Objective, best_attempt

# autoescape for every template (all of them are HTML); a missing variable is an error, not "".
TEMPLATES = Environment(
    loader=PackageLoader("jobs.report", "templates"), autoescape=True, undefined=StrictUndefined,
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
)
REPORT_TEMPLATE = "report.html.j2"


def _when(timestamp: float | None) -> str:
    return utc_text(timestamp) if timestamp else ""


def _diff_lines(diff: str) -> list[dict[str, str]]:
    """The diff's lines, each with its CSS class: `add`, `del` or "" (context)."""
    return [{"css": "add" if line.startswith("+") else "del" if line.startswith("-") else "", "text": line}
            for line in diff.splitlines()]


def _row(attempt: dict[str, Any], best_n: int | None) -> dict[str, Any]:
    a = attempt
    warm = ""
    if a.get("warm_from") is not None:
        warm = f"warm-started from attempt {a['warm_from']}"
        if a.get("warm_epoch") is not None:
            warm += f" at epoch {a['warm_epoch']}"
    scored = a["metric_value"] is not None  # a number stays on one line; an error may wrap
    return {
        "n": a["n"],
        "css": "best" if a["n"] == best_n else "failed" if a["status"] == "failed" else "",
        "change": a["tweak"] or "as pushed",
        "warm": warm,
        "why": a.get("reason") or "",
        "scored": scored,
        "value": f"{a['metric_value']:.4f}" if scored else (a["error"] or a["status"]),
        "seconds": f"{(a['seconds'] or 0):.1f}",
        "restarts": a["restarts"],
        "log_tail": shown_log_tail(a) if a["status"] == "failed" else "",
        "warnings": captured(a, "warnings") or [],  # the script's own WARNING lines
    }


def _best(best: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    return {
        "n": best["n"],
        "value": f"{best['metric_value']:.4f}",
        "params": str(best["params"]),
        "artifact": best["artifact_path"] or "none saved",
        "artifact_source": captured(best, "artifact", "how") or "",
        "metric_source": captured(best, "metric_source") or "",
        "sha256": best["artifact_sha256"] or "",
        "notebook": str(notebook) if (notebook := handed_back_notebook(run, best)) and notebook.is_file() else "",
        # the winner's source is the pushed file's when there is no diff: only parameters changed
        # (listed), or nothing did
        "diff": _diff_lines(best["diff"]) if best["diff"] else [],
        "tweaks": [str(t) for t in best.get("tweaks") or []],
    }


def report_context(store: RunStore, run_id: int) -> dict[str, Any]:
    """Everything report.html.j2 shows, as text (escaped by the template) and base64 PNGs."""
    run = store.get_run(run_id)
    attempts = store.attempts(run_id)
    objective = Objective.of(run)
    best = best_attempt(attempts, objective)  # the best so far, while the run is running
    best_n = best["n"] if best else None
    metric_png = metric_plot_png(attempts, run["metric"], run["threshold"])
    try:  # the curves come from the scripts' history.json: an odd one costs the chart, not the report
        curves_png = curves_plot_png(attempts, run["metric"], best_n)
    except Exception:
        curves_png = None
    return {
        "run_id": run_id,
        "model_name": run["model_name"],
        "status": run["status"].replace("_", " "),
        "kind": run["kind"],
        "framework": run["framework"],
        "strategy": run["strategy"],
        "runtime": run["runtime"],
        "started": _when(run["started_at"]),
        "finished": _when(run["finished_at"]),
        "stop_reason": run["stop_reason"] or "",
        "metric": run["metric"],
        "comparison": objective.symbol,
        "threshold": f"{run['threshold']:g}",
        "metric_png": base64.b64encode(metric_png).decode("ascii"),
        "curves_png": base64.b64encode(curves_png).decode("ascii") if curves_png else "",
        "with_why": any(a.get("reason") for a in attempts),
        "rows": [_row(a, best_n) for a in attempts],
        "best": _best(best, run) if best else None,
    }


def render_report(store: RunStore, run_id: int) -> str:
    return TEMPLATES.get_template(REPORT_TEMPLATE).render(report_context(store, run_id))


def write_report(store: RunStore, run_id: int) -> Path:
    path = run_dir(store.get_run(run_id)) / "report.html"  # never the current directory
    path.write_text(render_report(store, run_id), encoding="utf-8")
    return path
