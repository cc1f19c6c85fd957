"""Fault injection: a training whose driver and process were killed comes back from its last
checkpoint through the monitor, with real Keras training, real processes and the real store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import docker
import pytest

from conftest import ROOT, requires_engine
from jobs.store.run_store import RunStore

RUNTIMES = ["local", pytest.param("docker", marks=[requires_engine, pytest.mark.docker])]

# A small Keras model that trains slowly enough to be killed mid-way, checkpointing with the kit.
SLOW_KERAS = textwrap.dedent("""\
    import time
    import numpy as np
    import keras
    from jobs import kit

    class Slow(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(0.4)

    start = (kit.progress() or {}).get("epoch", 0) if kit.resuming() else 0
    print(f"training starts at epoch {start}", flush=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=EPOCHS, batch_size=64, verbose=0, callbacks=[*kit.callbacks(), Slow()])
    kit.report(accuracy=float(model.evaluate(x, y, verbose=0)[1]))
""")


def env_for(home: Path) -> dict:
    return {**os.environ, "PUSHTUNE_HOME": str(home), "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def epoch_of(output: Path) -> int:
    try:
        return json.loads((output / "progress.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def kill_training(runtime: str, attempt: Path) -> None:
    """SIGKILL the attempt's training: its process, or its container (`docker kill`)."""
    if runtime == "docker":
        labels = ["pushtune.role=train", "pushtune.attempt=1", f"pushtune.workdir={attempt.resolve()}"]
        client = docker.from_env(timeout=60)
        (container,) = client.containers.list(filters={"label": labels, "status": "running"})
        container.kill()
        wait_for(lambda: client.containers.get(container.id).status == "exited", 30, "the kill")
        return
    pid = json.loads((attempt / "process.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or
             Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 10, "the kill")


def kill_driver_and_training(tmp_path: Path, home: Path, runtime: str, epochs: int, *extra: str) -> Path:
    """Start `pushtune run`, let it checkpoint, then SIGKILL the driver and the training."""
    model = tmp_path / "slow.py"
    model.write_text(SLOW_KERAS.replace("EPOCHS", str(epochs)))
    driver = subprocess.Popen(
        [sys.executable, "-m", "jobs", "run", str(model), "--threshold", "0", "--max-attempts", "1",
         "--runtime", runtime, *extra],
        cwd=ROOT, env=env_for(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    attempt = home / "runs" / "1" / "attempt-1"
    wait_for(lambda: epoch_of(attempt / "output") >= 3, 240, "a checkpoint at epoch 3")
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    kill_training(runtime, attempt)
    return attempt


def monitor_once(home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs", "monitor", "--once"], cwd=ROOT,
                          env=env_for(home), capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_killed_training_resumes_from_its_checkpoint_through_the_monitor(tmp_path, runtime):
    home = tmp_path / "home"
    attempt = kill_driver_and_training(tmp_path, home, runtime, epochs=12)
    killed_at = epoch_of(attempt / "output")
    store = RunStore.open(home / "pushtune.db")
    assert store.get_run(1)["status"] == "running"  # nothing recorded was lost or finished

    result = monitor_once(home)
    assert result.returncode == 0, result.stderr
    gone = "killed by SIGKILL" if runtime == "docker" else "training process gone"
    assert f"run 1 attempt 1: resumed ({gone}; from epoch" in result.stdout

    wait_for(lambda: store.get_run(1)["status"] != "running", 180, "the resumed run to end")
    run, attempt_row = store.get_run(1), store.get_attempt(1, 1)
    assert run["status"] == "passed" and attempt_row["status"] == "ok"
    assert 0 <= attempt_row["metric_value"] <= 1
    restarts = store.restarts(1, 1)
    assert len(restarts) == 1 and restarts[0]["actor"] == "monitor"
    assert restarts[0]["resumed_epoch"] >= killed_at >= 3
    log = (attempt / "log.txt").read_text()
    assert "training starts at epoch 0" in log
    assert f"training starts at epoch {restarts[0]['resumed_epoch']}" in log  # not from scratch
    wait_for(lambda: (Path(run["run_dir"]) / "report.html").exists(), 30, "the report")


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_two_monitors_at_once_resume_it_only_once(tmp_path, runtime):
    home = tmp_path / "home"
    kill_driver_and_training(tmp_path, home, runtime, epochs=12)
    monitors = [subprocess.Popen([sys.executable, "-m", "jobs", "monitor", "--once"], cwd=ROOT,
                                 env=env_for(home), stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [m.communicate(timeout=120)[0] for m in monitors]
    assert sum("resumed" in out for out in outputs) == 1, outputs
    store = RunStore.open(home / "pushtune.db")
    wait_for(lambda: store.get_run(1)["status"] != "running", 180, "the resumed run to end")
    assert len(store.restarts(1, 1)) == 1 and store.get_attempt(1, 1)["status"] == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_training_that_keeps_dying_is_given_up_after_the_bound(tmp_path, runtime):
    home = tmp_path / "home"
    attempt = kill_driver_and_training(tmp_path, home, runtime, 40, "--max-restarts", "1")
    store = RunStore.open(home / "pushtune.db")
    assert "resumed" in monitor_once(home).stdout
    # the resumed training dies too, and so does its new driver: nothing may restart it again
    wait_for(lambda: (attempt / "log.txt").read_text().count("training starts at epoch") >= 2
             and epoch_of(attempt / "output") >= 4, 240, "the resumed training")
    _kill_resume_driver(home)
    kill_training(runtime, attempt)
    result = monitor_once(home)
    assert "gave up" in result.stdout and "after 1 restarts" in result.stdout
    wait_for(lambda: store.get_run(1)["status"] != "running", 60, "the run to end")
    assert store.get_attempt(1, 1)["status"] == "failed"
    assert store.get_run(1)["status"] == "failed" and len(store.restarts(1, 1)) == 1


def _kill_resume_driver(home: Path) -> None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"resume" in cmdline and f"PUSHTUNE_HOME={home}".encode() in environ:
            os.kill(int(proc.name), signal.SIGKILL)


@pytest.mark.slow
def test_a_chain_run_is_resumed_and_handed_back_to_its_chain(tmp_path):
    home = tmp_path / "home"
    model = tmp_path / "slow.py"
    # noisy labels: no attempt can meet 0.99, so the run must go on to its chain's attempt 2 (on
    # the clean labels an unseeded training sometimes reached 0.992 and the run ended)
    noisy = SLOW_KERAS.replace("y = (x[:, 0] > 0)", "y = (x[:, 0] + rng.normal(size=256) > 0)")
    assert noisy != SLOW_KERAS
    model.write_text(noisy.replace("EPOCHS", "12"))
    start = subprocess.run([sys.executable, "-m", "jobs", "start", str(model), "--runtime", "local",
                            "--threshold", "0.99", "--max-attempts", "2"],
                           cwd=ROOT, env=env_for(home), capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    train = subprocess.Popen([sys.executable, "-m", "jobs", "train", "1"], cwd=ROOT, env=env_for(home),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    attempt = home / "runs" / "1" / "attempt-1"
    wait_for(lambda: epoch_of(attempt / "output") >= 3, 240, "a checkpoint at epoch 3")
    train.send_signal(signal.SIGKILL)
    train.wait()
    kill_training("local", attempt)

    assert "resumed" in monitor_once(home).stdout
    store = RunStore.open(home / "pushtune.db")
    wait_for(lambda: store.get_attempt(1, 1)["status"] != "running", 180, "the resumed attempt")
    assert store.get_attempt(1, 1)["status"] == "ok"
    # the chain plans attempt 2 (its tweak job, recorded pending for its train job); the monitor
    # neither trains it nor ends the run
    wait_for(lambda: "attempt 2/2 next" in (home / "runs" / "1" / "resume.log").read_text(), 30, "the decision")
    assert [a["status"] for a in store.attempts(1)] == ["ok", "pending"]
    assert store.get_run(1)["status"] == "running"
    assert "nothing to do" in monitor_once(home).stdout


TRIVIAL = textwrap.dedent("""\
    import json, os
    if False:  # classified as a regression model; trains nothing, reports at once
        from sklearn.linear_model import LogisticRegression
        LogisticRegression(C=1.0)
    json.dump({"accuracy": 1.0}, open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "metrics.json"), "w"))
""")


def test_a_run_whose_driver_died_between_attempts_is_continued_but_a_chain_run_is_not(
        tmp_path, pushtune_home, monkeypatch):
    from jobs.ci import monitor
    from jobs.loop import RunOptions, start_run

    model = tmp_path / "trivial.py"
    model.write_text(TRIVIAL)
    store = RunStore.open()
    orphan = start_run(store, model, RunOptions(runtime="local", threshold=0.5))
    chained = start_run(store, model, RunOptions(runtime="local", threshold=0.5, chain=True))
    monkeypatch.setattr(monitor, "IDLE_GRACE", 0.0)

    actions = monitor.sweep(store)
    assert [(a.run_id, a.what) for a in actions] == [(orphan, "continued")]
    wait_for(lambda: store.get_run(orphan)["status"] == "passed", 60, "the continued run")
    assert store.get_run(chained)["status"] == "running" and store.attempts(chained) == []


def test_the_interval_must_be_a_positive_finite_number_of_seconds(pushtune_home, cli):
    for value in ("nan", "inf", "1e300", "0", "-1"):
        result = cli("monitor", f"--interval={value}", timeout=30)
        assert result.returncode == 2, (value, result.stderr)
        assert result.stderr.splitlines() == [
            "pushtune: error: --interval must be a positive number of seconds, at most 86400"], value
