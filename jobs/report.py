"""`report.html` per run: the attempts table (with why each was chosen), the metric per attempt
plotted, the training curves per epoch, the winning diff."""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

from jobs.plot import curves_plot_png, metric_plot_png
from jobs.store import RunStore, run_dir

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
tr.best { background: #e8f5e9; } tr.failed { color: #a00; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; }
.add { color: #22863a; } .del { color: #b31d28; }
td.why { max-width: 32em; } td.num { white-space: nowrap; } .warm { color: #555; font-size: .9em; }
img { max-width: 100%; height: auto; }
"""


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        css = "add" if line.startswith("+") else "del" if line.startswith("-") else ""
        text = html.escape(line)
        lines.append(f'<span class="{css}">{text}</span>' if css else text)
    return "\n".join(lines)


def _no_diff_html(best: dict) -> str:
    """The winner's source is the pushed file's: either nothing changed, or only parameters."""
    if not best.get("tweaks"):
        return "<p>None: the file as pushed won.</p>"
    items = "".join(f"<li>{html.escape(str(t))}</li>" for t in best["tweaks"])
    return f"<p>The source is unchanged; the parameters changed:</p><ul>{items}</ul>"


def render_report(store: RunStore, run_id: int) -> str:
    run = store.get_run(run_id)
    attempts = store.attempts(run_id)
    metric = html.escape(run["metric"])  # shown only as HTML text; the store keeps the name
    best = next((a for a in attempts if a["n"] == run["best_attempt"]), None)
    with_why = any(a.get("reason") for a in attempts)
    rows = []
    for a in attempts:
        css = "best" if best and a["n"] == best["n"] else "failed" if a["status"] == "failed" else ""
        value = f"{a['metric_value']:.4f}" if a["metric_value"] is not None else html.escape(a["error"] or a["status"])
        change = html.escape(a["tweak"] or "as pushed")
        if a.get("warm_from") is not None:
            warm = f"warm-started from attempt {a['warm_from']}"
            if a.get("warm_epoch") is not None:
                warm += f" at epoch {a['warm_epoch']}"
            change += f'<br><span class="warm">{html.escape(warm)}</span>'
        value_css = ' class="num"' if a["metric_value"] is not None else ""  # an error may wrap
        why = f'<td class="why">{html.escape(a.get("reason") or "")}</td>' if with_why else ""
        rows.append(
            f'<tr class="{css}"><td>{a["n"]}</td><td>{change}</td>{why}'
            f'<td{value_css}>{value}</td><td class="num">{(a["seconds"] or 0):.1f} s</td><td>{a["restarts"]}</td></tr>'
        )
    plot = base64.b64encode(metric_plot_png(attempts, run["metric"], run["threshold"])).decode()
    try:  # the curves come from the scripts' history.json: an odd one costs the chart, not the report
        curves_png = curves_plot_png(attempts, run["metric"], best["n"] if best else None)
    except Exception:
        curves_png = None
    curves_html = ""
    if curves_png:
        curves = base64.b64encode(curves_png).decode()
        curves_html = (
            "<h2>Training curves</h2>"
            f'<img class="curves" alt="training curves per epoch, one line per attempt" '
            f'src="data:image/png;base64,{curves}">'
        )
    comparison = "≥" if run["mode"] == "max" else "≤"
    best_html = "<p>No attempt reported the metric.</p>"
    if best:
        artifact = html.escape(best["artifact_path"] or "none saved")
        best_html = (
            f"<p>Best: attempt {best['n']}, {metric} {best['metric_value']:.4f}"
            f" (threshold {comparison} {run['threshold']:g}).</p>"
            f"<p>Parameters: <code>{html.escape(str(best['params']))}</code></p>"
            f"<p>Model artifact: <code>{artifact}</code>"
            + (f"<br>sha256 <code>{best['artifact_sha256']}</code>" if best["artifact_sha256"] else "")
            + "</p><h2>Winning change against the pushed file</h2>"
            + (f"<pre>{_diff_html(best['diff'])}</pre>" if best["diff"] else _no_diff_html(best))
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>pushtune run {run_id}: {html.escape(run['model_name'])}</title>
<style>{STYLE}</style></head><body>
<h1>Run {run_id}: {html.escape(run['model_name'])} — {html.escape(run['status'].replace('_', ' '))}</h1>
<p>{html.escape(run['kind'])} model ({html.escape(run['framework'])}), {html.escape(run['strategy'])} strategy,
{html.escape(run['runtime'])} runtime. Started {_when(run['started_at'])}, finished {_when(run['finished_at'])}.
Stopped because: {html.escape(run['stop_reason'] or '')}.</p>
<img alt="{metric} per attempt" src="data:image/png;base64,{plot}">
<table><tr><th>attempt</th><th>change</th>{'<th>why</th>' if with_why else ''}<th>{metric}</th><th>time</th><th>restarts</th></tr>
{''.join(rows)}</table>
{curves_html}
{best_html}
</body></html>
"""


def write_report(store: RunStore, run_id: int) -> Path:
    path = run_dir(store.get_run(run_id)) / "report.html"  # never the current directory
    path.write_text(render_report(store, run_id), encoding="utf-8")
    return path
