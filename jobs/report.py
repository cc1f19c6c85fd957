"""`report.html` per run: the attempts table, the metric per attempt plotted, the winning diff."""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

from jobs.plot import metric_plot_png
from jobs.store import RunStore

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
tr.best { background: #e8f5e9; } tr.failed { color: #a00; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; }
.add { color: #22863a; } .del { color: #b31d28; }
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


def render_report(store: RunStore, run_id: int) -> str:
    run = store.get_run(run_id)
    attempts = store.attempts(run_id)
    metric = run["metric"]
    best = next((a for a in attempts if a["n"] == run["best_attempt"]), None)
    rows = []
    for a in attempts:
        css = "best" if best and a["n"] == best["n"] else "failed" if a["status"] == "failed" else ""
        value = f"{a['metric_value']:.4f}" if a["metric_value"] is not None else html.escape(a["error"] or a["status"])
        rows.append(
            f'<tr class="{css}"><td>{a["n"]}</td><td>{html.escape(a["tweak"] or "as pushed")}</td>'
            f"<td>{value}</td><td>{(a['seconds'] or 0):.1f} s</td><td>{a['restarts']}</td></tr>"
        )
    plot = base64.b64encode(metric_plot_png(attempts, metric, run["threshold"])).decode()
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
            + (f"<pre>{_diff_html(best['diff'])}</pre>" if best["diff"] else "<p>None: the file as pushed won.</p>")
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>pushtune run {run_id}: {html.escape(run['model_name'])}</title>
<style>{STYLE}</style></head><body>
<h1>Run {run_id}: {html.escape(run['model_name'])} — {html.escape(run['status'].replace('_', ' '))}</h1>
<p>{html.escape(run['kind'])} model ({html.escape(run['framework'])}), {html.escape(run['strategy'])} strategy,
{html.escape(run['runtime'])} runtime. Started {_when(run['started_at'])}, finished {_when(run['finished_at'])}.
Stopped because: {html.escape(run['stop_reason'] or '')}.</p>
<img alt="{html.escape(metric)} per attempt" src="data:image/png;base64,{plot}">
<table><tr><th>attempt</th><th>change</th><th>{html.escape(metric)}</th><th>time</th><th>restarts</th></tr>
{''.join(rows)}</table>
{best_html}
</body></html>
"""


def write_report(store: RunStore, run_id: int) -> Path:
    run = store.get_run(run_id)
    path = Path(run["run_dir"]) / "report.html"
    path.write_text(render_report(store, run_id), encoding="utf-8")
    return path
