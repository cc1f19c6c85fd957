"""`pushtune monitor` and `pushtune resume`: attempts whose driver is gone come back."""

from __future__ import annotations

import argparse
import sys

from jobs import exit_codes, steps
from jobs.ci import chain
from jobs.ci.monitor import MAX_INTERVAL, check_interval, sweep, watch
from jobs.errors import UserError
from jobs.loop import drive, notify_if_asked, reopen_interrupted, resume_attempt, run_options
from jobs.store.run_store import RunStore, attempt_dir, run_dir
from jobs.train.runtimes import get_runtime


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("monitor", help="resume training whose driver died, from its last checkpoint")
    p.add_argument("--once", action="store_true", help="one sweep, then exit")
    p.add_argument("--interval", type=float, default=30.0, metavar="S",
                   help=f"seconds between sweeps (default 30, at most {MAX_INTERVAL:g})")
    p.set_defaults(func=monitor)
    p = subparsers.add_parser("resume", help="drive a run again: an interrupted one, or one whose driver died",
                              description="Continue a run: one interrupted (Ctrl-C) goes on from its "
                                          "interrupted attempt; the monitor starts this for a run whose driver died.")
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("--attempt", type=int, metavar="N", help="resume this attempt's training first")
    p.set_defaults(func=resume)


def _echo(line: str) -> None:
    print(line, flush=True)


def monitor(args: argparse.Namespace) -> int:
    check_interval(args.interval)
    store = RunStore.open()
    if args.once:
        actions = sweep(store)
        for action in actions:
            _echo(str(action))
        if not actions:
            _echo("nothing to do: every running attempt has a live driver")
        return exit_codes.OK
    watch(store, args.interval, _echo)
    return exit_codes.OK


def resume(args: argparse.Namespace) -> int:
    store = RunStore.open()
    run = store.get_run(args.run_id)
    if run["status"] not in ("running", "interrupted"):
        raise UserError(f"run {args.run_id} is finished ({run['status'].replace('_', ' ')}): nothing to resume; "
                        f"`pushtune run {run['model_path']}` starts a new run")
    run_dir(run)  # its resume.log and report go there, never into the current directory
    if run["status"] == "interrupted" and args.attempt is not None:
        raise UserError(f"run {args.run_id} is interrupted: `pushtune resume {args.run_id}` continues it")
    if args.attempt is not None:
        attempt = store.get_attempt(args.run_id, args.attempt)
        if attempt["status"] != "running":  # its outcome is recorded: never train it over again
            raise UserError(f"attempt {args.attempt} of run {args.run_id} is {attempt['status']}, not running")
        attempt_dir(attempt)
    runtime = get_runtime(run["runtime"], **run_options(run).runtime_options)
    if run["status"] == "interrupted":  # Ctrl-C: its cut-short attempt goes on, then the loop
        args.attempt = reopen_interrupted(store, args.run_id, runtime)
    if args.attempt is not None:
        resume_attempt(store, args.run_id, args.attempt, runtime)
    if run_options(run).chain:  # the chain plans what follows: hand back to it
        decision = steps.tweak_step(store, args.run_id)
        print(decision.message, file=sys.stderr)
        triggered = chain.dispatch(decision, steps.recorded_jobs(run))
        if triggered:
            print(triggered, file=sys.stderr)
        return exit_codes.OK
    summary = drive(store, args.run_id, runtime)
    notify_if_asked(store, args.run_id)
    print(f"run {args.run_id}: {summary['status']}", file=sys.stderr)
    return exit_codes.for_status(summary["status"])
