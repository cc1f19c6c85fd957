"""`pushtune models|promote|rollback|deploy|retrain|serve`: model versions and serving them.

Exit codes of `pushtune promote`: 0 the version is production; 3 it stays a candidate (it does
not beat production: the line says why); 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

from rich.table import Table
from rich.text import Text

from jobs import exit_codes
from jobs.commands import metric_text, output_console, said_no_store_yet
from jobs.deploy import versions
from jobs.errors import UserError
from jobs.loop import drive, run_options, start_run
from jobs.mirror.mlflow import mirror_production
from jobs.serve.server import serve as run_server
from jobs.store.run_store import RunStore
from jobs.train.runtimes import get_runtime
from notify import load_settings, notify_run


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("models", help="model versions: production, candidates, history",
                              description="Per model name: the production version, then each version "
                                          "with its metric, sha256, run and date.")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these models")
    p.add_argument("--history", action="store_true", help="also every change of production: who, when, why")
    p.add_argument("--json", action="store_true",
                   help='a JSON list of {"name", "production", "versions", "events"}')
    p.set_defaults(func=list_models)

    p = subparsers.add_parser("promote", help="make a run's model version production",
                              description="Register the run's best model (when it is not yet) and make it "
                                          "production if it beats production on the same metric and mode; "
                                          "with --force, whatever it scores. Exit 3 when it stays a candidate.")
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("--force", action="store_true", help="promote even when it does not beat production "
                                                        "(and register a run that did not pass)")
    p.add_argument("--reason", help="why, kept with the change")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=promote)

    p = subparsers.add_parser("rollback", help="make an earlier version production again",
                              description="Make an earlier version of NAME production again: --to VERSION, "
                                          "else the previous production version.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--to", type=version_number, metavar="VERSION",
                   help="this version, v2 or 2 (default: the previous production one)")
    p.add_argument("--reason", help="why, kept with the change")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=rollback)

    p = subparsers.add_parser("deploy", help="what a passing run's end does: register, promote if better",
                              description="Register a passing run's best model and promote it if it beats "
                                          "production (unless the run was started with --no-promote). "
                                          "Idempotent; a run that did not pass is left alone (exit 0).")
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=deploy)

    p = subparsers.add_parser("retrain", help="re-run each production model's file from its recorded commit",
                              description="For each production model (or NAME): check its file out of its "
                                          "recorded commit (git show COMMIT:PATH), run it through the loop "
                                          "with the options of the run that made it, register the result and "
                                          "promote it if it beats production, and mail it (--notify).")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these models (default: every production model)")
    p.add_argument("--repo", metavar="DIR", help="the model repository checkout (default: the one recorded)")
    p.add_argument("--data", metavar="DIR", help="the data directory (default: the one the run used)")
    p.add_argument("--runtime", choices=("local", "docker", "auto"), help="default: the one the run used")
    p.add_argument("--max-attempts", type=int, metavar="N", help="default: the run's")
    p.add_argument("--notify", action="append", default=[], metavar="ADDR",
                   help="mail each result to ADDR (an empty value: PUSHTUNE_MAIL_TO)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=retrain)

    p = subparsers.add_parser("serve", help="serve the production models over HTTP (FastAPI + uvicorn)",
                              description="GET /health, GET /models, GET /metrics, POST /models/NAME/predict "
                                          "{\"instances\": [[...]]}. A promotion or rollback is picked up "
                                          "within one poll, without a restart. With PUSHTUNE_SERVE_TOKEN set, "
                                          "predictions and /models need 'Authorization: Bearer <token>'.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    p.add_argument("--poll", type=float, default=0.5, metavar="SECONDS",
                   help="how often the production versions are read and loaded (default 0.5); "
                        "predictions use the last read")
    p.set_defaults(func=serve)


def version_number(text: str) -> int:
    """A version as people write it: `v2` or `2`."""
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a version such as v2 or 2")
    return int(digits)


def _served(v: dict) -> str:
    """The form the server loads: "onnx 1a2b3c4d5e6f" (its sha256), "keras (safe mode)", "not servable: …"."""
    return f"onnx {v['onnx_sha256'][:12]}" if v["served_as"] == "onnx" and v["onnx_sha256"] else v["served_as"]


def _table_of(entry: dict) -> Table:
    production = entry["production"]
    title = f"{entry['name']}: production v{production}" if production else f"{entry['name']}: no production version"
    table = Table(title=Text(title), title_justify="left")
    for column in ("version", "status", "metric", "sha256", "served as", "run", "created (UTC)", "reason"):
        table.add_column(column, overflow="fold", no_wrap=column in ("version", "sha256", "created (UTC)"))
    for v in entry["versions"]:
        mark = " ★" if v["status"] == "production" else ""
        table.add_row(f"v{v['version']}{mark}", v["status"], Text(f"{v['metric']} {metric_text(v['value'])}"),
                      v["sha256"][:12], Text(_served(v)), f"{v['run_id']}/{v['attempt']}",
                      (v["created_at"] or "")[:16].replace("T", " "),
                      Text(v["reason"] or ""))
    return table


def list_models(args: argparse.Namespace) -> int:
    if said_no_store_yet(args.json):
        return exit_codes.OK
    store = RunStore.open()
    entries = versions.listing(store, args.names or None)
    if args.json:
        print(json.dumps(entries, indent=2))
        return exit_codes.OK
    console = output_console()
    if not entries:
        console.print("no model versions yet: a passing run registers its best model")
        return exit_codes.OK
    for entry in entries:
        if entry["versions"]:
            console.print(_table_of(entry))
        else:  # only runs that registered nothing (the history says why)
            console.print(Text(f"{entry['name']}: no version registered"))
        if args.history:
            for e in entry["events"]:
                version = f" v{e['version']}" if e["version"] is not None else ""
                was = f" (was v{e['previous']})" if e["previous"] is not None and e["action"] != "kept" else ""
                console.print(Text(f"  {e['at'][:19].replace('T', ' ')} UTC  {e['actor']}: "
                                   f"{e['action'].replace('_', ' ')}{version}{was}: {e['reason']}"))
    return exit_codes.OK


def _report(deployment: versions.Deployment, as_json: bool) -> None:
    if as_json:
        print(json.dumps(deployment.as_dict(), indent=2))
    else:
        print(deployment.describe())


def promote(args: argparse.Namespace) -> int:
    store = RunStore.open()
    deployment = versions.promote_run(store, args.run_id, force=args.force, reason=args.reason)
    mirror_production(store, deployment.name)
    _report(deployment, args.json)
    return exit_codes.OK if deployment.status == "production" else exit_codes.BELOW_THRESHOLD


def rollback(args: argparse.Namespace) -> int:
    store = RunStore.open()
    deployment = versions.rollback(store, args.name, args.to, reason=args.reason)
    mirror_production(store, deployment.name)
    _report(deployment, args.json)
    return exit_codes.OK


def deploy(args: argparse.Namespace) -> int:
    store = RunStore.open()
    try:
        deployment = versions.deploy_run(store, args.run_id)
        if deployment is not None:
            mirror_production(store, deployment.name)
    except versions.NothingToRegister as exc:  # a passing run that saved no model: nothing to do
        deployment, line = None, f"{exc}: nothing to deploy"
    else:
        run = store.get_run(args.run_id)
        line = f"run {args.run_id} did not pass ({run['status'].replace('_', ' ')}): nothing to deploy"
    if deployment is None:
        print(json.dumps({"run_id": args.run_id, "deployed": None, "reason": line}) if args.json else line)
        return exit_codes.OK
    _report(deployment, args.json)
    return exit_codes.OK


def retrain(args: argparse.Namespace) -> int:
    if args.max_attempts is not None and args.max_attempts < 1:
        raise UserError("--max-attempts must be at least 1")
    store = RunStore.open()
    production = store.production_versions()
    for name in args.names:
        versions.check_name(name)
        if name not in production:
            raise UserError(f"{name} has no production version to retrain "
                            f"(production models: {', '.join(production) or 'none'})")
    chosen = [production[name] for name in (args.names or sorted(production))]
    if not chosen:
        print("no production model to retrain", file=sys.stderr)
        return exit_codes.OK
    repo = Path(args.repo).resolve() if args.repo else None
    notify = [address for address in args.notify if address.strip()]
    wants_mail = bool(args.notify)
    if wants_mail:
        load_settings(notify or None)  # bad mail settings are found before any training
    results, code = [], exit_codes.OK
    for record in chosen:
        try:
            result = _retrain_one(store, record, args, repo, notify, wants_mail)
        except UserError as exc:  # this model cannot be retrained here: the others still are
            print(f"pushtune: error: {record['name']} v{record['version']}: not retrained: {exc}", file=sys.stderr)
            results.append({"name": record["name"], "retrained": record["version"], "run_id": None,
                            "status": "not retrained", "error": str(exc)})
            code = exit_codes.USER_ERROR if code in (exit_codes.OK, exit_codes.BELOW_THRESHOLD) else code
            continue
        results.append(result)
        status_code = exit_codes.for_status(result["status"])
        if status_code != exit_codes.OK and code in (exit_codes.OK, exit_codes.BELOW_THRESHOLD):
            code = status_code
    if args.json:
        print(json.dumps(results, indent=2))
    return code


def _retrain_one(store: RunStore, record: dict, args: argparse.Namespace, repo: Path | None,
                 notify: list[str], wants_mail: bool) -> dict:
    """Retrain one production version: its file from its commit, through the loop, mailed."""
    original = store.get_run(record["run_id"])
    options = run_options(original)
    options.name, options.promote, options.chain = record["name"], True, False
    options.notify = notify
    options.jenkins_build_url = None
    if args.data:
        options.data = str(Path(args.data).resolve())
    if args.runtime:
        options.runtime = args.runtime
    if args.max_attempts:
        options.max_attempts = args.max_attempts
    with tempfile.TemporaryDirectory(prefix="pushtune-retrain-") as tmp:
        path, where, source = versions.retrain_source(record, original, Path(tmp), repo)
        print(f"{record['name']} v{record['version']}: retraining {where}", file=sys.stderr, flush=True)
        runtime = get_runtime(options.runtime, **options.runtime_options)
        options.runtime = runtime.name
        run_id = start_run(store, path, options)
        run = store.get_run(run_id)
        store.update_run(run_id, git_commit=record["git_commit"], options={
            **run["options"], versions.SOURCE_OPTION: source,
            versions.RETRAIN_OPTION: {"name": record["name"], "version": record["version"]}})
        summary = drive(store, run_id, runtime)
    if wants_mail:  # never fails the retrain: a failure is recorded on the run and printed

        try:
            sent = notify_run(store, run_id, notify or None)
        except UserError as exc:
            store.add_notification(run_id, "email", "failed", recipients=notify, error=str(exc))
            print(f"pushtune: mail for run {run_id} not sent: {exc}", file=sys.stderr)
        else:
            if sent.sent:
                print(sent.describe(run_id), file=sys.stderr)
    line = versions.production_line(store, run_id) or "no model version registered"
    print(f"run {run_id}: {summary['status'].replace('_', ' ')}: {line}", file=sys.stderr)
    return {"name": record["name"], "retrained": record["version"], "run_id": run_id,
            "status": summary["status"], "deployment": summary.get("deployment"), "production": line}


def serve(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.poll) and 0.05 <= args.poll <= 3600):
        raise UserError(f"--poll {args.poll:g}: give a number of seconds from 0.05 to 3600")
    run_server(args.host, args.port, poll=args.poll, echo=lambda line: print(line, file=sys.stderr, flush=True))
    return exit_codes.OK
