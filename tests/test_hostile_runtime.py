"""Hostile model scripts, end to end: what they print, plant in their output directory or report
must not leak pushtune's secrets or host files, hang the driver or pass the gate. Real scripts,
real processes, real containers, the real CLI and store."""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from pathlib import Path

import docker
import pytest

from conftest import requires_engine
from jobs.loop import RunOptions, run_model
from jobs.store.run_store import RunStore
from jobs.train.docker_runtime import DockerRuntime
from jobs.train.metrics import LOG_TAIL_BYTES
from jobs.train.runtime import LocalRuntime

# Classified as a regression model (a scikit-learn estimator); trains nothing.
HEADER = textwrap.dedent("""\
    import json, os, sys
    if False:
        from sklearn.linear_model import LogisticRegression
        LogisticRegression(C=1.0)
    out = os.environ["PUSHTUNE_OUTPUT"]
""")
SECRETS = {"PUSHTUNE_SMTP_PASSWORD": "smtp-pass-4d1f", "JENKINS_API_TOKEN": "jenkins-token-9c2e",
           "PUSHTUNE_TRIGGER_TOKEN": "trigger-token-77ab"}


def model(tmp_path: Path, body: str) -> Path:
    path = tmp_path / f"hostile_{uuid.uuid4().hex[:8]}.py"
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def only_attempt(store: RunStore, summary: dict) -> dict:
    (attempt,) = store.attempts(summary["run_id"])
    return attempt


def test_a_script_printing_its_environment_shows_no_secret(tmp_path, cli, pushtune_home):
    script = model(tmp_path, """\
        print(dict(os.environ))
        sys.exit(1)
    """)
    run = cli("run", script, "--runtime", "local", "--max-attempts", "1", env=SECRETS)
    assert run.returncode == 1, run.stderr
    shown = cli("show", "1", "--json")
    assert shown.returncode == 0, shown.stderr
    log = (pushtune_home / "runs" / "1" / "attempt-1" / "log.txt").read_text()
    assert "PUSHTUNE_OUTPUT" in log and "PUSHTUNE_OUTPUT" in shown.stdout  # the tail is there
    for secret in SECRETS.values():
        assert secret not in log and secret not in shown.stdout


@pytest.mark.timeout(120)
def test_a_fifo_as_metrics_json_fails_the_attempt_instead_of_hanging(tmp_path, pushtune_home):
    script = model(tmp_path, """\
        os.mkfifo(os.path.join(out, "metrics.json"))
        os.mkfifo(os.path.join(out, "history.json"))
    """)
    store = RunStore.open()
    started = time.monotonic()
    summary = run_model(script, RunOptions(threshold=0.5, max_attempts=1, runtime="local"),
                        LocalRuntime(), store)
    assert time.monotonic() - started < 60
    attempt = only_attempt(store, summary)
    assert summary["status"] == "failed"
    assert attempt["error"] == "metrics.json is not a regular file" and attempt["curve"] is None


def test_an_accuracy_out_of_range_fails_the_gate(tmp_path, pushtune_home):
    script = model(tmp_path, """\
        json.dump({"accuracy": 5.0}, open(os.path.join(out, "metrics.json"), "w"))
    """)
    store = RunStore.open()
    summary = run_model(script, RunOptions(threshold=0.9, max_attempts=1, runtime="local"),
                        LocalRuntime(), store)
    assert summary["status"] == "failed" and summary["best"] is None
    attempt = only_attempt(store, summary)
    assert attempt["error"] == "metrics.json: accuracy = 5 is outside its range [0, 1]"
    assert attempt["metric_value"] is None and attempt["metrics"] == {"accuracy": 5.0}


def test_one_endless_line_of_output_is_capped_in_the_store(tmp_path, pushtune_home):
    script = model(tmp_path, """\
        sys.stdout.write("z" * (20 << 20))
        sys.exit(3)
    """)
    store = RunStore.open()
    summary = run_model(script, RunOptions(threshold=0.5, max_attempts=1, runtime="local"),
                        LocalRuntime(), store)
    attempt = only_attempt(store, summary)
    assert attempt["error"] == "script exited with code 3"
    assert 0 < len(attempt["log_tail"].encode()) <= LOG_TAIL_BYTES + 3
    assert (Path(attempt["dir"]) / "log.txt").stat().st_size >= 20 << 20  # the whole log stays


@pytest.mark.docker
@requires_engine
def test_links_a_container_plants_to_host_files_are_never_followed(tmp_path, pushtune_home):
    secret = tmp_path / "host-secret.json"
    secret.write_text('{"accuracy": 0.99, "epochs": 1, "history": [{"epoch": 1, "loss": 0.1}], '
                      '"token": "HOST-FILE-3b7c"}')
    script = model(tmp_path, f"""\
        for name in ("metrics.json", "accuracy.txt", "history.json", "progress.json", "model.keras"):
            os.symlink({str(secret)!r}, os.path.join(out, name))  # a host path, dangling in here
    """)
    store = RunStore.open()
    client = docker.from_env(timeout=60)
    summary = run_model(script, RunOptions(threshold=0.5, max_attempts=1, runtime="docker"),
                        DockerRuntime(client, memory="256m", cpus=1, network="none"), store)
    attempt = only_attempt(store, summary)
    assert summary["status"] == "failed"
    assert attempt["error"] == "metrics.json is a symbolic link (not followed)"
    assert attempt["metrics"] is None and attempt["curve"] is None and attempt["artifact_path"] is None
    report = Path(summary["report"]).read_text()
    assert "HOST-FILE-3b7c" not in json.dumps(attempt, default=str) + json.dumps(summary) + report
