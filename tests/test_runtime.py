"""The local runtime: a real child process per attempt, restarted when it is killed."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jobs.train.runtime import (
    STOP_GRACE_SECONDS,
    AttemptOutcome,
    AttemptSpec,
    LocalRuntime,
    metric_written,
    resumable_epoch,
)

# Dies by SIGKILL (as the OOM killer or `kill -9` would do it) until it has been resumed
# `needed` times; each life trains one more "epoch" from the last progress it wrote.
DIES_UNTIL_RESUMED = textwrap.dedent("""\
    import json, os, signal
    out = os.environ["PUSHTUNE_OUTPUT"]
    progress = os.path.join(out, "progress.json")
    epoch = json.load(open(progress))["epoch"] if os.environ.get("PUSHTUNE_RESUME") else 0
    lives = os.path.join(out, "lives")
    n = int(open(lives).read()) + 1 if os.path.exists(lives) else 1
    open(lives, "w").write(str(n))
    print(f"life {n} starts at epoch {epoch}", flush=True)
    epoch += 2
    json.dump({"epoch": epoch}, open(progress, "w"))
    if n <= NEEDED:
        os.kill(os.getpid(), signal.SIGKILL)
    json.dump({"accuracy": 0.5, "epochs": epoch}, open(os.path.join(out, "metrics.json"), "w"))
""")


def spec_for(tmp_path: Path, source: str, **extra) -> AttemptSpec:
    workdir = tmp_path / "attempt-1"
    workdir.mkdir()
    (workdir / "model.py").write_text(source)
    return AttemptSpec(run_id=1, attempt=1, kind="ann", model_name="m.py", workdir=workdir,
                       data_dir=None, cache_dir=tmp_path / "cache", params={"x": 1}, **extra)


def test_a_killed_training_resumes_from_its_checkpoint(tmp_path):
    spec = spec_for(tmp_path, DIES_UNTIL_RESUMED.replace("NEEDED", "1"), max_restarts=3)
    restarts = []
    outcome = LocalRuntime().run(spec, on_restart=restarts.append)
    assert outcome.exit_code == 0 and outcome.restarts == 1 and outcome.error is None
    assert [(r.reason, r.exit_code, r.resumed_epoch) for r in restarts] == [("killed by SIGKILL", -9, 2)]
    log = spec.log_path.read_text()
    assert "life 2 starts at epoch 2" in log
    assert json.loads((spec.output_dir / "metrics.json").read_text())["epochs"] == 4


def test_a_training_that_keeps_dying_is_given_up_after_the_bound(tmp_path):
    spec = spec_for(tmp_path, DIES_UNTIL_RESUMED.replace("NEEDED", "99"), max_restarts=2)
    restarts = []
    outcome = LocalRuntime().run(spec, on_restart=restarts.append)
    assert outcome.exit_code == -9 and outcome.restarts == 2 and len(restarts) == 2
    assert outcome.error == "killed by SIGKILL; gave up after 2 restarts"
    assert (spec.output_dir / "lives").read_text() == "3"


def test_a_script_error_is_not_restarted(tmp_path):
    spec = spec_for(tmp_path, "raise SystemExit(4)\n")
    outcome = LocalRuntime().run(spec)
    assert outcome.exit_code == 4 and outcome.restarts == 0


def test_timeout_stops_the_whole_process_group(tmp_path):
    source = textwrap.dedent("""\
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open("child.pid", "w").write(str(child.pid))
        time.sleep(60)
    """)
    spec = spec_for(tmp_path, source, timeout=2)
    outcome = LocalRuntime().run(spec)
    assert outcome.timed_out and "timed out after 2 s" in outcome.error
    child_pid = int((spec.workdir / "child.pid").read_text())
    # the leader killed and reaped it before it ended: gone, or a zombie of no one's
    assert not Path(f"/proc/{child_pid}").exists() or "Z" in Path(f"/proc/{child_pid}/stat").read_text().split()[2]


def run_killing(spec: AttemptSpec, pid_to_kill: Callable[[], int | None]) -> AttemptOutcome:
    """LocalRuntime().run(spec), while a thread SIGKILLs pid_to_kill() once it names a process: it
    waits for the script to say it has started, however long that takes, not for a clock."""
    done = threading.Event()

    def killer() -> None:
        while not done.is_set():
            pid = pid_to_kill()
            if pid:
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.025)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        return LocalRuntime().run(spec)
    finally:
        done.set()
        thread.join()


def test_killed_from_outside_is_restarted(tmp_path):
    source = textwrap.dedent("""\
        import json, os, time
        out = os.environ["PUSHTUNE_OUTPUT"]
        if not os.environ.get("PUSHTUNE_RESUME"):
            open("pid", "w").write(str(os.getpid()))
            time.sleep(3600)
        json.dump({"accuracy": 1.0}, open(os.path.join(out, "metrics.json"), "w"))
    """)
    spec = spec_for(tmp_path, source, max_restarts=1)
    pid_file = spec.workdir / "pid"
    outcome = run_killing(spec, lambda: int(pid_file.read_text() or 0) if pid_file.exists() else None)
    assert outcome.exit_code == 0 and outcome.restarts == 1
    assert json.loads((spec.output_dir / "metrics.json").read_text()) == {"accuracy": 1.0}


def test_the_contract_environment(tmp_path):
    source = textwrap.dedent("""\
        import json, os
        keys = ["PUSHTUNE_OUTPUT", "PUSHTUNE_PARAMS", "PUSHTUNE_CACHE", "PUSHTUNE_RESUME", "PUSHTUNE_DATA"]
        json.dump({k: os.environ.get(k) for k in keys} | {"cwd": os.getcwd()},
                  open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "env.json"), "w"))
    """)
    spec = spec_for(tmp_path, source)
    LocalRuntime().run(spec)
    env = json.loads((spec.output_dir / "env.json").read_text())
    assert env["PUSHTUNE_OUTPUT"] == str(spec.output_dir) and json.loads(env["PUSHTUNE_PARAMS"]) == {"x": 1}
    assert env["PUSHTUNE_RESUME"] is None and env["PUSHTUNE_DATA"] is None
    assert env["cwd"] == str(spec.workdir) and env["PUSHTUNE_CACHE"] == str(spec.cache_dir)


# PUSHTUNE_DATA among them: the runtime never passes pushtune's own environment's on. An exported
# PUSHTUNE_DATA reaches a script only as the run's data option (jobs.run_options.data_option),
# recorded with the run (tests/test_loop.py), never by leaking through here.
SECRETS = {"PUSHTUNE_SMTP_PASSWORD": "smtp-secret", "JENKINS_API_TOKEN": "jenkins-secret",
           "PUSHTUNE_TRIGGER_TOKEN": "trigger-secret", "AWS_SECRET_ACCESS_KEY": "aws-secret",
           "PUSHTUNE_HOME": "/somewhere/else", "PUSHTUNE_DATA": "/exported/in/the/shell"}
ALLOWED = {"LC_PAPER": "C", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "localhost",
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_secrets_never_reach_the_script(tmp_path, monkeypatch):
    for name, value in {**SECRETS, **ALLOWED, "PYTHONPATH": "/extra/lib"}.items():
        monkeypatch.setenv(name, value)
    source = textwrap.dedent("""\
        import json, os
        print(dict(os.environ))
        json.dump(dict(os.environ), open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "env.json"), "w"))
    """)
    spec = spec_for(tmp_path, source)
    assert LocalRuntime().run(spec).exit_code == 0
    env = json.loads((spec.output_dir / "env.json").read_text())
    log = spec.log_path.read_text()
    for name, value in SECRETS.items():
        assert name not in env and value not in log
    assert {name: env.get(name) for name in ALLOWED} == ALLOWED
    assert env["PATH"] == os.environ["PATH"] and env["HOME"] == os.environ["HOME"]
    assert env["PYTHONPATH"] == os.pathsep.join([str(Path(__file__).resolve().parent.parent), "/extra/lib"])
    assert env["PUSHTUNE_OUTPUT"] == str(spec.output_dir) and env["PUSHTUNE_CACHE"] == str(spec.cache_dir)
    assert (env["PUSHTUNE_RUN"], env["PUSHTUNE_ATTEMPT"], env["PUSHTUNE_PARAMS"]) == ("1", "1", '{"x": 1}')


# --- every process of the attempt ends with it ------------------------------------------------------

# Leaves a sleeping child, and a grandchild that left the session (setsid after a double fork)
# and ignores SIGTERM; both hold the log pipe and never end by themselves (pytest's timeout ends
# the test long before). Each writes its start time (clock ticks) to pid.<pid>.
LEAVES_PROCESSES = textwrap.dedent("""\
    import os, signal, subprocess, sys, time

    NOTE = ("import os; open(f'pid.{os.getpid()}', 'w')"
            ".write(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])")
    subprocess.Popen([sys.executable, "-c", NOTE + "; import time; time.sleep(3600)"])
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            exec(NOTE)
            time.sleep(3600)
        os._exit(0)
    while len([name for name in os.listdir() if name.startswith("pid.")]) < 2:
        time.sleep(0.01)
    print("children started", flush=True)
    time.sleep(SLEEP)
    print("accuracy: 0.5")
""")


def left_running(workdir: Path) -> list[int]:
    """The processes of pid.<pid> files still running (a pid reused since does not count)."""
    running = []
    for note in workdir.glob("pid.*"):
        pid = int(note.suffix[1:])
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and fields[19] == (note.read_text() or fields[19]):
            running.append(pid)
    return running


def left_running_once_settled(workdir: Path) -> list[int]:
    """left_running, once a SIGKILL sent on a parent's death (asynchronous) has had time to land:
    polled until none is left, for at most 30 s (they would sleep for an hour)."""
    for _ in range(300):
        running = left_running(workdir)
        if not running:
            return running
        time.sleep(0.1)
    return running


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def test_processes_the_script_leaves_end_with_it_at_once(tmp_path):
    # They never end by themselves and hold the log pipe: run() returns only because it ends them
    # (waiting for them, or for the pipe's end, would never return).
    spec = spec_for(tmp_path, LEAVES_PROCESSES.replace("SLEEP", "0"))
    outcome = LocalRuntime().run(spec)
    leftovers = left_running(spec.workdir)
    kill_all(leftovers)
    assert outcome.exit_code == 0 and "children started" in spec.log_path.read_text()
    assert len(list(spec.workdir.glob("pid.*"))) == 2
    assert leftovers == []


def test_a_timeout_ends_processes_that_left_the_session(tmp_path):
    spec = spec_for(tmp_path, LEAVES_PROCESSES.replace("SLEEP", "3600"), timeout=1)
    outcome = LocalRuntime().run(spec)
    leftovers = left_running(spec.workdir)
    kill_all(leftovers)
    assert outcome.timed_out and outcome.error == "attempt timed out after 1 s"
    # the script ended on SIGTERM, so no grace was waited for the one that ignores it
    assert outcome.exit_code == -signal.SIGTERM
    assert len(list(spec.workdir.glob("pid.*"))) == 2
    assert leftovers == []


def test_a_script_ignoring_sigterm_is_killed_after_the_grace(tmp_path):
    source = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "print('ready', flush=True)\ntime.sleep(3600)\n")
    spec = spec_for(tmp_path, source, timeout=1)
    started = time.monotonic()
    outcome = LocalRuntime().run(spec)
    assert outcome.timed_out and outcome.exit_code == -signal.SIGKILL
    # a lower bound only (a loaded machine makes it later, never earlier): the grace was given
    assert time.monotonic() - started >= 1 + STOP_GRACE_SECONDS


def test_killing_the_attempts_process_kills_its_script_and_restarts_it(tmp_path):
    # What `kill -9` of process.json's pid does (a monitor test, the resume benchmark).
    source = textwrap.dedent("""\
        import json, os, time
        out = os.environ["PUSHTUNE_OUTPUT"]
        if not os.environ.get("PUSHTUNE_RESUME"):
            open("pid.%d" % os.getpid(), "w").write(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
            time.sleep(3600)
        json.dump({"accuracy": 1.0}, open(os.path.join(out, "metrics.json"), "w"))
    """)
    spec = spec_for(tmp_path, source, max_restarts=1)
    outcome = run_killing(spec, lambda: json.loads((spec.workdir / "process.json").read_text())["pid"]
                          if list(spec.workdir.glob("pid.*")) else None)  # the leader, once the script runs
    leftovers = left_running_once_settled(spec.workdir)
    kill_all(leftovers)
    assert outcome.exit_code == 0 and outcome.restarts == 1 and leftovers == []


# --- what the runtime reads of the output directory ----------------------------------------------


def test_a_linked_or_fifo_metric_file_is_not_a_written_metric(tmp_path):
    (tmp_path / "elsewhere.json").write_text('{"accuracy": 1.0}')
    (tmp_path / "metrics.json").symlink_to(tmp_path / "elsewhere.json")
    os.mkfifo(tmp_path / "accuracy.txt")
    assert not metric_written(tmp_path)
    (tmp_path / "accuracy.txt").unlink()
    (tmp_path / "accuracy.txt").write_text("0.5")
    assert metric_written(tmp_path)


@pytest.mark.timeout(30)
def test_a_linked_fifo_or_oversize_progress_file_has_no_epoch(tmp_path):
    (tmp_path / "elsewhere.json").write_text('{"epoch": 7}')
    (tmp_path / "progress.json").symlink_to(tmp_path / "elsewhere.json")
    assert resumable_epoch(tmp_path) is None
    (tmp_path / "progress.json").unlink()
    os.mkfifo(tmp_path / "progress.json")
    assert resumable_epoch(tmp_path) is None  # without waiting for a writer
    (tmp_path / "progress.json").unlink()
    for text in ('{"epoch": 1e999}', '{"epoch": 3, "pad": "' + "x" * (1 << 20) + '"}', "[" * 100_000):
        (tmp_path / "progress.json").write_text(text)
        assert resumable_epoch(tmp_path) is None
    (tmp_path / "progress.json").write_text('{"epoch": 3}')
    assert resumable_epoch(tmp_path) == 3
