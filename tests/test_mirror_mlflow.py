"""The MLflow mirror (jobs/mirror/mlflow.py) against a real `mlflow server` on 127.0.0.1 (SQLite
backend, local artifact root), from its own venv (scripts/mlflow-server-venv.sh; PUSHTUNE_MLFLOW_SERVER
names its `mlflow`). What the mirror wrote is read back over MLflow's REST API with plain HTTP,
not with the client under test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import unavailable

pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
SERVER = Path(os.environ.get("PUSHTUNE_MLFLOW_SERVER") or ROOT / ".venv-mlflow" / "bin" / "mlflow")
START_TIMEOUT = 180.0  # seconds for a cold server to migrate its SQLite database and answer /health

IRIS = """\
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

X, y = load_iris(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
clf = LogisticRegression(max_iter=3)
clf.fit(X_train, y_train)
print("accuracy:", clf.score(X_test, y_test))
"""

TORCH_ACCURACY = """\
with torch.no_grad():
    print("accuracy:", (model(x).argmax(1) == y).float().mean().item())
"""

# The tweaked attempt (max_iter 3 -> 30) stops the tracking server before pushtune mirrors it, and
# returns once the server refuses connections: attempt 1 was mirrored, attempt 2 cannot be.
STOPS_THE_SERVER = IRIS + """\
import os, signal, socket
if clf.max_iter > 3:
    os.killpg(SERVER_GROUP, signal.SIGTERM)
    while True:
        try:
            socket.create_connection(("127.0.0.1", SERVER_PORT), timeout=1).close()
        except OSError:
            break
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on a free port of 127.0.0.1, once its /health answers."""
    if not SERVER.is_file():
        unavailable(f"no MLflow server at {SERVER}: scripts/mlflow-server-venv.sh makes .venv-mlflow "
                    f"(or set PUSHTUNE_MLFLOW_SERVER)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(folder / "server.log", "wb")
    server = subprocess.Popen(
        [str(SERVER), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited {server.returncode}: {(folder / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # polling a readiness endpoint: there is no event to wait on
    stop_server(server)
    pytest.fail(f"mlflow server did not answer /health within {START_TIMEOUT:.0f} s")


def stop_server(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    server.wait(timeout=60)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    pytest.importorskip("mlflow", reason="the client: pip install 'pushtune[mlflow]'")
    server, url = start_server(tmp_path_factory.mktemp("mlflow"))
    yield url
    stop_server(server)


class Rest:
    """MLflow's REST API, read with plain HTTP."""

    def __init__(self, url: str):
        self.url = f"{url}/api/2.0/mlflow"

    def get(self, endpoint: str, **params) -> dict:
        response = httpx.get(f"{self.url}/{endpoint}", params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, endpoint: str, body: dict) -> dict:
        response = httpx.post(f"{self.url}/{endpoint}", json=body, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def runs_of(self, experiment_name: str, run_id: int) -> tuple[dict, list[dict]]:
        """The parent run of pushtune run `run_id` and its nested attempt runs, in attempt order."""
        experiment = self.get("experiments/get-by-name", experiment_name=experiment_name)["experiment"]
        found = self.post("runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                          "filter": f"tags.`pushtune.run_id` = '{run_id}'"})["runs"]
        for run in found:
            run["tags"] = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
            run["metrics"] = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
            run["params"] = {p["key"]: p["value"] for p in run["data"].get("params", [])}
        [parent] = [r for r in found if "pushtune.attempt" not in r["tags"]]
        attempts = sorted((r for r in found if "pushtune.attempt" in r["tags"]),
                          key=lambda r: int(r["tags"]["pushtune.attempt"]))
        return parent, attempts

    def artifacts(self, run_id: str, path: str = "") -> set[str]:
        return {f["path"] for f in self.get("artifacts/list", run_id=run_id, path=path).get("files", [])}

    def artifact_text(self, run_id: str, path: str) -> str:
        response = httpx.get(f"{self.url.rsplit('/api/', 1)[0]}/get-artifact",
                             params={"run_uuid": run_id, "path": path}, timeout=30)
        assert response.status_code == 200, response.text
        return response.text

    def alias(self, name: str) -> dict:
        """The registered model version the alias `production` points at."""
        return self.get("registered-models/alias", name=name, alias="production")["model_version"]


def push(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def run_json(cli, *args) -> dict:
    result = cli("run", *map(str, args), "--runtime", "local", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)  # MLflow's own "View run …" lines would break this


def test_a_run_its_attempts_and_versions_are_mirrored_and_the_alias_follows_a_rollback(
        cli, mlflow_server, pushtune_home, tmp_path):
    rest = Rest(mlflow_server)
    name = f"iris-{uuid.uuid4().hex[:8]}"
    model = push(tmp_path / "repo", name, IRIS)
    summary = run_json(cli, model, "--threshold", "0.97", "--max-attempts", "3", "--mlflow", mlflow_server)
    assert summary["status"] == "passed" and len(summary["attempts"]) >= 2

    parent, attempts = rest.runs_of(name, summary["run_id"])
    assert parent["info"]["status"] == "FINISHED"
    assert parent["tags"]["pushtune.status"] == "passed"
    assert parent["tags"]["pushtune.best_attempt"] == str(summary["best"]["attempt"])
    assert parent["metrics"]["accuracy"] == summary["best"]["accuracy"]
    assert parent["params"]["threshold"] == "0.97"
    assert [int(a["tags"]["pushtune.attempt"]) for a in attempts] == [a["n"] for a in summary["attempts"]]
    for mirrored, attempt in zip(attempts, summary["attempts"], strict=True):
        assert mirrored["tags"]["mlflow.parentRunId"] == parent["info"]["run_id"]
        assert mirrored["tags"]["pushtune.change"] == (attempt["tweak"] or "as pushed")
        assert mirrored["tags"].get("pushtune.reason") == attempt["reason"]
        assert mirrored["metrics"]["accuracy"] == attempt["accuracy"]
    assert attempts[1]["params"]["tweaks"] == summary["attempts"][1]["tweak"]

    best = attempts[summary["best"]["attempt"] - 1]
    run_dir = pushtune_home / "runs" / str(summary["run_id"]) / f"attempt-{summary['best']['attempt']}"
    assert rest.artifacts(best["info"]["run_id"]) == {"diff.patch", "log.txt", "model"}
    assert rest.artifacts(best["info"]["run_id"], "model") == {"model/model.joblib", "model/served.onnx"}
    assert rest.artifact_text(best["info"]["run_id"], "diff.patch") == (run_dir / "diff.patch").read_text()
    assert rest.artifact_text(best["info"]["run_id"], "log.txt") == (run_dir / "log.txt").read_text()

    production = rest.alias(name)
    assert production["run_id"] == best["info"]["run_id"]
    assert {t["key"]: t["value"] for t in production["tags"]}["pushtune.version"] == "1"

    # v2, registered as a candidate, then forced to production: the alias moves to it …
    second = run_json(cli, model, "--threshold", "0.97", "--max-attempts", "3", "--no-promote",
                      "--mlflow", mlflow_server)
    assert second["deployment"]["version"] == 2 and second["deployment"]["status"] == "candidate"
    assert rest.alias(name)["version"] == production["version"]  # a candidate moves nothing
    promoted = cli("promote", second["run_id"], "--force")
    assert promoted.returncode == 0, promoted.stderr
    moved = rest.alias(name)
    assert {t["key"]: t["value"] for t in moved["tags"]}["pushtune.version"] == "2"
    assert moved["run_id"] == rest.runs_of(name, second["run_id"])[1][-1]["info"]["run_id"]

    # … and a rollback moves it back to v1
    rolled = cli("rollback", name)
    assert rolled.returncode == 0, rolled.stderr
    assert rest.alias(name)["version"] == production["version"]
    versions = rest.get("model-versions/search", filter=f"name = '{name}'")["model_versions"]
    status = {v["version"]: {t["key"]: t["value"] for t in v["tags"]} for v in versions}
    assert status[moved["version"]]["pushtune.status"] == "retired"
    assert status[production["version"]]["pushtune.status"] == "production"


def test_a_torch_scripts_epochs_are_step_metrics(cli, mlflow_server, pushtune_home, tmp_path):
    pytest.importorskip("torch")
    from test_autolog_torch import IRIS_FULL_BATCH  # a plain loop: its curve is captured per epoch

    rest = Rest(mlflow_server)
    name = f"torch-iris-{uuid.uuid4().hex[:8]}"
    model = push(tmp_path / "repo", name, IRIS_FULL_BATCH + TORCH_ACCURACY)
    summary = run_json(cli, model, "--threshold", "0.5", "--max-attempts", "1", "--mlflow", mlflow_server)
    [attempt] = rest.runs_of(name, summary["run_id"])[1]
    history = json.loads((pushtune_home / "runs" / str(summary["run_id"]) / "attempt-1" / "output"
                          / "history.json").read_text())["history"]
    assert len(history) == 12
    for key in {k for row in history for k in row} - {"epoch"}:
        steps = rest.get("metrics/get-history", run_id=attempt["info"]["run_id"], metric_key=f"curve/{key}")
        assert sorted((m["step"], m["value"]) for m in steps["metrics"]) == [
            (row["epoch"], pytest.approx(row[key])) for row in history if key in row]


def test_a_server_stopped_mid_run_costs_one_warning_not_the_run(cli, tmp_path):
    pytest.importorskip("mlflow", reason="the client: pip install 'pushtune[mlflow]'")
    server, url = start_server(tmp_path / "mlflow")
    try:
        source = STOPS_THE_SERVER.replace("SERVER_GROUP", str(server.pid)).replace(
            "SERVER_PORT", url.rsplit(":", 1)[1])
        model = push(tmp_path / "repo", "iris", source)
        result = cli("run", model, "--runtime", "local", "--threshold", "0.97", "--max-attempts", "3",
                     "--json", env={"MLFLOW_TRACKING_URI": url})
    finally:
        stop_server(server)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["status"] == "passed" and len(summary["attempts"]) == 2
    warnings = [line for line in result.stderr.splitlines() if "MLflow" in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith(f"pushtune: warning: run {summary['run_id']}: mirroring to MLflow at {url} failed")


def test_a_uri_with_a_password_is_refused_in_one_line(cli, tmp_path):
    model = push(tmp_path / "repo", "iris", IRIS)
    result = cli("run", model, "--runtime", "local", "--mlflow", "http://me:secret@127.0.0.1:5000")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pushtune: error: --mlflow: the URI holds a password: give it in MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD instead"]
    assert "secret" not in result.stderr


def test_a_job_chains_steps_each_add_what_is_missing(cli, mlflow_server, tmp_path):
    """`pushtune start --mlflow` records the URI; train, tweak, train and finish, each a process of
    its own as Jenkins runs them, mirror the run once: one parent, one nested run per attempt."""
    rest = Rest(mlflow_server)
    name = f"chain-{uuid.uuid4().hex[:8]}"
    model = push(tmp_path / "repo", name, IRIS)
    started = cli("start", model, "--runtime", "local", "--threshold", "0.97", "--max-attempts", "3",
                  "--mlflow", mlflow_server)
    assert started.returncode == 0, started.stderr
    run_id = int(started.stdout)
    assert cli("train", run_id).returncode == 3  # attempt 1: below the threshold
    assert rest.runs_of(name, run_id)[0]["info"]["status"] == "RUNNING"
    for step in (("tweak", run_id, "--no-trigger"), ("train", run_id), ("finish", run_id)):
        done = cli(*map(str, step))
        assert done.returncode == 0, done.stderr
        assert "MLflow" not in done.stderr
    parent, attempts = rest.runs_of(name, run_id)
    assert parent["info"]["status"] == "FINISHED" and parent["tags"]["pushtune.status"] == "passed"
    assert [a["tags"]["pushtune.attempt"] for a in attempts] == ["1", "2"]
    assert {a["tags"]["mlflow.parentRunId"] for a in attempts} == {parent["info"]["run_id"]}
    assert {t["key"]: t["value"] for t in rest.alias(name)["tags"]}["pushtune.version"] == "1"
