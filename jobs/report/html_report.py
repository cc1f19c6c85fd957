"""`report.html` per run: the attempts table (with why each was chosen), the metric per attempt
plotted, the training curves per epoch, the winning diff. It renders a run's outcome
(`jobs.report.outcome.RunOutcome`), read from the store once by whoever asks for the page.

The page is jobs/report/templates/report.html.j2, rendered with autoescape: every value this module
hands it is plain text (model and metric names, tweaks, reasons, errors, the diff …) and is
escaped by Jinja2, so nothing a pushed script or the store holds can become markup. The charts
are PNGs that pushtune draws itself (jobs/report/plot.py): data: URIs in the page pushtune writes, so it
is one self-contained file, or files beside the page for a server whose Content-Security-Policy
forbids data: images and inline styles (`report_files`: Jenkins' archive and HTML Publisher)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from jobs.clock import utc_text
from jobs.report.outcome import RunOutcome, shown_log_tail
from jobs.report.plot import curves_plot_png, metric_plot_png
from jobs.store.run_store import run_dir
from jobs.train.metrics import captured

# autoescape for every template (all of them are HTML); a missing variable is an error, not "".
TEMPLATES = Environment(
    loader=PackageLoader("jobs.report", "templates"), autoescape=True, undefined=StrictUndefined,
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
)
REPORT_TEMPLATE = "report.html.j2"
STYLESHEET_TEMPLATE = "report.css.j2"


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


def _best(best: dict[str, Any], notebook: str | None) -> dict[str, Any]:
    return {
        "n": best["n"],
        "value": f"{best['metric_value']:.4f}",
        "params": str(best["params"]),
        "artifact": best["artifact_path"] or "none saved",
        "artifact_source": captured(best, "artifact", "how") or "",
        "metric_source": captured(best, "metric_source") or "",
        "sha256": best["artifact_sha256"] or "",
        "notebook": notebook or "",
        # the winner's source is the pushed file's when there is no diff: only parameters changed
        # (listed), or nothing did
        "diff": _diff_lines(best["diff"]) if best["diff"] else [],
        "tweaks": [str(t) for t in best.get("tweaks") or []],
    }


def report_context(outcome: RunOutcome) -> dict[str, Any]:
    """Everything report.html.j2 shows, as text (escaped by the template), the charts inline."""
    context, charts = _context(outcome)
    return {**context, "stylesheet": "",
            **{f"{name}_src": f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}" if png else ""
               for name, png in charts.items()}}


def _context(outcome: RunOutcome) -> tuple[dict[str, Any], dict[str, bytes | None]]:
    """The page's text, and its charts as PNGs by name (metric, curves; None: no chart)."""
    run, attempts, best_n = outcome.run, outcome.attempts, outcome.best_n
    metric_png = metric_plot_png(attempts, run["metric"], run["threshold"])
    try:  # the curves come from the scripts' history.json: an odd one costs the chart, not the report
        curves_png = curves_plot_png(attempts, run["metric"], best_n)
    except Exception:
        curves_png = None
    return {
        "run_id": outcome.run_id,
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
        "comparison": outcome.objective.symbol,
        "threshold": f"{run['threshold']:g}",
        "with_why": any(a.get("reason") for a in attempts),
        "rows": [_row(a, best_n) for a in attempts],
        "best": _best(outcome.best, outcome.notebook) if outcome.best else None,
    }, {"metric": metric_png, "curves": curves_png}


def render_report(outcome: RunOutcome) -> str:
    return TEMPLATES.get_template(REPORT_TEMPLATE).render(report_context(outcome))


def report_files(outcome: RunOutcome) -> dict[str, bytes]:
    """report.html for a server whose Content-Security-Policy allows only same-origin images and
    stylesheets (Jenkins' DirectoryBrowserSupport.DEFAULT_CSP_VALUE: "sandbox allow-same-origin;
    default-src 'none'; img-src 'self'; style-src 'self';"), with the files it links: the
    stylesheet and the charts beside it. The same page as `render_report`'s, by file name."""
    context, charts = _context(outcome)
    files = {f"{name}.png": png for name, png in charts.items() if png}
    page = TEMPLATES.get_template(REPORT_TEMPLATE).render(
        {**context, "stylesheet": "report.css", **{f"{name}_src": f"{name}.png" if png else ""
                                                   for name, png in charts.items()}})
    stylesheet = TEMPLATES.get_template(STYLESHEET_TEMPLATE).render()
    return {"report.html": page.encode("utf-8"), "report.css": stylesheet.encode("utf-8"), **files}


def write_report(outcome: RunOutcome) -> Path:
    """The page, written as report.html in the run's directory (never the current directory)."""
    path = run_dir(outcome.run) / "report.html"
    path.write_text(render_report(outcome), encoding="utf-8")
    return path
