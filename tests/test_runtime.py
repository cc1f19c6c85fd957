"""The local runtime: a real child process per attempt, restarted when it is killed."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import threading
import time
from pathlib import Path

from jobs.runtime import AttemptSpec, LocalRuntime

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
    time.sleep(0.2)
    assert not Path(f"/proc/{child_pid}").exists() or "Z" in Path(f"/proc/{child_pid}/stat").read_text().split()[2]


def test_killed_from_outside_is_restarted(tmp_path):
    source = textwrap.dedent("""\
        import json, os, time
        out = os.environ["PUSHTUNE_OUTPUT"]
        if not os.environ.get("PUSHTUNE_RESUME"):
            open("pid", "w").write(str(os.getpid()))
            time.sleep(60)
        json.dump({"accuracy": 1.0}, open(os.path.join(out, "metrics.json"), "w"))
    """)
    spec = spec_for(tmp_path, source, max_restarts=1)

    def kill_when_started():
        pid_file = spec.workdir / "pid"
        for _ in range(200):
            if pid_file.exists() and pid_file.read_text():
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    outcome = LocalRuntime().run(spec)
    killer.join()
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
