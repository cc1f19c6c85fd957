"""The mail for a run: a plain-text part and an HTML part with the metric chart inline (cid).

Structure: multipart/alternative [text/plain, multipart/related [text/html, image/png]].
Everything that comes from files, logs or the store is escaped in the HTML part.
"""

from __future__ import annotations

import json
import re
import socket
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from html import escape
from typing import Any

from notify.summary import RunSummary, format_seconds, format_value

MAX_DIFF_LINES = 300
MAX_ERROR_CHARS = 160
MAX_TWEAK_CHARS = 70

COLORS = {"passed": "#1a7f37", "below_threshold": "#9a6700", "failed": "#cf222e",
          "running": "#0969da", "interrupted": "#57606a"}


def _one_line(text: str | None, limit: int) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    # a traceback's last line names the exception; other messages read best from their first line
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _tweak(attempt: dict[str, Any]) -> str:
    return _one_line(attempt.get("tweak"), MAX_TWEAK_CHARS) or "(as pushed)"


def _outcome(attempt: dict[str, Any]) -> str:
    if attempt["status"] == "failed":
        return "failed: " + (_one_line(attempt.get("error"), MAX_ERROR_CHARS) or "no error recorded")
    return attempt["status"]


def _diff_lines(diff: str) -> tuple[list[str], int]:
    lines = diff.rstrip("\n").splitlines() if diff else []
    return lines[:MAX_DIFF_LINES], max(0, len(lines) - MAX_DIFF_LINES)


def _facts(summary: RunSummary) -> list[tuple[str, str]]:
    """(label, value) pairs about the push, shown at the top of both parts."""
    run = summary.run
    pushed = run["model_path"] + (f" @ {run['git_commit'][:12]}" if run.get("git_commit") else "")
    took = (run["finished_at"] or datetime.now().timestamp()) - run["started_at"]
    return [
        ("pushed file", pushed),
        ("model", f"{run['kind']} ({run['framework']})"),
        ("tuning", f"{run['strategy']} strategy, {run['runtime']} runtime, "
                   f"{len(summary.attempts)} attempts in {format_seconds(took)}"),
        ("goal", f"{run['metric']} {'≤' if run['mode'] == 'min' else '≥'} {format_value(run['threshold'])}"),
    ]


def _where(summary: RunSummary) -> list[tuple[str, str]]:
    """(label, value) pairs telling how to get the model."""
    rows: list[tuple[str, str]] = []
    best = summary.best
    if best and best.get("artifact_path"):
        rows.append(("model file", best["artifact_path"]))
        rows.append(("sha256", best.get("artifact_sha256") or "—"))
    elif best:
        rows.append(("model file", f"none saved by attempt {best['n']} (save model.keras, model.joblib … "
                                   "in $PUSHTUNE_OUTPUT)"))
    if best and best.get("dir"):
        rows.append(("winning source", f"{best['dir']}/model.py"))
    if summary.build_url:
        rows.append(("Jenkins build", summary.build_url))
    if summary.run.get("run_dir"):
        rows.append(("run directory", summary.run["run_dir"]))
    return rows


# plain text


def _text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _attempt_rows(summary: RunSummary) -> list[list[str]]:
    best_n = summary.best["n"] if summary.best else None
    return [
        [f"{a['n']}{' ★' if a['n'] == best_n else ''}", _tweak(a), format_value(a["metric_value"]),
         format_seconds(a["seconds"]), _outcome(a)]
        for a in summary.attempts
    ]


def _heading(title: str) -> list[str]:
    return ["", title, "-" * len(title)]


def render_text(summary: RunSummary) -> str:
    out = [f"{summary.run['model_name']}: {summary.headline()} (run {summary.run_id})", ""]
    out += [f"{label + ':':<16}{value}" for label, value in _facts(summary)]
    out += _heading("Get the model")
    out += [f"{label + ':':<16}{value}" for label, value in _where(summary)] or ["no attempt produced a model"]
    out += _heading("Attempts (★ = best)")
    out += _text_table(["n", "tweak", summary.metric, "time", "status"], _attempt_rows(summary))
    best = summary.best
    if best:
        out += _heading(f"Best parameters (attempt {best['n']})")
        out += [f"{k} = {json.dumps(v)}" for k, v in sorted(best["params"].items())] or ["(defaults of the script)"]
        lines, hidden = _diff_lines(best["diff"])
        out += _heading(f"Winning change (attempt {best['n']} against the pushed file)")
        out += lines or ["no source change: the file as pushed won"]
        if hidden:
            out.append(f"… {hidden} more lines in {best.get('dir') or 'the attempt directory'}/diff.patch")
    tips = summary.suggestions()
    if tips:
        out += _heading("What to try next") + [f"- {tip}" for tip in tips]
    out += ["", f"Re-send this mail: pushtune notify {summary.run_id}", ""]
    return "\n".join(out)


# HTML

CELL = "padding:4px 8px;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:top"
MONO = "font-family:SFMono-Regular,Consolas,'Liberation Mono',Menlo,monospace;font-size:12px"


def _html_pairs(rows: list[tuple[str, str]], mono_labels: set[str] = frozenset()) -> str:
    cells = []
    for label, value in rows:
        shown = escape(value)
        if value.startswith(("http://", "https://")):
            shown = f'<a href="{escape(value, quote=True)}">{shown}</a>'
        style = f"{CELL};{MONO}" if label in mono_labels else CELL
        cells.append(f'<tr><th style="{CELL};color:#57606a;font-weight:normal;white-space:nowrap">'
                     f"{escape(label)}</th><td style=\"{style}\">{shown}</td></tr>")
    return f'<table style="border-collapse:collapse">{"".join(cells)}</table>'


def _html_attempts(summary: RunSummary) -> str:
    best_n = summary.best["n"] if summary.best else None
    head = "".join(f'<th style="{CELL};background:#f6f8fa">{escape(h)}</th>'
                   for h in ("n", "tweak", summary.metric, "time", "status"))
    rows = []
    for a in summary.attempts:
        background = "background:#dafbe1;font-weight:bold;" if a["n"] == best_n else ""
        status_color = "color:#cf222e;" if a["status"] == "failed" else ""
        cells = [f"{a['n']}{' ★' if a['n'] == best_n else ''}", _tweak(a), format_value(a["metric_value"]),
                 format_seconds(a["seconds"])]
        nowrap = (True, False, True, True)
        tds = "".join(f'<td style="{CELL}{";white-space:nowrap" if keep else ""}">{escape(c)}</td>'
                      for c, keep in zip(cells, nowrap))
        tds += f'<td style="{CELL};{status_color}">{escape(_outcome(a))}</td>'
        rows.append(f'<tr style="{background}">{tds}</tr>')
    return f'<table style="border-collapse:collapse;width:100%"><tr>{head}</tr>{"".join(rows)}</table>'


def _html_diff(diff: str) -> str:
    lines, hidden = _diff_lines(diff)
    if not lines:
        return "<p>No source change: the file as pushed won.</p>"
    styled = []
    for line in lines:
        if line.startswith(("+++", "---")):
            color = "color:#57606a;"
        elif line.startswith("+"):
            color = "background:#dafbe1;"
        elif line.startswith("-"):
            color = "background:#ffebe9;"
        elif line.startswith("@@"):
            color = "color:#8250df;"
        else:
            color = ""
        styled.append(f'<span style="{color}display:block">{escape(line) or " "}</span>')
    more = f"<p>… {hidden} more lines in diff.patch</p>" if hidden else ""
    return (f'<pre style="{MONO};background:#f6f8fa;padding:8px;border:1px solid #d0d7de;'
            f'overflow-x:auto;white-space:pre">{"".join(styled)}</pre>{more}')


def _section(title: str, body: str) -> str:
    return f'<h2 style="font-size:16px;margin:20px 0 6px">{escape(title)}</h2>{body}'


def render_html(summary: RunSummary, plot_cid: str) -> str:
    """The HTML part; `plot_cid` is the Content-ID (without <>) of the inline chart."""
    color = COLORS.get(summary.run["status"], "#57606a")
    parts = [
        f'<div style="border-left:6px solid {color};padding:8px 12px;background:#f6f8fa">'
        f'<div style="font-size:13px;color:#57606a">pushtune · run {summary.run_id}</div>'
        f'<div style="font-size:20px;font-weight:bold">{escape(summary.run["model_name"])}</div>'
        f'<div style="font-size:16px;color:{color};font-weight:bold">{escape(summary.headline())}</div></div>',
        f'<div style="margin-top:8px">{_html_pairs(_facts(summary), {"pushed file"})}</div>',
    ]
    where = _where(summary)
    parts.append(_section("Get the model", _html_pairs(where, {"model file", "sha256", "winning source", "run directory"})
                          if where else "<p>No attempt produced a model.</p>"))
    parts.append(_section(f"{summary.metric} per attempt",
                          f'<img src="cid:{escape(plot_cid, quote=True)}" alt="{escape(summary.metric)} per attempt" '
                          'width="640" style="max-width:100%">'))
    parts.append(_section("Attempts (★ = best)", _html_attempts(summary)))
    best = summary.best
    if best:
        params = [(k, json.dumps(v)) for k, v in sorted(best["params"].items())]
        parts.append(_section(f"Best parameters (attempt {best['n']})",
                              _html_pairs(params, {k for k, _ in params}) if params
                              else "<p>The script's defaults.</p>"))
        parts.append(_section(f"Winning change (attempt {best['n']} against the pushed file)", _html_diff(best["diff"])))
    tips = summary.suggestions()
    if tips:
        items = "".join(f"<li>{escape(tip)}</li>" for tip in tips)
        parts.append(_section("What to try next", f"<ul>{items}</ul>"))
    parts.append(f'<p style="color:#57606a;font-size:12px;margin-top:24px">Re-send this mail: '
                 f'<code>pushtune notify {summary.run_id}</code></p>')
    body = "".join(parts)
    return ('<!DOCTYPE html><html><head><meta charset="utf-8">'
            f"<title>{escape(summary.subject())}</title></head>"
            '<body style="font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:14px;'
            f'color:#1f2328;max-width:860px;margin:0 auto;padding:12px">{body}</body></html>')


def build_message(summary: RunSummary, sender: str, recipients: list[str] | tuple[str, ...]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = summary.subject()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(datetime.now().astimezone())
    message["Message-ID"] = make_msgid("pushtune", domain=_domain(sender))
    message["X-Pushtune-Run"] = str(summary.run_id)
    message.set_content(render_text(summary))
    plot_cid = make_msgid("plot", domain=_domain(sender))
    message.add_alternative(render_html(summary, plot_cid[1:-1]), subtype="html")
    from jobs.plot import metric_plot_png  # matplotlib costs ~0.5 s to import: only when a mail is built

    png = metric_plot_png(summary.attempts, summary.metric, summary.threshold)
    html_part = message.get_payload()[1]
    metric = re.sub(r"[^\w.-]+", "_", summary.metric, flags=re.ASCII)  # a header parameter
    html_part.add_related(png, "image", "png", cid=plot_cid, filename=f"run-{summary.run_id}-{metric}.png",
                          disposition="inline")
    return message


def _domain(address: str) -> str:
    domain = address.rsplit("@", 1)[-1].strip(" >")
    return domain or socket.gethostname()
