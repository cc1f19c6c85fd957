"""Where an attempt runs. One small interface, `Runtime.run(spec) -> AttemptOutcome`.

`LocalRuntime` runs the script as a child process; `jobs.docker_runtime.DockerRuntime` runs it in
a container. Both restart a training that was killed (by a signal, the OOM killer, a lost
container) with `PUSHTUNE_RESUME=1`, a bounded number of times, so it resumes from its last
checkpoint; a script that exits with an error of its own is not restarted.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, TextIO

from jobs.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class AttemptSpec:
    """Everything a runtime needs to run one attempt."""

    run_id: int
    attempt: int
    kind: str
    model_name: str
    workdir: Path  # the attempt directory; holds model.py
    data_dir: Path | None
    cache_dir: Path
    params: dict
    timeout: float | None = None
    max_restarts: int = 3
    verbose: bool = False
    resume: bool = False  # the first start already resumes (a monitor took the attempt over)
    previous_restarts: int = 0  # restarts before this driver took over, for the bound's message
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def script(self) -> Path:
        return self.workdir / "model.py"

    @property
    def output_dir(self) -> Path:
        return self.workdir / "output"

    @property
    def log_path(self) -> Path:
        return self.workdir / "log.txt"


@dataclass
class AttemptOutcome:
    exit_code: int | None
    timed_out: bool = False
    oom_killed: bool = False
    restarts: int = 0
    container: str | None = None
    error: str | None = None


@dataclass
class Restart:
    """A training that died and is being started again; what the store records."""

    reason: str
    exit_code: int | None
    resumed_epoch: int | None


OnRestart = Callable[[Restart], None]


class DriverLock:
    """Whoever holds `driver.lock` in an attempt directory drives that attempt: waits for its
    training, restarts it, records its outcome. The kernel drops the lock when the holder dies,
    so a monitor can tell an attempt whose driver is alive from one whose driver is gone."""

    def __init__(self, workdir: Path):
        self.path = workdir / "driver.lock"
        self._handle = None

    def try_acquire(self) -> bool:
        handle = open(self.path, "a+")  # not inherited by children (PEP 446)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle:
            self._handle.close()
            self._handle = None

    def is_held_elsewhere(self) -> bool:
        if self.try_acquire():
            self.release()
            return False
        return True

    @contextmanager
    def held(self) -> Iterator[None]:
        if not self.try_acquire():
            raise UserError(f"{self.path.parent} is already driven by another process")
        try:
            yield
        finally:
            self.release()


@dataclass
class TrainingState:
    """What a runtime can tell about an attempt's training when its driver is gone."""

    alive: bool
    exit_code: int | None = None
    oom_killed: bool = False
    killed: str | None = None  # the runtime's own words for how it died, when it knows them

    @property
    def reason(self) -> str:
        if self.killed:
            return self.killed
        if self.oom_killed:
            return "OOM-killed"
        if self.exit_code is None:
            return "training process gone"
        if self.exit_code < 0:
            return f"killed by {signal.Signals(-self.exit_code).name}"
        return f"exited with code {self.exit_code}"


class Runtime(Protocol):
    name: str

    def run(self, spec: AttemptSpec, on_restart: OnRestart | None = None) -> AttemptOutcome: ...

    def training_state(self, spec: AttemptSpec) -> TrainingState: ...


CONTRACT_VARIABLES = ("PUSHTUNE_OUTPUT", "PUSHTUNE_DATA", "PUSHTUNE_PARAMS", "PUSHTUNE_RESUME",
                      "PUSHTUNE_CACHE", "PUSHTUNE_RUN", "PUSHTUNE_ATTEMPT")


def contract_env(
    spec: AttemptSpec,
    *,
    output: str,
    data: str | None,
    cache: str,
    resume: bool,
) -> dict[str, str]:
    """The model-script contract's variables, with paths as the script will see them."""
    env = {
        "PUSHTUNE_OUTPUT": output,
        "PUSHTUNE_PARAMS": json.dumps(spec.params),
        "PUSHTUNE_CACHE": cache,
        "PUSHTUNE_RUN": str(spec.run_id),
        "PUSHTUNE_ATTEMPT": str(spec.attempt),
        "PYTHONUNBUFFERED": "1",
        **spec.extra_env,
    }
    if data:
        env["PUSHTUNE_DATA"] = data
    if resume:
        env["PUSHTUNE_RESUME"] = "1"
    return env


def resumable_epoch(output_dir: Path) -> int | None:
    """The epoch a resumed training starts from: what the kit's progress callback last wrote."""
    try:
        return int(json.loads((output_dir / "progress.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def metric_written(output_dir: Path) -> bool:
    return (output_dir / "metrics.json").exists() or (output_dir / "accuracy.txt").exists()


def restart_delay(restart_number: int) -> float:
    """Growing back-off between restarts: 0.5 s, 1 s, 2 s, … capped at 30 s."""
    return min(0.5 * 2 ** (restart_number - 1), 30.0)


@dataclass
class Exit:
    """How one process or container of an attempt ended."""

    code: int | None
    timed_out: bool = False
    killed: str | None = None  # why it died from outside (signal, OOM, lost), None if it exited
    oom_killed: bool = False
    container: str | None = None


RunOnce = Callable[[bool, int, "float | None"], Exit]  # (resume, restart number, deadline)


def supervise(spec: AttemptSpec, run_once: RunOnce, log: TextIO,
              on_restart: OnRestart | None = None) -> AttemptOutcome:
    """Run the attempt, starting it again with resume while it is killed before reporting.

    The attempt timeout is one deadline for all restarts together. A training that ends by
    itself, with whatever exit code, is not restarted; nor one that wrote its metric. Restart
    numbers go on from the restarts made before this driver took the attempt over.
    """
    deadline = time.monotonic() + spec.timeout if spec.timeout else None
    restarts = 0
    while True:
        end = run_once(spec.resume or restarts > 0, spec.previous_restarts + restarts, deadline)
        outcome = AttemptOutcome(end.code, timed_out=end.timed_out, oom_killed=end.oom_killed,
                                 restarts=restarts, container=end.container)
        if end.timed_out:
            outcome.error = f"attempt timed out after {spec.timeout:g} s"
            return outcome
        if end.killed is None or metric_written(spec.output_dir):
            return outcome
        if restarts >= spec.max_restarts:
            outcome.error = f"{end.killed}; gave up after {spec.previous_restarts + restarts} restarts"
            return outcome
        restarts += 1
        time.sleep(restart_delay(restarts))
        epoch = resumable_epoch(spec.output_dir)
        log.write(f"\n[pushtune] {end.killed}; restart {restarts}/{spec.max_restarts}"
                  f" from epoch {epoch or 0}\n")
        log.flush()
        if on_restart:
            on_restart(Restart(end.killed, end.code, epoch))


def append_log(log: TextIO, text: str, echo: bool) -> None:
    """Training output goes into the attempt's log, and to the terminal when verbose."""
    if text:
        log.write(text)
        log.flush()
        if echo:
            sys.stderr.write(text)


class _LogPump(threading.Thread):
    """Copies a child's output into the attempt log (and to the terminal when verbose)."""

    def __init__(self, stream, log: TextIO, echo: bool):
        super().__init__(daemon=True)
        self.stream, self.log, self.echo = stream, log, echo

    def run(self) -> None:
        for line in iter(self.stream.readline, ""):
            append_log(self.log, line, self.echo)


class LocalRuntime:
    """Runs the script as `python model.py` in a child process of its own session."""

    name = "local"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable

    def run(self, spec: AttemptSpec, on_restart: OnRestart | None = None) -> AttemptOutcome:
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "a", encoding="utf-8", errors="replace") as log:
            def run_once(resume: bool, restart: int, deadline: float | None) -> Exit:
                code, timed_out = self._run_once(spec, log, deadline, resume)
                killed = None
                if code is not None and code < 0 and not timed_out:
                    killed = f"killed by {signal.Signals(-code).name}"
                return Exit(code, timed_out=timed_out, killed=killed)

            return supervise(spec, run_once, log, on_restart)

    def training_state(self, spec: AttemptSpec) -> TrainingState:
        return TrainingState(alive=local_process_alive(spec.workdir))

    def _run_once(self, spec: AttemptSpec, log: TextIO, deadline: float | None, resume: bool):
        # The contract's variables come from this attempt only, never from pushtune's own
        # environment (a PUSHTUNE_DATA exported in the shell must not reach a run without --data).
        inherited = {k: v for k, v in os.environ.items() if k not in CONTRACT_VARIABLES}
        env = {
            **inherited,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
            **contract_env(
                spec,
                output=str(spec.output_dir),
                data=str(spec.data_dir) if spec.data_dir else None,
                cache=str(spec.cache_dir),
                resume=resume,
            ),
        }
        try:
            child = subprocess.Popen(
                [self.python, spec.script.name], cwd=spec.workdir, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                encoding="utf-8", errors="replace", start_new_session=True,
            )
        except OSError as exc:
            raise UserError(f"cannot start {self.python}: {exc}") from None
        (spec.workdir / "process.json").write_text(json.dumps({"pid": child.pid, "start": _start_ticks(child.pid)}))
        pump = _LogPump(child.stdout, log, spec.verbose)
        pump.start()
        try:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            code = child.wait(timeout=remaining)
            timed_out = False
        except subprocess.TimeoutExpired:
            _stop_group(child)
            code, timed_out = child.returncode, True
        except BaseException:
            _stop_group(child)
            raise
        finally:
            pump.join(timeout=5)
        return code, timed_out


def _start_ticks(pid: int) -> int | None:
    """When a process started (clock ticks since boot): tells a pid from its reuse."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def local_process_alive(workdir: Path) -> bool:
    """Whether the training process that LocalRuntime last started for the attempt still runs."""
    try:
        recorded = json.loads((workdir / "process.json").read_text())
    except (OSError, ValueError):
        return False
    ticks = _start_ticks(int(recorded["pid"]))
    if ticks is None or ticks != recorded["start"]:
        return False
    state = Path(f"/proc/{recorded['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _stop_group(child: subprocess.Popen) -> None:
    """SIGTERM the child's process group, SIGKILL it if it is still there after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            break
        try:
            child.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def get_runtime(name: str, **options) -> Runtime:
    """`local`, `docker`, or `auto` (Docker when a daemon answers, else local)."""
    if name == "local":
        return LocalRuntime()
    if name in ("docker", "auto"):
        from jobs import docker_runtime

        return docker_runtime.select(name, **options)
    raise UserError(f"unknown runtime {name!r} (choose local, docker or auto)")
