"""`pushtune changed|start|train|tweak|finish`: the loop one step at a time, for a job chain.

Exit codes of `pushtune train RUN_ID`: 0 the threshold is met (the run is finished); 3 the
attempt is below the threshold (`pushtune tweak` follows); 1 the attempt failed (`pushtune
tweak` follows too); 2 bad input (unknown or finished run). When nothing is left to try the run
is finished and the code is the run's (0 passed, 3 below threshold, 1 failed).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from jobs import exit_codes, steps
from jobs.ci import chain
from jobs.errors import UserError
from jobs.git import git
from jobs.loop import run_options
from jobs.run_options import add_run_options, options_from, print_option_notes
from jobs.store.run_store import RunStore
from jobs.train.progress import EpochWatcher, epoch_line


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("changed", help="list the model files changed between two commits",
                              description="List the supported model files (one a line) that were "
                                          "added or modified between two commits.")
    p.add_argument("--from", dest="old", default="", metavar="REV",
                   help="the previous commit (empty: the files of --to itself)")
    p.add_argument("--to", dest="new", default="HEAD", metavar="REV", help="the new commit (default HEAD)")
    p.add_argument("--repo", default=".", metavar="DIR", help="the checkout (default .)")
    p.add_argument("--properties", metavar="FILE",
                   help="write MODEL_FILES (a JSON list, for --files-json) and MODEL_COMMIT there "
                        "(only when a model file changed)")
    p.add_argument("--json", action="store_true", help="print the files as a JSON list (for --files-json)")
    p.set_defaults(func=changed)

    p = subparsers.add_parser("start", help="classify model files and record a run for each",
                              description="Classify each model file and record a run; prints one "
                                          "run id a line.")
    p.add_argument("models", nargs="*", metavar="MODEL_FILE", help="put -- before names that start with -")
    p.add_argument("--files-json", metavar="JSON", help="more model files, as a JSON list (MODEL_FILES)")
    add_run_options(p)
    p.add_argument("--skip-unsupported", action="store_true", help="skip files that are no model")
    p.add_argument("--build-image", action="store_true",
                   help="docker/auto runtime: `pushtune images build KIND` for each kind started")
    p.add_argument("--git-commit", metavar="SHA", help="record this commit when git does not know the file")
    p.add_argument("--properties", metavar="FILE", help="write RUN_ID, KIND and MODEL there (one model file)")
    p.add_argument("--properties-dir", metavar="DIR", help="write DIR/run-<id>.properties per run")
    p.add_argument("--train-job", metavar="JOB", help="the chain's train job, recorded for tweak and the "
                                                      "monitor (default: from JOB_NAME, else pushtune-train)")
    p.add_argument("--notify-job", metavar="JOB", help="the chain's notify job (default: likewise)")
    p.set_defaults(func=start)

    p = subparsers.add_parser("train", help="train one attempt of a run",
                              description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.set_defaults(func=train)

    p = subparsers.add_parser("tweak", help="decide whether a run gets another attempt",
                              description="Decide whether the run gets another attempt (budget, "
                                          "tweaks left) or is finished. Inside Jenkins, trigger the "
                                          "train or notify job accordingly. Exit 0 either way.")
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("--train-job", help="Jenkins job of another attempt (default: the one the run recorded)")
    p.add_argument("--notify-job", help="Jenkins job that mails the result (default: likewise)")
    p.add_argument("--properties", metavar="FILE", help="write RUN_ID and NEXT (train, notify, none) there")
    p.add_argument("--no-trigger", action="store_true", help="only decide, even inside Jenkins (Pipeline loop)")
    p.set_defaults(func=tweak)

    p = subparsers.add_parser("finish", help="finish a run (no-op when it is finished)")
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("--reason", default="finished by pushtune finish")
    p.set_defaults(func=finish)


def changed(args: argparse.Namespace) -> int:
    repo = Path(args.repo).resolve()
    if args.properties:
        steps.check_writable(Path(args.properties))
    paths = steps.changed_paths(repo, args.old or None, args.new)
    models, skipped = steps.model_files(repo, paths)
    for path, why in skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    print(json.dumps(models) if args.json else "\n".join(models), end="\n" if models or args.json else "")
    if args.properties:
        target = Path(args.properties)
        steps.remove_properties(target)
        if models:
            commit = git(repo, "rev-parse", args.new).strip()
            steps.write_properties(target, {"MODEL_FILES": json.dumps(models), "MODEL_COMMIT": commit})
    return exit_codes.OK


def start(args: argparse.Namespace) -> int:
    if args.files_json is not None:
        args.models += steps.files_from_json(args.files_json)
    elif not args.models:
        raise UserError("give the model files: MODEL_FILE... or --files-json JSON")
    if args.properties and len(args.models) > 1:
        raise UserError("--properties takes one model file; use --properties-dir for several")
    if args.properties:  # before any run is recorded: a run nobody hears of stays "running"
        steps.check_writable(Path(args.properties))
    if args.properties_dir:
        steps.check_writable(Path(args.properties_dir), directory=True)
    options = options_from(args)
    options.notify = [address for address in options.notify if address.strip()]
    started, skipped = steps.start_runs(
        RunStore.open(), [Path(m) for m in args.models], options,
        skip_unsupported=args.skip_unsupported, git_commit=args.git_commit,
        with_image=args.build_image, jobs=steps.chain_jobs(args.train_job, args.notify_job),
    )
    print_option_notes(args, options)
    for path, why in skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    for run in started:
        print(f"run {run.run_id}: {run.model} ({run.kind})", file=sys.stderr)
        print(run.run_id)
        values = {"RUN_ID": run.run_id, "KIND": run.kind, "MODEL": run.model}
        if args.properties:
            steps.write_properties(Path(args.properties), values)
        if args.properties_dir:
            steps.write_properties(Path(args.properties_dir) / f"run-{run.run_id}.properties", values)
    if not started:
        print("no supported model file: nothing to train", file=sys.stderr)
    return exit_codes.OK


def _stop_on_sigterm() -> None:
    """Jenkins aborts a build with SIGTERM: end like Ctrl-C, so the attempt is recorded, but as
    `steps.Terminated`, which the monitor resumes (a Ctrl-C is a person's decision; it does not)."""
    def interrupt(signum, frame):
        raise steps.Terminated

    signal.signal(signal.SIGTERM, interrupt)


class ChainProgress:
    """What `pushtune train` prints while its attempt trains, on stdout (the Jenkins console):
    the attempt and why it was chosen, then one plain line per epoch the kit records."""

    def __init__(self, store: RunStore):
        self.store = store
        self.watcher: EpochWatcher | None = None

    def __call__(self, event: str, data: dict) -> None:
        if event == "attempt":
            self.close()
            candidate = data["candidate"]
            limit = run_options(self.store.get_run(data["run_id"])).max_attempts
            print(f"run {data['run_id']} attempt {data['n']}/{limit}: {candidate.tweak or 'as pushed'} …", flush=True)
            if getattr(candidate, "reason", None):
                print(f"  why: {candidate.reason}", flush=True)
            self.watcher = EpochWatcher(data["output"], self._epoch).start()
        elif event == "attempted":
            self.close()

    @staticmethod
    def _epoch(epoch: int, epochs: int | None, logs: dict) -> None:
        print(epoch_line(epoch, epochs, logs), flush=True)

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None


def train(args: argparse.Namespace) -> int:
    _stop_on_sigterm()
    store = RunStore.open()
    progress = ChainProgress(store)
    try:
        code, line = steps.train_step(store, args.run_id, progress=progress)
    finally:
        progress.close()
    print(line)
    return code


def tweak(args: argparse.Namespace) -> int:
    if args.properties:  # before the decision, which may finish the run
        steps.check_writable(Path(args.properties))
    decision = steps.tweak_step(RunStore.open(), args.run_id)
    print(decision.message)
    if args.properties:
        steps.write_properties(Path(args.properties), {"RUN_ID": decision.run_id, "NEXT": decision.next})
    if args.no_trigger:
        return exit_codes.OK
    jobs = steps.recorded_jobs(RunStore.open().get_run(args.run_id))
    jobs.update({k: v for k, v in (("train", args.train_job), ("notify", args.notify_job)) if v})
    triggered = chain.dispatch(decision, jobs)
    if triggered:
        print(triggered)
    return exit_codes.OK


def finish(args: argparse.Namespace) -> int:
    summary = steps.finish_step(RunStore.open(), args.run_id, args.reason)
    print(f"run {summary['run_id']}: {summary['status']} ({summary['stop_reason']})")
    return exit_codes.OK
