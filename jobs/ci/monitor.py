"""The monitor: attempts whose driver is gone come back from their last checkpoint.

A driver (`pushtune run`, a Jenkins train step) holds its attempt's lease in the run store while
the training runs (jobs.store.lease), and restarts the training itself when it dies. When the driver is
gone too (the Jenkins build was aborted, the agent restarted, the process was killed), its lease
expires (or, on the same agent, its process is seen gone) and a monitor on any agent takes over:
it takes the lease, starts a detached `pushtune resume RUN --attempt N` and hands the lease to it;
that new driver resumes the training with `PUSHTUNE_RESUME=1` (or only records it, when it
already wrote its metric), and lets the loop go on or end as it decides.

Taking a lease is one conditional write in the store, so when several monitors sweep at once,
exactly one takes each attempt over, and it hands the lease on without ever letting it go.

A job chain's run whose train step was stopped by SIGTERM (a Jenkins abort, an agent shutting
down) is marked "interrupted", its attempt failed "interrupted (Terminated)". That is a driver
gone too: the monitor reopens the run and the attempt, counts a restart, and resumes it the same
way, at most --max-restarts times. A run stopped with Ctrl-C, or a `pushtune run`, stays as its
user left it (a SIGTERM ends `pushtune run` without marking anything: it is a dead driver).

Each run is looked after on its own: one the monitor cannot handle (its directory is gone, its
Docker engine does not answer, its row is corrupt) is skipped with the reason, printed and kept
as the run's `stop_reason`, and the sweep goes on with the others.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from jobs.errors import UserError
from jobs.loop import attempt_spec, run_options
from jobs.paths import PROJECT_ROOT
from jobs.steps import Terminated
from jobs.store.lease import HANDED_OVER, Lease, attempt_lease, run_lease
from jobs.store.run_store import RunStore, attempt_dir, run_dir
from jobs.train.runtime import metric_written, resumable_epoch
from jobs.train.runtimes import get_runtime

HANDOVER_TIMEOUT = 60.0
# A run between attempts whose driver is gone is taken over only after this much quiet, so a
# driver that is just starting (or between two attempts) is never raced.
IDLE_GRACE = 30.0
MAX_INTERVAL = 86400.0  # seconds between sweeps: at most a day
SKIPPED = "the monitor skipped it: "  # a running run's stop_reason, until it is looked after again
TERMINATED = f"interrupted ({Terminated.__name__})"  # the error of an attempt whose step got SIGTERM


@dataclass
class Action:
    run_id: int
    attempt: int | None  # None: the run as a whole
    what: str  # "resumed", "recorded", "gave up", "running", "continued", "skipped"
    detail: str

    def __str__(self) -> str:
        which = f"run {self.run_id}" if self.attempt is None else f"run {self.run_id} attempt {self.attempt}"
        return f"{which}: {self.what} ({self.detail})"


def check_interval(interval: float) -> None:
    if not (math.isfinite(interval) and 0 < interval <= MAX_INTERVAL):  # time.sleep takes no nan, inf or 1e300
        raise UserError(f"--interval must be a positive number of seconds, at most {MAX_INTERVAL:g}")


def spawn_resume(store: RunStore, run_id: int, attempt: int | None, lease: Lease) -> subprocess.Popen:
    """Start a detached `pushtune resume` that outlives the monitor and takes `lease` over."""
    directory = run_dir(store.get_run(run_id))
    args = [sys.executable, "-m", "jobs", "resume", str(run_id)]
    if attempt is not None:
        args += ["--attempt", str(attempt)]
    lease.keep()
    env = {**os.environ, "PUSHTUNE_HOME": str(store.local), "PUSHTUNE_DB": store.database.location,
           "PUSHTUNE_ARTIFACTS": str(store.artifacts), HANDED_OVER: lease.holder,
           # Jenkins kills what a build leaves running unless its cookie says otherwise
           "JENKINS_NODE_COOKIE": "dontKillMe", "BUILD_ID": "dontKillMe",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    with open(directory / "resume.log", "a") as log:
        return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_driver(lease: Lease, child: subprocess.Popen) -> None:
    """Return once the new driver holds the lease (or has already finished)."""
    deadline = time.monotonic() + HANDOVER_TIMEOUT
    while time.monotonic() < deadline:
        current = lease.store.lease(lease.name)
        if current is None or current["holder"] != lease.holder or child.poll() is not None:
            return
        time.sleep(0.05)


def _take_run_too(store: RunStore, run: dict, lease: Lease) -> None:
    """A `pushtune run` whose attempt is taken over is dead as the run's driver too: its run
    lease goes to the same new driver, when it can be had (a chain's runs have none)."""
    if not run_options(run).chain:
        Lease(store, run_lease(run["id"]), holder=lease.holder).take_for_handover()


def sweep(store: RunStore) -> list[Action]:
    """One pass over the running attempts of running runs; returns what was done."""
    actions = []
    for run_id in store.run_ids("running"):
        try:
            run = store.get_run(run_id)
            actions += _look_after_run_and_attempts(store, run)
        except Exception as exc:  # this run only: record why, and go on with the others
            problem = _one_line(exc)
            store.note_running(run_id, f"{SKIPPED}{problem}")
            actions.append(Action(run_id, None, "skipped", problem))
        else:
            if (run["stop_reason"] or "").startswith(SKIPPED):  # it is looked after again
                store.note_running(run_id, None)
    for run_id in store.run_ids("interrupted"):
        try:
            action = _look_after_terminated(store, store.get_run(run_id))
        except Exception as exc:  # reported; the run stays as it was recorded
            action = Action(run_id, None, "skipped", _one_line(exc))
        if action:
            actions.append(action)
    return actions


def _look_after_terminated(store: RunStore, run: dict) -> Action | None:
    """A chain run whose step was stopped by SIGTERM: resume its last attempt, as a dead driver's."""
    attempts = store.attempts(run["id"])
    if not run_options(run).chain or not attempts:
        return None
    attempt = attempts[-1]
    if attempt["error"] != TERMINATED or not attempt["dir"]:
        return None
    run_dir(run)
    attempt_dir(attempt)
    lease = Lease(store, attempt_lease(run["id"], attempt["n"]))
    if not lease.try_acquire():
        return None
    n, options = attempt["n"], run_options(run)
    try:
        spec = attempt_spec(store, run, attempt)
        if get_runtime(run["runtime"], **options.runtime_options).training_state(spec).alive:
            lease.release()
            return Action(run["id"], n, "running", "training of a stopped step runs on; checked again next time")
        if attempt["restarts"] >= options.max_restarts:  # recorded as it was, never looked at again
            reason = f"{TERMINATED}; not resumed after {attempt['restarts']} restarts"
            store.update_attempt(run["id"], n, error=reason)
            lease.release()
            return Action(run["id"], n, "gave up", reason)
        epoch = resumable_epoch(spec.output_dir)
        store.update_attempt(run["id"], n, status="running", error=None, finished_at=None)
        store.update_run(run["id"], status="running", finished_at=None, stop_reason=None)
        store.add_restart(run["id"], n, "its step was stopped (SIGTERM)", resumed_epoch=epoch, actor="monitor")
    except BaseException:
        lease.release()
        raise
    _wait_for_driver(lease, spawn_resume(store, run["id"], n, lease))
    return Action(run["id"], n, "resumed", f"its step was stopped (SIGTERM); from epoch {epoch or 0}")


def _one_line(exc: Exception) -> str:
    text = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def _look_after_run_and_attempts(store: RunStore, run: dict) -> list[Action]:
    if run["status"] != "running":  # it ended since the sweep began
        return []
    run_dir(run)  # never a resume.log in the current directory
    running = [a for a in store.attempts(run["id"]) if a["status"] == "running" and a["dir"]]
    actions = [_look_after(store, run, attempt) for attempt in running]
    if not running:
        actions.append(_look_after_run(store, run))
    return [action for action in actions if action]


def _look_after_run(store: RunStore, run: dict) -> Action | None:
    """A running run with no attempt in flight and no driver: its driver died between attempts.
    (A job chain's run is left to its chain, which plans each next attempt itself.)"""
    if run_options(run).chain:
        return None
    attempts = store.attempts(run["id"])
    last_activity = max([run["started_at"], *(a["finished_at"] or 0 for a in attempts)])
    if time.time() - last_activity < IDLE_GRACE:
        return None
    lease = Lease(store, run_lease(run["id"]))
    if not lease.try_acquire():
        return None
    _wait_for_driver(lease, spawn_resume(store, run["id"], None, lease))
    return Action(run["id"], len(attempts), "continued", "the run had no driver between attempts")


def _look_after(store: RunStore, run: dict, attempt: dict) -> Action | None:
    attempt_dir(attempt)
    lease = Lease(store, attempt_lease(run["id"], attempt["n"]))
    if not lease.try_acquire():
        return None  # its driver is alive and looks after it
    n, options = attempt["n"], run_options(run)
    try:
        spec = attempt_spec(store, run, attempt)
        runtime = get_runtime(run["runtime"], **options.runtime_options)
        state = runtime.training_state(spec)
        if state.alive:
            lease.release()
            return Action(run["id"], n, "running", "training runs without a driver; checked again next time")
        if metric_written(spec.output_dir):
            what, detail = "recorded", "training had finished; recording it"
        elif attempt["restarts"] >= options.max_restarts:
            reason = f"{state.reason}; gave up after {attempt['restarts']} restarts"
            store.update_attempt(run["id"], n, status="failed", error=reason, finished_at=time.time())
            runtime.collect(spec)  # its finished containers go (unless --keep)
            what, detail, n = "gave up", reason, None
        else:
            epoch = resumable_epoch(spec.output_dir)
            store.add_restart(run["id"], n, state.reason, exit_code=state.exit_code,
                              resumed_epoch=epoch, actor="monitor")
            what, detail = "resumed", f"{state.reason}; from epoch {epoch or 0}"
    except BaseException:
        lease.release()
        raise
    if n is None:  # the attempt is recorded as failed: the run goes on from its next attempt
        lease.release()
        lease = Lease(store, run_lease(run["id"]), holder=lease.holder)
        if not lease.try_acquire():
            return Action(run["id"], attempt["n"], what, detail)  # its run's driver goes on
    else:
        _take_run_too(store, run, lease)
    _wait_for_driver(lease, spawn_resume(store, run["id"], n, lease))
    return Action(run["id"], attempt["n"], what, detail)


def watch(store: RunStore, interval: float, echo) -> None:
    """Sweep every `interval` seconds until interrupted; a sweep that fails as a whole (the store
    is busy or damaged, another monitor holds the lock too long) is reported and tried again."""
    check_interval(interval)
    while True:
        try:
            for action in sweep(store):
                echo(str(action))
        except Exception as exc:
            echo(f"sweep failed: {_one_line(exc)}")
        time.sleep(interval)
