"""`pushtune runs` and `pushtune show RUN_ID`: the run history in the store."""

from __future__ import annotations

import argparse
import json

from rich.table import Table
from rich.text import Text

from jobs import exit_codes
from jobs.clock import utc_text
from jobs.commands import metric_text, output_console, said_no_store_yet
from jobs.commands.run import print_summary
from jobs.errors import UserError
from jobs.loop import summarize
from jobs.store.run_store import RunStore, no_store_yet
from jobs.tune.objective import Objective, best_attempt


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list recorded runs")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=list_runs)
    p = subparsers.add_parser("show", help="one run: its attempts and diffs")
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=show_run)


def list_runs(args: argparse.Namespace) -> int:
    if said_no_store_yet(args.json):
        return exit_codes.OK
    store = RunStore.open()
    runs = store.list_runs(args.limit)
    if args.json:
        print(json.dumps([summarize(store, r["id"]) for r in runs], indent=2))
        return exit_codes.OK
    table = Table()
    for column in ("run", "started", "model", "kind", "status", "best", "threshold", "attempts"):
        table.add_column(column)
    for r in runs:
        attempts = store.attempts(r["id"])
        objective = Objective.of(r)
        best = best_attempt(attempts, objective)
        table.add_row(  # Text: a name is shown as is, never read as markup
            str(r["id"]), utc_text(r["started_at"], seconds=False),
            Text(r["model_name"]), Text(r["kind"]), Text(r["status"]),
            metric_text(best["metric_value"] if best else None),
            f"{objective.symbol} {r['threshold']:g}", str(len(attempts)),
        )
    output_console().print(table)
    return exit_codes.OK


def _restarts(store: RunStore, run_id: int, n: int) -> list[dict]:
    """Each restart of the attempt: when, why, its exit code, the epoch it resumed from, by whom."""
    fields = ("at", "reason", "exit_code", "resumed_epoch", "actor")
    return [{k: r[k] for k in fields} for r in store.restarts(run_id, n)]


def show_run(args: argparse.Namespace) -> int:
    nothing = no_store_yet()
    if nothing:
        raise UserError(f"no run {args.run_id}: {nothing}")
    store = RunStore.open()
    summary = summarize(store, args.run_id)
    attempts = store.attempts(args.run_id)
    if args.json:
        summary["attempts"] = [
            {**s, "reason": a.get("reason"), "warm_from": a.get("warm_from"), "warm_epoch": a.get("warm_epoch"),
             "diff": a["diff"], "params": a["params"], "status": a["status"], "restarts": a["restarts"],
             "restart_events": _restarts(store, args.run_id, a["n"]),
             "log_tail": a["log_tail"], "dir": a["dir"], "curve": a.get("curve"),
             "capture": a.get("capture")}
            # not strict: read apart, so a live run may have added an attempt in between
            for s, a in zip(summary["attempts"], attempts, strict=False)
        ]
        print(json.dumps(summary, indent=2))
        return exit_codes.OK

    console = output_console()
    print_summary(summary, console)
    for a in attempts:
        if a["diff"]:
            console.print(Text.assemble("\n", (f"attempt {a['n']}", "bold"), f": {a['tweak'] or ''}"))
            console.print(Text(a["diff"]))
    return exit_codes.OK
