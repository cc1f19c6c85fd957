"""The loop one step at a time, for a job chain: changed → start → train → tweak → finish.

Each step is one process over the run store (the chain's only shared state), built on the same
functions as `pushtune run` (`jobs.loop`), so Jenkins holds no logic of its own:

- `changed_paths` / `model_files`: the model files a push changed;
- `start_runs`: classify and record one run per file;
- `train_step`: plan and train one attempt (exit 0 threshold met, 3 below it, 1 attempt failed);
- `tweak_step`: decide between another attempt and the end of the run;
- `finish_step`: finish a run (idempotent).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jobs import exit_codes
from jobs.classify.classifier import MODEL_SUFFIXES, classify_file
from jobs.deploy.versions import check_file_may_register
from jobs.errors import UserError
from jobs.git import git
from jobs.loop import (
    Progress,
    RunOptions,
    as_candidate,
    check_model,
    check_model_path,
    execute_attempt,
    finish_run,
    pending_attempt,
    plan_next,
    prepare_attempt,
    run_options,
    start_run,
    summarize,
)
from jobs.store.run_store import RunStore, run_dir
from jobs.train import images, profiles
from jobs.train.runtime import Runtime
from jobs.train.runtimes import get_runtime
from jobs.tune.objective import Objective

NO_COMMIT = "0" * 40
TRAIN_JOB, NOTIFY_JOB = "pushtune-train", "pushtune-notify"  # as named in jenkins/jobs/
BUILD_URL_OPTION = "jenkins_build_url"  # read by notify.summary for the mail's link
JOBS_OPTION = "jenkins_jobs"  # the chain's {"train": job, "notify": job}, for tweak and the monitor
CLASSIFY_SUFFIX = "-classify"  # the start step's job is {name}-classify (jenkins/jobs/)


class Terminated(KeyboardInterrupt):
    """A step stopped by SIGTERM (a Jenkins abort, a shutdown): the monitor resumes its attempt."""


@dataclass
class Started:
    run_id: int
    kind: str
    model: Path


@dataclass
class Decision:
    """What follows a tweak step: another attempt ("train"), the mail ("notify"), or nothing."""

    next: str
    run_id: int
    message: str


# --- which files a push changed -----------------------------------------------------------------


def _is_commit(repo: Path, rev: str | None) -> bool:
    if not rev or rev.strip("0") == "":
        return False
    try:
        git(repo, "cat-file", "-e", f"{rev}^{{commit}}")
    except UserError:
        return False
    return True


def changed_paths(repo: Path, old: str | None, new: str) -> list[str]:
    """Model files (`.py` scripts and `.ipynb` notebooks: jobs.classify.classifier.MODEL_SUFFIXES) added,
    modified or renamed between two commits.

    Without a usable `old` (a first build, a new branch) the files of the `new` commit itself.
    """
    if not _is_commit(repo, new):
        raise UserError(f"not a commit in {repo}: {new!r}")
    if old is not None and _is_commit(repo, old):
        output = git(repo, "diff", "--name-only", "-z", "--diff-filter=AMR", old, new)
    else:
        output = git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", "--root", "-z",
                      "--diff-filter=AMR", new)
    return [p for p in output.split("\0") if p.endswith(MODEL_SUFFIXES)]


def leaves_checkout(tree: Path, relative: str) -> str | None:
    """Why a changed file is not trained, when it is a symbolic link (or lies below one) that
    leads out of the checkout `tree` or into its `.git`; None for any other file."""
    root = tree.resolve()
    resolved = Path(os.path.realpath(root / relative))
    if resolved.is_relative_to(root) and not resolved.is_relative_to(root / ".git"):
        return None
    parts = Path(relative).parts
    links = [root.joinpath(*parts[:n]) for n in range(1, len(parts) + 1)]
    link = next((path for path in links if path.is_symlink()), root / relative)
    target = os.readlink(link) if link.is_symlink() else str(resolved)
    return f"a symbolic link to {target!r}, which leads out of the repository"


def model_files(root: Path, paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(supported model files, [(skipped file, why)]) among paths relative to root: a symbolic
    link out of the checkout is never a model file (a push must not train what lies beside it)."""
    models, skipped = [], []
    for relative in paths:
        path = root / relative
        if leaving := leaves_checkout(root, relative):
            skipped.append((relative, leaving))
        elif not path.is_file():
            skipped.append((relative, "not in the checkout"))
        else:
            found = classify_file(path)
            if found.kind == "unsupported":
                skipped.append((relative, found.reason))
            else:
                models.append(relative)
    return models, skipped


def files_from_json(text: str, option: str = "--files-json") -> list[str]:
    """The file names of a JSON list (as `pushtune changed` writes MODEL_FILES): any name, even
    one with blanks, wildcards or a leading dash, stays one name and never becomes an option."""
    try:
        names = json.loads(text)
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise UserError(f"{option} takes a JSON list of file names, such as [\"model.py\"]; got {text[:60]!r}")
    return names


# --- Java properties files (read by Jenkins' Parameterized Trigger) -----------------------------
#
# Parameterized Trigger expands variables in the whole file before it parses it
# (parameterized-trigger-plugin FileBuildParameters.getAction: `s = env.expand(s)`, then
# ParameterizedTriggerUtils.loadProperties), and core's Util.replaceMacro turns `$$` into `$`: a
# `$` of ours is written `$$`, or a model file `a$HOME.py` would reach classify as `a/root.py`.


def _escape(text: str, key: bool = False) -> str:
    out = []
    for i, char in enumerate(text):
        if char == "$":
            out.append("$$")
        elif char == "\\":
            out.append("\\\\")
        elif char in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif char in "=:#!" or (char == " " and (key or i == 0)):
            out.append("\\" + char)
        elif ord(char) > 0x7E:
            out.append("".join(f"\\u{unit:04x}" for unit in _utf16_units(char)))
        else:
            out.append(char)
    return "".join(out)


def _utf16_units(char: str) -> list[int]:
    data = char.encode("utf-16-be")
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def write_properties(path: Path, values: Mapping[str, object]) -> None:
    lines = [f"{_escape(str(k), key=True)}={_escape(str(v))}" for k, v in values.items()]
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("\n".join(lines) + "\n", encoding="latin-1")
    except OSError as exc:
        raise UserError(_cannot_write(path, exc)) from None


def check_writable(path: Path, *, directory: bool = False) -> None:
    """Raise now the UserError that writing properties to `path` (a file, or with `directory`
    a folder for them) would raise later: a step checks this before it records anything."""
    path = Path(path)
    try:
        if directory:
            path.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=path).close()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            existed = path.exists()
            open(path, "a").close()
            if not existed:
                path.unlink()
    except OSError as exc:
        raise UserError(_cannot_write(path, exc)) from None


def remove_properties(path: Path) -> None:
    """No properties file, so Jenkins triggers nothing."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(_cannot_write(path, exc)) from None


def _cannot_write(path: Path, exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return f"cannot write {path}: {exc.strerror}{where}"


# --- the steps ----------------------------------------------------------------------------------


def record_build_url(store: RunStore, run_id: int, env: Mapping[str, str] | None = None) -> bool:
    """Keep the Jenkins build (BUILD_URL) that last worked on the run, for the mail's link.
    Returns whether there was one to store."""
    url = (os.environ if env is None else env).get("BUILD_URL")
    if not url:
        return False
    run = store.get_run(run_id)
    store.update_run(run_id, options={**run["options"], BUILD_URL_OPTION: url})
    return True


def build_image(which: str) -> str:
    """The runtime image of a profile (`kind/framework`), an image name or a kind, built when it
    is missing or out of date (offline when the local base image is there); its tag."""
    name = images.image_name(which)
    try:
        return images.ensure_image(name)
    except UserError as exc:
        raise UserError(f"`pushtune images build {name}` failed: {exc}") from None


def chain_jobs(train: str | None = None, notify: str | None = None,
               env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The chain's train and notify jobs: as given, else named after the Jenkins job that runs
    the start step ("{name}-classify", JOB_NAME, folder included), else the default names."""
    job = (os.environ if env is None else env).get("JOB_NAME", "")
    if job.endswith(CLASSIFY_SUFFIX):
        prefix = job[: -len(CLASSIFY_SUFFIX)]
        defaults = {"train": f"{prefix}-train", "notify": f"{prefix}-notify"}
    else:
        defaults = {"train": TRAIN_JOB, "notify": NOTIFY_JOB}
    return {"train": train or defaults["train"], "notify": notify or defaults["notify"]}


def recorded_jobs(run: Mapping) -> dict[str, str]:
    """The chain jobs the run's start step recorded (the default names for older runs)."""
    recorded = run["options"].get(JOBS_OPTION)
    recorded = recorded if isinstance(recorded, dict) else {}
    return {step: recorded.get(step) or default
            for step, default in (("train", TRAIN_JOB), ("notify", NOTIFY_JOB))}


def start_runs(store: RunStore, paths: list[Path], options: RunOptions, *,
               skip_unsupported: bool = False, git_commit: str | None = None,
               with_image: bool = False, jobs: Mapping[str, str] | None = None,
               ) -> tuple[list[Started], list[tuple[Path, str]]]:
    """Classify each file and record a run for each supported one: (started, skipped). Every
    file is checked, and the images built, before any run is recorded. `jobs` (the chain's
    train and notify jobs) is recorded with each run."""
    options = dataclasses.replace(options, chain=True)
    options.validate()
    chosen, skipped = [], []
    for path in paths:
        check_model_path(path)
        if skip_unsupported:
            found = classify_file(path)
            if found.kind == "unsupported":
                skipped.append((path, found.reason))
                continue
        chosen.append((path, check_model(path, options)[0]))
        check_file_may_register(store, path, options.name, take=options.take_name)
    if options.name and len({path.name for path, _ in chosen}) > 1:
        raise UserError(f"--name {options.name} names one model: give it with one file, not "
                        f"{', '.join(sorted({path.name for path, _ in chosen}))}")
    if with_image and options.runtime in ("docker", "auto"):
        for image in dict.fromkeys(profiles.get(found.kind, found.framework).image for _, found in chosen):
            build_image(image)  # once per image, in the order of the files
    started = []
    for path, _ in chosen:
        run_id = start_run(store, path, options)
        run = store.get_run(run_id)
        if git_commit and not run["git_commit"]:
            store.update_run(run_id, git_commit=git_commit)
        if jobs:
            store.update_run(run_id, options={**run["options"], JOBS_OPTION: dict(jobs)})
        record_build_url(store, run_id)
        started.append(Started(run_id, run["kind"], path))
    return started, skipped


def _running(store: RunStore, run_id: int) -> dict:
    run = store.get_run(run_id)
    if run["status"] != "running":
        raise UserError(f"run {run_id} is finished ({run['status']}): nothing to train")
    run_dir(run)  # it has one and it is there (never the current directory)
    return run


def train_step(store: RunStore, run_id: int, runtime: Runtime | None = None,
               progress: Progress | None = None) -> tuple[int, str]:
    """Plan and train one attempt: (exit code, one line). Finishes the run when it passes or
    when there is nothing left to try. `progress` gets the events `drive` sends around an
    attempt: ("attempt", {run_id, candidate, n, output}) before it trains, ("attempted",
    {run_id, attempt}) after."""
    run = _running(store, run_id)
    record_build_url(store, run_id)
    pending = pending_attempt(store, run_id)  # what the tweak step planned, if it did
    candidate, reason = (as_candidate(pending), None) if pending else plan_next(store, run_id)
    if candidate is None:
        assert reason is not None  # plan_next says why whenever it plans nothing
        summary = finish_run(store, run_id, reason)
        return exit_codes.for_status(summary["status"]), f"run {run_id} finished: {summary['status']} ({reason})"
    options = run_options(run)
    runtime = runtime or get_runtime(options.runtime, **options.runtime_options)
    try:
        if pending:
            n = pending["n"]
            store.update_attempt(run_id, n, status="running", started_at=time.time())
        else:
            n = prepare_attempt(store, run_id, candidate)
        if progress:
            progress("attempt", {"run_id": run_id, "candidate": candidate, "n": n,
                                 "output": Path(store.get_attempt(run_id, n)["dir"]) / "output"})
        attempt = execute_attempt(store, run_id, n, runtime)
    except BaseException:
        finish_run(store, run_id, "interrupted", interrupted=True)
        raise
    if progress:
        progress("attempted", {"run_id": run_id, "attempt": attempt})
    label = f"run {run_id} attempt {attempt['n']} ({candidate.tweak or 'as pushed'})"
    if attempt["status"] != "ok":
        return exit_codes.FAILED, f"{label}: failed: {attempt['error']}"
    value = attempt["metric_value"]
    line = f"{label}: {run['metric']} {value:.4f}, threshold {run['threshold']:g}"
    if Objective.of(run).meets(value):
        finish_run(store, run_id, "threshold met")
        return exit_codes.OK, f"{line}: passed"
    return exit_codes.BELOW_THRESHOLD, f"{line}: below threshold"


def tweak_step(store: RunStore, run_id: int) -> Decision:
    """Another attempt when the budget and the tweaks allow it, else finish the run."""
    run = store.get_run(run_id)
    record_build_url(store, run_id)
    if run["status"] != "running":
        if store.notifications(run_id):
            return Decision("none", run_id, f"run {run_id} is finished ({run['status']}) and was reported")
        return Decision("notify", run_id, f"run {run_id} is finished ({run['status']})")
    run_dir(run)
    limit = run_options(run).max_attempts
    planned = pending_attempt(store, run_id)  # planned before: a retriggered tweak step plans no other
    if planned is None:
        candidate, reason = plan_next(store, run_id)
        if candidate is not None:  # recorded now, trained as planned by the next train step
            planned = store.get_attempt(run_id, prepare_attempt(store, run_id, candidate, status="pending"))
    if planned is not None:
        return Decision("train", run_id, f"run {run_id} attempt {planned['n']}/{limit} next: "
                                         f"{planned['tweak'] or 'as pushed'}")
    assert reason is not None  # nothing planned: plan_next said why
    summary = finish_run(store, run_id, reason)
    return Decision("notify", run_id, f"run {run_id} finished: {summary['status']} ({reason})")


def finish_step(store: RunStore, run_id: int, reason: str = "finished by pushtune finish") -> dict:
    """Finish the run unless it already is; its summary either way."""
    run = store.get_run(run_id)
    record_build_url(store, run_id)
    if run["status"] != "running":
        return summarize(store, run_id)
    if not run["run_dir"]:  # its driver died while starting it: no attempt, no report to write
        store.update_run(run_id, status="failed", finished_at=time.time(), stop_reason=reason)
        return summarize(store, run_id)
    run_dir(run)  # gone: a UserError rather than a report in the current directory
    return finish_run(store, run_id, reason)
