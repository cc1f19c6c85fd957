"""The mail for a run: a plain-text part and an HTML part with the metric chart inline (cid).

Structure: multipart/alternative [text/plain, multipart/related [text/html, image/png]].
The HTML part is notify/templates/mail.html.j2, rendered with autoescape: everything that comes
from files, logs or the store reaches it as text and is escaped by Jinja2.
"""

from __future__ import annotations

import json
import re
import socket
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from jobs.report.plot import metric_plot_png
from notify.summary import RunSummary, format_seconds, format_value

MAX_DIFF_LINES = 300
MAX_ERROR_CHARS = 160
MAX_TWEAK_CHARS = 70

# autoescape for every template (all of them are HTML); a missing variable is an error, not "".
TEMPLATES = Environment(
    loader=PackageLoader("notify", "templates"), autoescape=True, undefined=StrictUndefined,
    trim_blocks=True, lstrip_blocks=True,
)
MAIL_TEMPLATE = "mail.html.j2"

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
        ("goal", f"{run['metric']} {summary.objective.symbol} {format_value(run['threshold'])}"),
    ] + ([("production", summary.production)] if summary.production else [])


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
    if summary.notebook:
        rows.append(("notebook", summary.notebook))
    if summary.build_url:
        rows.append(("Jenkins build", summary.build_url))
    if summary.run.get("run_dir"):
        rows.append(("run directory", summary.run["run_dir"]))
    return rows


# plain text


def _text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
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


def _pairs(rows: list[tuple[str, str]], mono_labels: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """(label, value) rows for the template's `pairs` table: a web address becomes a link."""
    return [{"label": label, "value": value, "mono": label in mono_labels,
             "link": value.startswith(("http://", "https://"))} for label, value in rows]


def _diff_kind(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "meta"
    if line.startswith("+"):
        return "add"
    if line.startswith("-"):
        return "del"
    return "hunk" if line.startswith("@@") else ""


def html_context(summary: RunSummary, plot_cid: str) -> dict[str, Any]:
    """Everything mail.html.j2 shows, as text: the template escapes all of it."""
    best_n = summary.best["n"] if summary.best else None
    best = None
    if summary.best:
        lines, hidden = _diff_lines(summary.best["diff"])
        params = [(k, json.dumps(v)) for k, v in sorted(summary.best["params"].items())]
        best = {
            "n": best_n,
            "params": _pairs(params, {k for k, _ in params}),
            "diff": [{"kind": _diff_kind(line), "text": line} for line in lines],
            "hidden": hidden,
        }
    return {
        "subject": summary.subject(),
        "run_id": summary.run_id,
        "color": COLORS.get(summary.run["status"], "#57606a"),
        "model_name": summary.run["model_name"],
        "headline": summary.headline(),
        "facts": _pairs(_facts(summary), {"pushed file"}),
        "where": _pairs(_where(summary), {"model file", "sha256", "winning source", "notebook", "run directory"}),
        "metric": summary.metric,
        "plot_cid": plot_cid,
        "attempts": [
            {"n": a["n"], "best": a["n"] == best_n, "tweak": _tweak(a), "value": format_value(a["metric_value"]),
             "seconds": format_seconds(a["seconds"]), "failed": a["status"] == "failed", "outcome": _outcome(a)}
            for a in summary.attempts
        ],
        "best": best,
        "tips": summary.suggestions(),
    }


def render_html(summary: RunSummary, plot_cid: str) -> str:
    """The HTML part; `plot_cid` is the Content-ID (without <>) of the inline chart."""
    return TEMPLATES.get_template(MAIL_TEMPLATE).render(html_context(summary, plot_cid))


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

    png = metric_plot_png(summary.attempts, summary.metric, summary.threshold)
    html_part = list(message.iter_parts())[1]  # multipart/alternative: [text/plain, text/html]
    metric = re.sub(r"[^\w.-]+", "_", summary.metric, flags=re.ASCII)  # a header parameter
    html_part.add_related(png, "image", "png", cid=plot_cid, filename=f"run-{summary.run_id}-{metric}.png",
                          disposition="inline")
    return message


def _domain(address: str) -> str:
    domain = address.rsplit("@", 1)[-1].strip(" >")
    return domain or socket.gethostname()
