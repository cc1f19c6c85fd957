"""Where an attempt runs. One small interface, `Runtime.run(spec) -> AttemptOutcome`.

`LocalRuntime` runs the script as a child process; `jobs.train.docker_runtime.DockerRuntime` runs it in
a container. Both restart a training that was killed (by a signal, the OOM killer, a lost
container) with `PUSHTUNE_RESUME=1`, a bounded number of times, so it resumes from its last
checkpoint; a script that exits with an error of its own is not restarted. Both give the script
the contract's variables and an allow-listed part of pushtune's environment (`passed_env`), and
end every process of the attempt when it ends.

`RUNTIMES` registers them: a name, a description, what each needs of the machine and a factory
taking the runtime options. `get_runtime` looks a name up; `auto` is the first whose needs are
met, by `auto_rank` (docker, then local). A new runtime is one `register_runtime` call.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol, TextIO

from jobs.errors import UserError
from jobs.paths import PROJECT_ROOT
from jobs.store.lease import agent_name
from jobs.train import profiles
from jobs.train.metrics import is_regular_file, read_json_output


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
    framework: str | None = None  # with `kind`, the attempt's profile (None: the kind's default)
    autolog: bool = True  # the launcher captures curve, metric and model (jobs.autolog)

    @property
    def profile(self):
        """The attempt's (kind, framework) profile (jobs.train.profiles): its image, how it resumes."""

        return profiles.get(self.kind, self.framework)

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

    def collect(self, spec: AttemptSpec) -> AttemptOutcome:
        """How a training that ended while no driver waited for it went (a monitor records it),
        clearing what it left behind."""
        ...

    def stop_training(self, spec: AttemptSpec) -> None:
        """Kill the attempt's running training (its driver lost the lease: jobs.store.lease); the
        driver's `run` then returns or raises as for any killed training."""
        ...


# All a script gets of pushtune's own environment (besides the contract's variables, which come
# from the attempt): nothing else, so that no secret of pushtune's or Jenkins'
# (PUSHTUNE_SMTP_PASSWORD, JENKINS_API_TOKEN, …) reaches a script, which may print its
# environment into its log, the store and the report.
PORTABLE_VARIABLES = frozenset({  # meaningful in a container too
    "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS", "VECLIB_MAXIMUM_THREADS", "TF_NUM_INTEROP_THREADS",
    "TF_NUM_INTRAOP_THREADS", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "KERAS_BACKEND",
    "CUDA_VISIBLE_DEVICES", "MPLBACKEND", "PYTHONHASHSEED", "PYTHONWARNINGS",
})
HOST_VARIABLES = frozenset({  # this machine's paths, users and locales; the image sets its own
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TERM", "LANG", "LANGUAGE",
    "KERAS_HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PYTHONIOENCODING", "PYTHONUTF8",
})
HOST_PREFIXES = ("LC_",)
PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy"})  # any case


def passed_env(environ: Mapping[str, str], *, host: bool) -> dict[str, str]:
    """The allow-listed part of `environ` for a script: on this machine (`host`) or in a container."""
    def passed(name: str) -> bool:
        if name in PORTABLE_VARIABLES or name.lower() in PROXY_VARIABLES:
            return True
        return host and (name in HOST_VARIABLES or name.startswith(HOST_PREFIXES))

    return {name: value for name, value in environ.items() if passed(name)}


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
        "PUSHTUNE_AUTOLOG": "1" if spec.autolog else "0",
        "PYTHONUNBUFFERED": "1",
    }
    if data:
        env["PUSHTUNE_DATA"] = data
    if resume:
        env["PUSHTUNE_RESUME"] = "1"
    return env


# Every attempt runs its script through the launcher (jobs/launch.py), which runs it as
# `python model.py` would, with the capture installed unless PUSHTUNE_AUTOLOG=0.
LAUNCH_COMMAND = ["python", "-m", "jobs.launch", "model.py"]


def resumable_epoch(output_dir: Path) -> int | None:
    """The epoch a resumed training starts from: what the kit's progress callback last wrote
    (None when progress.json is missing, not a regular file, too big or not an epoch)."""
    try:
        return int(read_json_output(output_dir / "progress.json")["epoch"])
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return None


def metric_written(output_dir: Path) -> bool:
    """Whether the script wrote its metric file (a regular file: a link or a FIFO is not one)."""
    return is_regular_file(output_dir / "metrics.json") or is_regular_file(output_dir / "accuracy.txt")


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
    """Copies a child's output into the attempt log (and to the terminal when verbose), until
    the pipe closes or, after `finish`, it has been quiet or busy past the given grace."""

    def __init__(self, stream, log: TextIO, echo: bool):
        super().__init__(daemon=True)
        self.stream, self.log, self.echo = stream, log, echo
        self._finish_by: float | None = None

    def finish(self, grace: float) -> None:
        self._finish_by = time.monotonic() + grace
        self.join(grace + 1)

    def run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with selectors.DefaultSelector() as selector:
            selector.register(self.stream, selectors.EVENT_READ)
            while self._finish_by is None or time.monotonic() < self._finish_by:
                if selector.select(timeout=0.1):
                    chunk = os.read(self.stream.fileno(), 1 << 16)
                    if not chunk:
                        break
                    append_log(self.log, decoder.decode(chunk), self.echo)
        append_log(self.log, decoder.decode(b"", final=True), self.echo)


STOP_GRACE_SECONDS = 5  # between SIGTERM and SIGKILL when an attempt is stopped
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36  # <linux/prctl.h>


class LocalRuntime:
    """Runs the script as `python model.py` under an attempt leader (`lead_attempt`) in a
    session of its own: the leader ends every process of the attempt when the script ends."""

    name = "local"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable
        self._running: dict[Path, subprocess.Popen] = {}  # attempt directory -> its leader, while it runs

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

    def collect(self, spec: AttemptSpec) -> AttemptOutcome:
        # Its leader reaped the script and ended what was left of the attempt; the exit code
        # went with it.
        return AttemptOutcome(exit_code=None)

    def stop_training(self, spec: AttemptSpec) -> None:
        # This driver's own leader (never another driver's of the same attempt) ends the script's
        # group, then every process left of the attempt (lead_attempt).
        child = self._running.get(spec.workdir)
        if child is not None:
            child.send_signal(signal.SIGTERM)

    def _run_once(self, spec: AttemptSpec, log: TextIO, deadline: float | None, resume: bool):
        # Never the contract's variables of pushtune's own environment (a PUSHTUNE_DATA exported
        # in the shell must not reach a run without --data): passed_env has none of them.
        env = {
            **passed_env(os.environ, host=True),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
            **contract_env(
                spec,
                output=str(spec.output_dir),
                data=str(spec.data_dir) if spec.data_dir else None,
                cache=str(spec.cache_dir),
                resume=resume,
            ),
        }
        # The script runs as this user, so it could read this process's own environment (pushtune's
        # secrets: PUSHTUNE_SMTP_PASSWORD, JENKINS_API_TOKEN, PUSHTUNE_DB …) from
        # /proc/<pid>/environ, or its memory. Not dumpable, this process's /proc files belong to
        # root, and ptrace needs CAP_SYS_PTRACE: closed to a script of an ordinary user, not to
        # root's (README, "What the local runtime isolates"). Kept for the driver's whole life.
        _prctl(PR_SET_DUMPABLE, 0)
        # -I: the leader imports nothing from the attempt directory or the script's environment.
        leader = f"import sys; sys.path.insert(0, {str(PROJECT_ROOT)!r}); " \
                 "from jobs.train.runtime import lead_attempt; lead_attempt(sys.argv[1:])"
        try:
            child = subprocess.Popen(
                [self.python, "-I", "-c", leader, self.python, *LAUNCH_COMMAND[1:]],
                cwd=spec.workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        except OSError as exc:
            raise UserError(f"cannot start {self.python}: {exc}") from None

        (spec.workdir / "process.json").write_text(json.dumps(
            {"pid": child.pid, "start": _start_ticks(child.pid), "agent": agent_name()}))
        self._running[spec.workdir] = child
        assert child.stdout is not None  # stdout=PIPE
        output = child.stdout
        pump = _LogPump(output, log, spec.verbose)
        pump.start()
        try:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            code = child.wait(timeout=remaining)
            timed_out = False
        except subprocess.TimeoutExpired:
            _stop(child)
            code, timed_out = child.returncode, True
        except BaseException:
            _stop(child)
            raise
        finally:
            self._running.pop(spec.workdir, None)
            # The leader has ended every process that could hold the pipe: EOF is at hand.
            pump.finish(grace=1.0)
            output.close()
        return code, timed_out


def _stop(child: subprocess.Popen) -> None:
    """SIGTERM the attempt's leader, which passes it on to the script's process group and kills
    the whole attempt after a grace; SIGKILL the leader's group should the leader not end."""
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=STOP_GRACE_SECONDS + 5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


def lead_attempt(command: list[str]) -> NoReturn:
    """The first process of a local attempt: runs `command` (the script) and ends as it ended,
    after killing every process the attempt left.

    As the attempt's child subreaper (PR_SET_CHILD_SUBREAPER), every process the script starts
    stays below it, however it detaches: a double fork, `setsid` or a new process group only
    hand an orphan to the nearest subreaper, this process, never to init. So its descendants in
    /proc are exactly what is left of the attempt, which no environment or process group a
    script can change would hide. The script dies with it (PR_SET_PDEATHSIG), e.g. when the
    leader is killed from outside. SIGTERM (the driver's stop) goes to the script's process
    group; after a grace the script is killed.
    """
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    leader = os.getpid()
    script = os.fork()
    if script == 0:
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != leader:  # the leader died before that took effect
                os._exit(1)
            for restored in (signal.SIGPIPE, signal.SIGXFSZ):  # as subprocess restores them
                signal.signal(restored, signal.SIG_DFL)
            os.execv(command[0], command)
        except BaseException as exc:
            os.write(2, f"[pushtune] cannot start {command[0]}: {exc}\n".encode())
        finally:
            os._exit(127)

    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        if not stopping:  # not again for the SIGTERM it sends its own group
            stopping = True
            signal.alarm(STOP_GRACE_SECONDS)
            os.killpg(leader, signal.SIGTERM)
            try:
                if os.getpgid(script) != leader:  # the script left the group
                    os.kill(script, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill_script(signum, frame) -> None:
        try:
            os.kill(script, signal.SIGKILL)
        except ProcessLookupError:  # reaped just now
            pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, kill_script)
    while True:
        pid, status = os.waitpid(-1, 0)  # also reaps orphans handed over while the script runs
        if pid == script:
            break
    signal.alarm(0)
    _kill_descendants(leader)
    if os.WIFSIGNALED(status):  # die by the same signal, so the driver sees how the script died
        signum = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(signum, signal.SIG_DFL)
        os.kill(leader, signum)
        os._exit(128 + signum)
    os._exit(os.waitstatus_to_exitcode(status))


def _kill_descendants(pid: int) -> None:
    """SIGKILL every process below `pid` (the calling subreaper) and reap them, until none is
    left. A killed process forks no more; what it forked before is found on the next pass."""
    while True:
        for victim in _descendants(pid):
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def _start_ticks(pid: int) -> int | None:
    """When a process started (clock ticks since boot): tells a pid from its reuse."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def local_process_alive(workdir: Path) -> bool:
    """Whether the training process that LocalRuntime last started for the attempt still runs.
    Never one of another agent's: its pid means nothing on this machine (as with a shared store)."""
    try:
        recorded = json.loads((workdir / "process.json").read_text())
    except (OSError, ValueError):
        return False
    if recorded.get("agent", agent_name()) != agent_name():
        return False
    ticks = _start_ticks(int(recorded["pid"]))
    if ticks is None or ticks != recorded["start"]:
        return False
    state = Path(f"/proc/{recorded['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"
