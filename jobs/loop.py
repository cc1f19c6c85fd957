"""The train → gate → tweak → retrain loop, as steps over the run store.

`start_run` classifies the pushed file and records a run; `plan_next` asks the strategy what to
try next (or says why to stop); `train_attempt` runs one attempt in a runtime and records it;
`finish_run` decides the run's status. `run_model` chains them in one process; the Jenkins jobs
call the same steps one at a time.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
import tokenize
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from jobs.classify.classifier import MODEL_SUFFIXES, Classification, classify_file
from jobs.classify.notebook import (
    NotebookCode,
    NotebookError,
    code_of,
    decode_notebook,
    handed_back_notebook,
    notebook_json,
    notebook_problem,
    script_code,
)
from jobs.deploy.served_form import file_sha256
from jobs.deploy.versions import check_file_may_register, deploy_after_run
from jobs.errors import UserError
from jobs.git import git_or_none
from jobs.mirror.mlflow import mirror_run
from jobs.report.html_report import write_report
from jobs.report.outcome import run_outcome, summary_json
from jobs.store.lease import Lease, attempt_lease, run_lease
from jobs.store.run_store import LeaseLost, RunStore, run_dir as store_run_dir
from jobs.train import profiles
from jobs.train.metrics import (
    find_artifact,
    is_regular_file,
    log_tail,
    out_of_range,
    read_capture,
    read_curve,
    read_json_output,
    read_metric,
)
from jobs.train.runtime import AttemptOutcome, AttemptSpec, Restart, Runtime, metric_written
from jobs.tune import tweaks
from jobs.tune.objective import MODES, Objective, best_attempt
from jobs.tune.strategies import Candidate, History, derived_space, first_candidate, get_strategy
from notify import notify_run


@dataclass
class RunOptions:
    threshold: float = 0.9
    metric: str = "accuracy"
    mode: str = "max"
    max_attempts: int = 5
    time_budget: float | None = None
    attempt_timeout: float | None = None
    data: str | None = None
    params: dict = field(default_factory=dict)
    strategy: str = "diagnose"
    space: dict | None = None
    runtime: str = "auto"
    runtime_options: dict = field(default_factory=dict)
    max_restarts: int = 3
    notify: list[str] = field(default_factory=list)
    verbose: bool = False
    jenkins_build_url: str | None = None
    chain: bool = False  # driven one step at a time by a job chain, which plans the next attempt
    min_delta: float = 0.0  # a smaller change of the metric is noise
    name: str | None = None  # the model name a passing run registers under (default: the file's stem)
    take_name: bool = False  # --force: the name may have been registered from another file
    promote: bool = True  # a passing run's version becomes production if it beats production (jobs.deploy.versions)
    autolog: bool = True  # capture curve, metric and model of scripts that do not report them (jobs.autolog)
    mlflow: str | None = None  # the tracking URI the run is mirrored to (jobs.mirror.mlflow)

    @property
    def objective(self) -> Objective:
        return Objective(self.metric, self.mode, self.threshold)

    def validate(self) -> None:
        if not math.isfinite(self.threshold):
            raise UserError("--threshold must be a finite number")
        if problem := out_of_range(self.metric, self.threshold):
            as_fraction = self.threshold / 100
            hint = "" if out_of_range(self.metric, as_fraction) else f" (for {self.threshold:g}%, give {as_fraction:g})"
            raise UserError(f"--threshold {self.threshold:g}: {problem}{hint}")
        if self.mode not in MODES:
            raise UserError("--mode must be max or min")
        if self.max_attempts < 1:
            raise UserError("--max-attempts must be at least 1")
        for name in ("time_budget", "attempt_timeout"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise UserError(f"--{name.replace('_', '-')} must be a positive number of seconds")
        if not (math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise UserError("--min-delta must be a finite number, 0 or more")
        if self.max_restarts < 0:
            raise UserError("--max-restarts must be 0 or more")
        if self.data is not None and not Path(self.data).is_dir():
            raise UserError(f"--data: no such directory: {self.data}")
        get_strategy(self.strategy)
        if self.strategy == "grid" and not self.space:  # optuna may derive one: check_model
            raise UserError(f"--strategy {self.strategy} needs a search space (--space FILE)")


def read_source(path: Path) -> str:
    """The file's text in its declared (PEP 263) encoding. The text is kept and run as UTF-8,
    so a coding line that declares another encoding is rewritten to declare utf-8."""
    with tokenize.open(path) as handle:
        text, encoding = handle.read(), handle.encoding
    if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig"):
        return text
    head = text.split("\n", 2)  # the declaration is on line 1 or 2 (PEP 263)
    cookie = re.compile(r"^([ \t\f]*#.*?coding[:=][ \t]*)[-\w.]+", re.ASCII)
    n = 0 if cookie.match(head[0]) else 1  # not utf-8, so one of them declares it
    head[n] = cookie.sub(r"\g<1>utf-8", head[n], count=1)
    return "\n".join(head)


PUSHED_NOTEBOOK = "pushed.ipynb"  # in the run directory, with pushed.py (the Python its code cells run)
PUSHED_NOTES = "pushed-notes.txt"  # what the conversion left out, written at the top of each attempt's log


def is_notebook(path: str | Path) -> bool:
    return str(path).lower().endswith(".ipynb")


def read_model(path: Path) -> tuple[NotebookCode, str | None]:
    """The pushed file as the Python that runs, and a notebook's own text (None for a script).

    The same text `jobs.classify.classifier` reads, so the classifier, the tweaker and the runner agree: a
    notebook's code cells after their markers (jobs.classify.notebook), a script in its declared encoding
    with its IPython lines made Python (an export's `%matplotlib inline`, `get_ipython()…`)."""
    if is_notebook(path):
        text = decode_notebook(path.read_bytes())
        return code_of(text, notebook=True), text
    return script_code(read_source(path)), None


def pushed_notebook(run_dir: Path) -> NotebookCode | None:
    """The run's pushed notebook (kept as pushed.ipynb), or None for a script run."""
    kept = run_dir / PUSHED_NOTEBOOK
    if not kept.is_file():
        return None
    return code_of(kept.read_text(encoding="utf-8"), notebook=True)


def git_commit_of(path: Path) -> str | None:
    """The last commit that touched the file, when it is tracked in a git repository."""
    return git_or_none(path.parent, "log", "-1", "--format=%H", "--", path.name, timeout=10)


def check_model_path(path: Path) -> None:
    """A UserError unless the path is a Python file or a notebook."""
    if path.is_dir():
        raise UserError(f"{path} is a directory: give a model file (`pushtune classify {path}` lists them)")
    if not path.is_file():
        raise UserError(f"no such model file: {path}")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise UserError(f"{path}: not a Python file or notebook (a model file ends in .py or .ipynb)")


def check_model(model_path: str | Path, options: RunOptions) -> tuple[Classification, str]:
    """The pushed file's classification and source, or a UserError saying why it cannot run."""
    found, code, _ = _check_model(model_path, options)
    return found, code.source


def _check_model(model_path: str | Path, options: RunOptions) -> tuple[Classification, NotebookCode, str | None]:
    """`check_model`, with the pushed file as `read_model` reads it."""
    path = Path(model_path)
    check_model_path(path)
    options.validate()
    found = classify_file(path)
    if found.kind == "unsupported":
        raise UserError(f"{path}: unsupported model file: {found.reason}")
    try:
        code, notebook = read_model(path)
    except NotebookError as exc:
        raise UserError(f"{path}: {exc}") from None
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    source = code.source
    if options.strategy in ("grid", "optuna") and not tweaks.reads_params(source):
        raise UserError(
            f"--strategy {options.strategy} sets parameters through PUSHTUNE_PARAMS, which "
            f"{path.name} does not read (use jobs.kit.params(...) in the script)"
        )
    if options.strategy == "optuna" and not options.space:
        if not derived_space(source, {**tweaks.declared_params(source), **options.params}):
            raise UserError(
                f"--strategy optuna needs a search space (--space FILE): {path.name} declares no "
                f"parameter it can search in kit.params(...) (such as learning_rate, C, alpha, epochs)"
            )
    return found, code, notebook


def start_run(store: RunStore, model_path: str | Path, options: RunOptions) -> int:
    """Classify the pushed file and record a new run; returns its id."""
    path = Path(model_path)
    found, code, notebook = _check_model(path, options)

    check_file_may_register(store, path, options.name, take=options.take_name)
    files = {"pushed.py": code.source}  # in runs/<id>/, made with the run in one step
    if notebook is not None:  # each attempt's model.ipynb is rebuilt from it
        files[PUSHED_NOTEBOOK] = notebook
    if code.notes:
        files[PUSHED_NOTES] = "".join(f"{note}\n" for note in code.notes)
    run_id = store.create_run(
        model_path=str(path.resolve()), model_name=path.name, model_sha256=file_sha256(path),
        kind=found.kind, framework=found.framework, git_commit=git_commit_of(path.resolve()),
        metric=options.metric, mode=options.mode, threshold=options.threshold,
        strategy=options.strategy, runtime=options.runtime, options=asdict(options),
        files=files,
    )
    return run_id


def run_options(run: dict) -> RunOptions:
    """The run's options as recorded (keys a newer or older pushtune does not know are ignored)."""
    known = {f.name for f in fields(RunOptions)}
    return RunOptions(**{k: v for k, v in run["options"].items() if k in known})


def history_of(store: RunStore, run: dict) -> History:
    run_dir = store_run_dir(run)
    attempts = store.attempts(run["id"])
    for attempt in attempts:  # an attempt recorded without its directory has no source to build on
        workdir = Path(attempt["dir"]) if attempt["dir"] else None
        script = workdir / "model.py" if workdir else None
        attempt["source"] = script.read_text(encoding="utf-8") if script and script.exists() else ""
        attempt["log"] = log_tail(workdir / "log.txt", lines=200) if workdir else ""
    options = run_options(run)
    pushed = (run_dir / "pushed.py").read_text(encoding="utf-8")
    # A script that reads PUSHTUNE_PARAMS runs with its declared defaults spelled out, so that
    # "as pushed" and a search point with the same values are seen as the same configuration.
    declared = tweaks.declared_params(pushed) if tweaks.reads_params(pushed) else {}
    return History(
        kind=run["kind"], framework=run["framework"], mode=run["mode"], pushed_source=pushed,
        base_params={**declared, **options.params}, attempts=attempts, space=options.space,
        metric=run["metric"], threshold=run["threshold"], min_delta=options.min_delta,
    )


def stop_reason(run: dict, history: History) -> str | None:
    """Why the loop must stop now, or None while it may go on."""
    options = run_options(run)
    best = history.best()
    if best and history.objective.meets(best["metric_value"]):
        return "threshold met"
    if len(history.attempts) == 1 and (broken := pushed_file_broken(run, history.attempts[0])):
        return broken
    if len(history.attempts) >= options.max_attempts:
        return f"attempt budget spent ({options.max_attempts})"
    if options.time_budget and time.time() - run["started_at"] >= options.time_budget:
        return f"time budget spent ({options.time_budget:g} s)"
    return None


def script_exit_error(exit_code: int) -> str:
    """The error of an attempt whose script ended by itself with a non-zero exit code."""
    return f"script exited with code {exit_code}"


def pushed_file_broken(run: dict, first: dict) -> str | None:
    """Why tweaking cannot help when the file as pushed (attempt 1) crashed on its own (not
    killed, not timed out) or ran to the end without reporting the metric; None otherwise.
    One line: what happened, the log's last line and the log's path."""
    if first["status"] != "failed" or not first["dir"]:
        return None
    log = Path(first["dir"]) / "log.txt"
    last_line = next((line.strip() for line in reversed((first["log_tail"] or "").splitlines()) if line.strip()), "")
    where = f"{last_line!r}; log: {log}" if last_line else f"log: {log}"
    code, metric = first["exit_code"], run["metric"]
    if code is not None and 0 < code < 128 and not first["oom_killed"] and first["error"] == script_exit_error(code):
        return f"the file as pushed failed (exit code {code}), which no tweak fixes: fix it and push again ({where})"
    if code != 0:
        return None
    output = Path(first["dir"]) / "output"
    reading = read_metric(output, log, metric, read_capture(output) if run_options(run).autolog else None)
    reported, missing = reading.metrics, reading.missing
    if missing is None or missing != first["error"]:  # failed for another reason (a runtime's)
        return None
    names = sorted(reported) if metric not in reported else []
    hint = f"; it reported {', '.join(names)}: is --metric {metric} right?" if names else ""
    return f"the file as pushed reported no usable {metric}, which no tweak fixes: {missing}{hint} ({where})"


def plan_next(store: RunStore, run_id: int) -> tuple[Candidate | None, str | None]:
    """The next configuration to train, or (None, why the loop stops)."""
    run = store.get_run(run_id)
    history = history_of(store, run)
    reason = stop_reason(run, history)
    if reason:
        return None, reason
    if not history.attempts:
        return first_candidate(history), None
    candidate = get_strategy(run["strategy"]).next_candidate(history)
    if candidate is None:
        return None, "no tweak left to try"
    return candidate, None


def _remaining_budget(run: dict, options: RunOptions) -> float | None:
    limits = []
    if options.attempt_timeout:
        limits.append(options.attempt_timeout)
    if options.time_budget:
        limits.append(max(options.time_budget - (time.time() - run["started_at"]), 1.0))
    return min(limits) if limits else None


def train_attempt(store: RunStore, run_id: int, candidate: Candidate, runtime: Runtime) -> dict:
    """Run one attempt of the candidate and record it, whatever happens to it."""
    n = prepare_attempt(store, run_id, candidate)
    return execute_attempt(store, run_id, n, runtime)


def prepare_attempt(store: RunStore, run_id: int, candidate: Candidate, *, status: str = "running") -> int:
    """Record a new attempt and lay out its directory: model.py, params.json, diff.patch; for a
    notebook also model.ipynb (the pushed notebook with this attempt's code, output-free), its
    tweak and diff naming cells; and what the conversion left out at the top of log.txt.
    A job chain's tweak step records it "pending", for its train step to run as planned."""
    run = store.get_run(run_id)
    run_dir = store_run_dir(run)
    pushed = (run_dir / "pushed.py").read_text(encoding="utf-8")
    parent = store.get_attempt(run_id, candidate.parent) if candidate.parent else None
    notebook = pushed_notebook(run_dir)
    if notebook is not None:  # "(line 12)" of the source the tweak was made on → "(cell 4, line 2)"
        base = pushed
        if parent and parent["dir"] and (Path(parent["dir"]) / "model.py").is_file():
            base = (Path(parent["dir"]) / "model.py").read_text(encoding="utf-8")
        named = notebook.name_cells(candidate.tweak, base)
        if named is not None and candidate.tweaks and candidate.tweaks[-1] == candidate.tweak:
            candidate.tweaks = [*candidate.tweaks[:-1], named]
        candidate.tweak = named
    n = store.add_attempt(
        run_id, dir_of=lambda n: str(run_dir / f"attempt-{n}"),
        parent=candidate.parent, tweak_name=candidate.tweak_name, tweak=candidate.tweak,
        tweaks=candidate.tweaks, params=candidate.params,
        source_sha256=hashlib.sha256(candidate.source.encode()).hexdigest(),
        config_key=candidate.key, reason=candidate.reason, status=status,
    )
    workdir = run_dir / f"attempt-{n}"
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "output").mkdir(parents=True)
    epoch = warm_start_epoch(parent, candidate) if parent else None
    if parent and epoch:
        copy_checkpoint(Path(parent["dir"]) / "output", workdir / "output")
        store.update_attempt(run_id, n, warm_from=parent["n"], warm_epoch=epoch)
    (workdir / "model.py").write_text(candidate.source, encoding="utf-8")
    (workdir / "params.json").write_text(json.dumps(candidate.params, indent=2) + "\n")
    if notebook is not None:  # one diff per changed cell, headed `a/NAME (cell K)`
        diff = notebook.diff(pushed, candidate.source, run["model_name"])
    else:
        diff = "".join(difflib.unified_diff(
            pushed.splitlines(keepends=True), candidate.source.splitlines(keepends=True),
            f"a/{run['model_name']}", f"b/{run['model_name']}",
        ))
    (workdir / "diff.patch").write_text(diff, encoding="utf-8")
    _lay_out_notebook(run, run_dir, workdir, notebook, candidate.source)
    store.update_attempt(run_id, n, diff=diff)
    return n


def _lay_out_notebook(run: dict, run_dir: Path, workdir: Path, notebook: NotebookCode | None, source: str) -> None:
    """An attempt's model.ipynb (a notebook run's), and the notes on what the conversion of the
    pushed file left out at the top of its log.txt (the runtimes append to it)."""
    notes_file = run_dir / PUSHED_NOTES
    notes = notes_file.read_text(encoding="utf-8").splitlines() if notes_file.is_file() else []
    lines = []
    if notes:
        what = "notebook" if notebook is not None else "script"
        lines.append(f"pushtune: the {what} {run['model_name']} runs as Python, its IPython lines as comments "
                     f"(shell and install lines are skipped: the runtime image already has the packages):")
        lines += [f"pushtune:   {note}" for note in notes]
    if notebook is not None:
        try:
            rebuilt = notebook.rebuilt(source)
        except (ValueError, NotebookError) as exc:
            lines.append(f"pushtune: no model.ipynb for this attempt: {exc}")
        else:
            (workdir / "model.ipynb").write_text(notebook_json(rebuilt), encoding="utf-8")
            problem = notebook_problem(rebuilt)
            if problem:
                lines.append(f"pushtune: model.ipynb does not validate as nbformat: {problem}")
    if lines:
        (workdir / "log.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def hand_back_notebook(run: dict, attempt: dict) -> Path | None:
    """Copy the attempt's model.ipynb to `handed_back_notebook` (never through a link the script
    left there); the path, or None when there is none to hand back. Never fails the run."""
    target = handed_back_notebook(run, attempt)
    source = Path(attempt["dir"]) / "model.ipynb" if target is not None else None
    if target is None or source is None or not is_regular_file(source):
        return None

    staged = None
    try:
        handle, staged = tempfile.mkstemp(prefix=".notebook-", dir=target.parent)
        with os.fdopen(handle, "wb") as out:
            out.write(source.read_bytes())
        shutil.copymode(source, staged)  # as readable as model.ipynb, not mkstemp's 0600
        os.replace(staged, target)  # replaces a link itself, never what it points at
    except OSError:
        if staged is not None:
            Path(staged).unlink(missing_ok=True)
        return None
    return target


# With the checkpoints directory: its epoch (training_metadata.json, as Keras' BackupAndRestore
# and the kit's PyTorch helpers write it) and state (the profile's file: jobs.train.profiles.Resume).
WARM_START_FILES = ("progress.json", "history.json")


def warm_start_epoch(parent: dict, candidate: Candidate) -> int | None:
    """The epoch the candidate can continue its parent's training from, or None.

    Only when the one change is more epochs, and the parent trained every epoch it asked for
    and left the kit's checkpoint of its last one: continuing from it then gives the very model
    a training of the new total from scratch would (weights and optimizer state are restored).
    """
    if candidate.tweak_name != "double_epochs" or parent["status"] != "ok" or not parent["dir"]:
        return None
    curve = parent.get("curve") or {}
    history = curve.get("history") or []
    epochs = curve.get("epochs")
    if not isinstance(epochs, int) or len(history) != epochs or history[-1].get("epoch") != epochs:
        return None

    checkpoints = Path(parent["dir"]) / "output" / "checkpoints"
    try:  # written by the script: never followed through a link, never blocking on a FIFO
        saved = read_json_output(checkpoints / profiles.CHECKPOINT_METADATA)["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    weights = profiles.checkpoint_weights()  # Keras' latest.weights.h5, the kit's torch.pt
    if saved != epochs or checkpoints.is_symlink() or not any(is_regular_file(checkpoints / w) for w in weights):
        return None
    parent_source = (Path(parent["dir"]) / "model.py").read_text(encoding="utf-8")
    return epochs if _only_epochs_differ(parent_source, parent["params"], candidate) else None


def _only_epochs_differ(source: str, params: dict, candidate: Candidate) -> bool:
    changed_keys = {k for k in {*params, *candidate.params} if params.get(k) != candidate.params.get(k)}
    changed_lines = [line for line in difflib.ndiff(source.splitlines(), candidate.source.splitlines())
                     if line[:2] in ("- ", "+ ")]
    return all("epoch" in text.lower() for text in [*changed_keys, *changed_lines])


def copy_checkpoint(parent_output: Path, output: Path) -> None:
    """The parent's checkpoint and curve, for a training that continues where it stopped. Only
    regular files: a link the script planted must not bring a host file into the next attempt."""
    checkpoints = parent_output / "checkpoints"
    (output / "checkpoints").mkdir()
    files = [checkpoints / entry.name for entry in os.scandir(checkpoints)]
    files += [parent_output / name for name in WARM_START_FILES]
    for path in filter(is_regular_file, files):
        target = output / path.relative_to(parent_output)
        shutil.copy2(path, target, follow_symlinks=False)


def pending_attempt(store: RunStore, run_id: int) -> dict | None:
    """The attempt a tweak step planned and no train step has run yet."""
    return next((a for a in store.attempts(run_id) if a["status"] == "pending"), None)


def as_candidate(attempt: dict) -> Candidate:
    """A recorded attempt as the candidate it was planned from (for progress lines)."""
    source = (Path(attempt["dir"]) / "model.py").read_text(encoding="utf-8")
    return Candidate(source=source, params=attempt["params"], tweak_name=attempt["tweak_name"],
                     tweak=attempt["tweak"], tweaks=attempt["tweaks"], parent=attempt["parent"],
                     reason=attempt["reason"])


def attempt_spec(store: RunStore, run: dict, attempt: dict, *, resume: bool = False) -> AttemptSpec:
    """What a runtime needs for an attempt, rebuilt from the store (so a monitor can resume it)."""
    options = run_options(run)
    spec = AttemptSpec(
        run_id=run["id"], attempt=attempt["n"], kind=run["kind"], framework=run["framework"],
        model_name=run["model_name"], workdir=Path(attempt["dir"]),
        data_dir=Path(options.data) if options.data else None,
        cache_dir=store.local / "cache", params=attempt["params"],
        timeout=_remaining_budget(run, options),
        max_restarts=max(options.max_restarts - attempt["restarts"], 0),
        previous_restarts=attempt["restarts"],
        verbose=options.verbose, resume=resume or attempt["warm_from"] is not None,
        autolog=options.autolog,
    )
    spec.cache_dir.mkdir(parents=True, exist_ok=True)
    return spec


def execute_attempt(store: RunStore, run_id: int, n: int, runtime: Runtime, *,
                    resume: bool = False, actor: str = "run") -> dict:
    """Run a recorded attempt while holding its driver lease, then record the outcome."""
    run = store.get_run(run_id)
    spec = attempt_spec(store, run, store.get_attempt(run_id, n), resume=resume)

    lease = Lease(store, attempt_lease(run_id, n))
    lease.on_lost = lambda: runtime.stop_training(spec)  # a driver that lost its lease trains no more

    def record_restart(restart: Restart) -> None:
        if lease.lost:  # never start the training again: another driver has the attempt
            raise LeaseLost(f"lost the lease {lease.name}: its training was stopped, not restarted")
        store.add_restart(run_id, n, restart.reason, exit_code=restart.exit_code,
                          resumed_epoch=restart.resumed_epoch, actor=actor)

    started = time.monotonic()
    with lease.held():
        try:
            outcome = runtime.run(spec, on_restart=record_restart)
        except BaseException as exc:  # an interrupted attempt is still recorded
            if lease.lost or isinstance(exc, LeaseLost):  # … by its driver alone
                raise
            store.update_attempt(run_id, n, status="failed", error=f"{INTERRUPTED_ERROR}{type(exc).__name__})",
                                 finished_at=time.time(), seconds=time.monotonic() - started,
                                 log_tail=log_tail(spec.log_path))
            raise
        if lease.lost:
            raise LeaseLost(f"lost the lease {lease.name}: its training was stopped; this driver records nothing")
        record_outcome(store, run, n, spec, outcome, time.monotonic() - started)
    return store.get_attempt(run_id, n)


def record_outcome(store: RunStore, run: dict, n: int, spec: AttemptSpec, outcome: AttemptOutcome,
                   seconds: float) -> None:
    """The attempt's status, metric, artifact and error, as the runtime and its files tell."""
    metric = run["metric"]
    capture = read_capture(spec.output_dir) if spec.autolog else None
    reading = read_metric(spec.output_dir, spec.log_path, metric, capture)
    metrics, missing = reading.metrics, reading.missing
    error = outcome.error
    if error is None and outcome.oom_killed:
        error = "killed: out of memory"
    if error is None and outcome.exit_code not in (0, None):
        error = script_exit_error(outcome.exit_code)
    if error is None and missing:
        error = missing
    artifact = find_artifact(spec.output_dir)
    previous = store.get_attempt(run["id"], n)["seconds"] or 0.0
    store.update_attempt(
        run["id"], n,
        status="failed" if error else "ok",
        metric_value=None if error else metrics[metric],
        metrics=metrics or None, error=error,
        log_tail=log_tail(spec.log_path) if error else None,
        exit_code=outcome.exit_code, oom_killed=int(outcome.oom_killed), container=outcome.container,
        artifact_path=str(artifact) if artifact else None,
        artifact_sha256=file_sha256(artifact) if artifact else None,
        curve=read_curve(spec.output_dir),
        capture={**(capture or {}), "metric_source": reading.source} if capture or reading.source else None,
        finished_at=time.time(), seconds=previous + seconds,
    )
    mirror_run(store, run["id"], wait=False)


def finish_run(store: RunStore, run_id: int, reason: str, *, interrupted: bool = False) -> dict:
    """Decide the run's status from its attempts, record it, deploy a passing run's model, then
    read its outcome once: the report and the returned summary render it."""
    run = store.get_run(run_id)
    objective = Objective.of(run)
    best = best_attempt(store.attempts(run_id), objective)
    if interrupted:
        status = "interrupted"
    elif best and objective.meets(best["metric_value"]):
        status = "passed"
    elif best:
        status = "below_threshold"
    else:
        status = "failed"
    pending = pending_attempt(store, run_id)
    if pending:  # planned by a tweak step, never trained: recorded as such, not left hanging
        store.update_attempt(run_id, pending["n"], status="failed", finished_at=time.time(),
                             error=f"never trained: the run finished first ({reason})")
    store.update_run(run_id, status=status, best_attempt=best and best["n"],
                     finished_at=time.time(), stop_reason=reason)
    if best:  # a notebook run hands its best notebook back next to the model
        hand_back_notebook(run, best)
    if status == "passed":  # its best model: the next version of its name, production if better
        deploy_after_run(store, run_id)
    outcome = run_outcome(store, run_id)
    write_report(outcome)
    mirror_run(store, run_id)
    return summary_json(outcome)


def summarize(store: RunStore, run_id: int) -> dict:
    """The run as the `--json` object (`jobs.report.outcome.summary_json`), as the store has it now."""
    return summary_json(run_outcome(store, run_id))


Progress = Callable[[str, dict], None]


def _quiet(event: str, data: dict) -> None:
    pass


def run_model(model_path: str | Path, options: RunOptions, runtime: Runtime,
              store: RunStore | None = None, progress: Progress | None = None) -> dict:
    """The whole loop in one process: attempts until the threshold is met or a budget is spent."""
    store = store or RunStore.open()
    progress = progress or _quiet
    run_id = start_run(store, model_path, options)
    progress("started", {"run_id": run_id, **store.get_run(run_id)})
    return drive(store, run_id, runtime, progress)


def drive(store: RunStore, run_id: int, runtime: Runtime, progress: Progress = _quiet) -> dict:
    """Plan and train attempts until the loop stops, then finish the run. The run's driver lease
    is held throughout, so a monitor on any agent knows the run is looked after."""
    store_run_dir(store.get_run(run_id))
    with Lease(store, run_lease(run_id)).held():
        try:
            while True:
                candidate, reason = plan_next(store, run_id)
                if candidate is None:
                    assert reason is not None  # plan_next says why whenever it plans nothing
                    break
                n = prepare_attempt(store, run_id, candidate)
                progress("attempt", {"run_id": run_id, "candidate": candidate, "n": n,
                                     "output": Path(store.get_attempt(run_id, n)["dir"]) / "output"})
                attempt = execute_attempt(store, run_id, n, runtime)
                progress("attempted", {"run_id": run_id, "attempt": attempt})
        except LeaseLost:  # another driver took the run over: it finishes it
            raise
        except BaseException:
            finish_run(store, run_id, "interrupted", interrupted=True)
            raise
        summary = finish_run(store, run_id, reason)
    progress("finished", summary)
    return summary


def resume_attempt(store: RunStore, run_id: int, n: int, runtime: Runtime) -> dict:
    """Take over an attempt whose driver is gone: record it when its training had finished,
    else resume the training from its last checkpoint and record it."""
    run = store.get_run(run_id)
    spec = attempt_spec(store, run, store.get_attempt(run_id, n))
    if not metric_written(spec.output_dir):
        return execute_attempt(store, run_id, n, runtime, resume=True, actor="monitor")
    with Lease(store, attempt_lease(run_id, n)).held():
        record_outcome(store, run, n, spec, runtime.collect(spec), 0.0)
    return store.get_attempt(run_id, n)


INTERRUPTED_ERROR = "interrupted ("  # how an attempt whose driver was interrupted is recorded


def reopen_interrupted(store: RunStore, run_id: int, runtime: Runtime) -> int | None:
    """Make an interrupted run (Ctrl-C) running again, with its interrupted attempt, so that
    `resume_attempt` continues that training (from its checkpoint) and `drive` the loop; the
    attempt's number, or None when no attempt was cut short."""
    run = store.get_run(run_id)
    attempts = store.attempts(run_id)
    last = attempts[-1] if attempts else None
    cut_short = last is not None and bool(last["dir"]) and (last["error"] or "").startswith(INTERRUPTED_ERROR)
    if last is not None and cut_short:
        if runtime.training_state(attempt_spec(store, run, last)).alive:
            raise UserError(f"run {run_id}: the training of attempt {last['n']} still runs: resume it once it ends")
        store.update_attempt(run_id, last["n"], status="running", error=None, finished_at=None)
    store.update_run(run_id, status="running", finished_at=None, stop_reason=None)
    return last["n"] if last is not None and cut_short else None


def notify_if_asked(store: RunStore, run_id: int):
    """Mail the run's result when it was started with --notify; never fails the run."""
    recipients = run_options(store.get_run(run_id)).notify
    if not recipients:
        return None

    try:
        return notify_run(store, run_id, recipients)
    except UserError as exc:
        store.add_notification(run_id, "email", "failed", recipients=recipients, error=str(exc))
        return None
