"""The Docker runtime against a real engine: real images, real containers, real kills.

Tests marked `docker` are skipped when no engine answers, and fail under CI=true
(scripts/start-docker.sh starts one; `pushtune images build --offline` builds the images, else the
first test builds them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import docker
import pytest
from docker.errors import NotFound

from conftest import ROOT, requires_engine
from jobs.errors import UserError
from jobs.loop import RunOptions, attempt_spec, resume_attempt, run_model
from jobs.store.run_store import RunStore
from jobs.train.docker_runtime import IMAGE_USER, PIDS_LIMIT, DockerRuntime, container_name
from jobs.train.runtime import AttemptSpec, LocalRuntime
from jobs.train.runtimes import get_runtime

REGRESSION_SCRIPT = """\
import os

from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jobs import kit

p = kit.params(C=0.001)
x, y = load_breast_cancer(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
model = make_pipeline(StandardScaler(), LogisticRegression(C=p["C"])).fit(x_train, y_train)
kit.report(accuracy=float(model.score(x_test, y_test)), uid=os.getuid(), home=os.environ["HOME"])
"""

ANN_SCRIPT = """\
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import numpy as np

from jobs import kit

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(400, 4)).astype("float32")
y = (x[:, 0] + x[:, 1] > 0).astype("int32")
model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.05),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x[:300], y[:300], epochs=3, batch_size=32, callbacks=kit.callbacks(), verbose=2)
_, accuracy = model.evaluate(x[300:], y[300:], verbose=0)
model.save(kit.output_dir() / "model.keras")
kit.report(accuracy=float(accuracy))
"""

# Classified as regression (a scikit-learn estimator) but waits, so it can be killed or timed out.
WAITING_SCRIPT = """\
print("started", flush=True)

import os
import time

from sklearn.linear_model import LogisticRegression

from jobs import kit

LogisticRegression(C=1.0)
if kit.resuming():
    print("resumed with PUSHTUNE_RESUME=" + os.environ["PUSHTUNE_RESUME"], flush=True)
    kit.report(accuracy=0.97)
else:
    print("ready to be killed", flush=True)
    time.sleep(120)
    kit.report(accuracy=0.5)
"""


@pytest.fixture
def engine():
    client = docker.from_env(timeout=60)
    yield client
    client.close()


@pytest.fixture
def model_file(tmp_path):
    """Writes a model script under a unique name, so its containers can be found by label."""

    def write(source: str, kind: str) -> Path:
        path = tmp_path / f"{kind}_{uuid.uuid4().hex[:8]}.py"
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        return path

    return write


def expected_uid() -> int:
    return IMAGE_USER[0] if os.getuid() == 0 else os.getuid()


def containers_of(client, model: Path) -> list:
    return client.containers.list(all=True, filters={"label": f"pushtune.model={model.name}"})


def run_in_thread(model: Path, options: RunOptions, runtime, store: RunStore):
    result: dict = {}

    def target() -> None:
        try:
            result["summary"] = run_model(model, options, runtime, store)
        except BaseException as exc:  # surfaced by the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def kill_when_ready(client, model: Path, marker: str = "ready to be killed", timeout: float = 120,
                    kill: bool = True) -> str:
    """Waits until the model's container has printed the marker, SIGKILLs it (unless not `kill`);
    its name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for container in containers_of(client, model):
            if container.status == "running" and marker in container.logs().decode(errors="replace"):
                if kill:
                    container.kill()
                return container.name
        time.sleep(0.2)
    raise AssertionError(f"no running container of {model.name} printed {marker!r}")


def test_container_name_follows_docker_rules(tmp_path):
    spec = AttemptSpec(run_id=12, attempt=3, kind="regression", model_name="m.py", workdir=tmp_path,
                       data_dir=None, cache_dir=tmp_path, params={})
    store = hashlib.sha256(str(tmp_path.resolve()).encode()).hexdigest()[:8]
    assert container_name(spec) == f"pushtune-12-3-{store}"
    assert container_name(spec, restart=2) == f"pushtune-12-3-{store}-r2"
    other = AttemptSpec(run_id=12, attempt=3, kind="regression", model_name="m.py", workdir=tmp_path / "x",
                        data_dir=None, cache_dir=tmp_path, params={})
    assert container_name(other) != container_name(spec)  # another store's run 12 on the same engine


@pytest.mark.docker
@requires_engine
def test_regression_model_tunes_in_containers_until_threshold(pushtune_home, model_file, engine):
    model = model_file(REGRESSION_SCRIPT, "regression")
    store = RunStore.open()
    runtime = DockerRuntime(engine, memory="1g", cpus=1)
    summary = run_model(model, RunOptions(threshold=0.93, max_attempts=3, runtime="docker"),
                        runtime, store)

    assert summary["status"] == "passed", summary
    attempts = store.attempts(summary["run_id"])
    assert attempts[0]["metric_value"] < 0.93 <= attempts[-1]["metric_value"]  # C tuned up
    assert attempts[-1]["params"]["C"] > attempts[0]["params"].get("C", 0.001)  # via PUSHTUNE_PARAMS
    for attempt in attempts:
        assert re.fullmatch(rf"pushtune-{summary['run_id']}-{attempt['n']}-[0-9a-f]{{8}}", attempt["container"])
        assert attempt["metrics"]["uid"] == expected_uid() != 0
        assert attempt["metrics"]["home"] == "/tmp"
    # the script saves nothing: the launcher saves the last fitted estimator (jobs.autolog)
    for attempt in attempts:
        artifact = Path(attempt["artifact_path"])
        assert artifact == Path(attempt["dir"]) / "output" / "model.joblib" and artifact.is_file()
    assert containers_of(engine, model) == []  # removed after each attempt


@pytest.mark.docker
@requires_engine
@pytest.mark.skipif(os.getuid() != 0, reason="only root hands its mounts to the image's user")
def test_output_a_container_wrote_is_handed_back_to_the_invoking_user(pushtune_home, model_file, engine,
                                                                       monkeypatch):
    monkeypatch.setenv("PUSHTUNE_DOCKER_TRANSFER", "mount")  # bind mounts: the container writes our files
    model = model_file(REGRESSION_SCRIPT, "regression")
    store = RunStore.open()
    summary = run_model(model, RunOptions(threshold=0.5, max_attempts=1, runtime="docker"),
                        DockerRuntime(engine, memory="1g", cpus=1), store)

    (attempt,) = store.attempts(summary["run_id"])
    assert attempt["metrics"]["uid"] == IMAGE_USER[0]  # it wrote them as the image's user
    output = Path(attempt["dir"]) / "output"
    assert (output / "metrics.json").is_file()
    owners = {(path.lstat().st_uid, path.lstat().st_gid) for path in [output, *output.rglob("*")]}
    assert owners == {(os.getuid(), os.getgid())}


@pytest.mark.docker
@requires_engine
def test_keras_model_trains_in_the_ann_image(pushtune_home, model_file, engine):
    model = model_file(ANN_SCRIPT, "ann")
    store = RunStore.open()
    summary = run_model(model, RunOptions(threshold=0.8, max_attempts=2, runtime="docker"),
                        DockerRuntime(engine, memory="2g", cpus=2), store)

    assert summary["kind"] == "ann"
    assert summary["status"] == "passed", summary
    best = store.get_attempt(summary["run_id"], summary["best"]["attempt"])
    assert best["metric_value"] >= 0.8
    assert Path(best["artifact_path"]).name == "model.keras"
    log = (Path(best["dir"]) / "log.txt").read_text()
    assert "Epoch 3/3" in log  # Keras's own output, streamed from the container
    assert (Path(best["dir"]) / "output" / "progress.json").exists()  # kit callbacks ran inside


@pytest.mark.docker
@requires_engine
def test_kept_container_has_labels_limits_readonly_mounts_and_no_root(tmp_path, engine, monkeypatch):
    for name, value in {"PUSHTUNE_SMTP_PASSWORD": "smtp-secret", "JENKINS_API_TOKEN": "jenkins-secret",
                        "OMP_NUM_THREADS": "1", "https_proxy": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(name, value)
    workdir, data, cache = tmp_path / "attempt-1", tmp_path / "data", tmp_path / "cache"
    for path in (workdir / "output", data, cache):
        path.mkdir(parents=True)
    (data / "rows.csv").write_text("1,2\n")
    (workdir / "params.json").write_text('{"C": 2.0}\n')
    (workdir / "model.py").write_text(textwrap.dedent("""\
        import json, os
        from pathlib import Path

        def writable(path):
            try:
                Path(path).write_text("x")
                return True
            except OSError:
                return False

        seen = {name: os.environ.get(name) for name in
                ("PUSHTUNE_OUTPUT", "PUSHTUNE_DATA", "PUSHTUNE_CACHE", "PUSHTUNE_PARAMS", "PUSHTUNE_RESUME")}
        seen.update(uid=os.getuid(), cwd=os.getcwd(), rows=Path("/data/rows.csv").read_text(),
                    model_writable=writable("/work/model.py"), data_writable=writable("/data/new"),
                    cache_writable=writable("/cache/new"), root_writable=writable("/new"),
                    tmp_writable=writable("/tmp/new"), work_writable=writable("/work/new"),
                    environment=dict(os.environ))
        (Path(os.environ["PUSHTUNE_OUTPUT"]) / "seen.json").write_text(json.dumps(seen))
        print("accuracy: 0.5")
        """))
    name = f"kept-{uuid.uuid4().hex[:8]}.py"
    spec = AttemptSpec(run_id=900001, attempt=1, kind="regression", model_name=name, workdir=workdir,
                       data_dir=data, cache_dir=cache, params={"C": 2.0}, timeout=120)
    runtime = DockerRuntime(engine, memory="256m", cpus=0.5, network="none", keep=True)
    outcome = runtime.run(spec)
    try:
        assert outcome.exit_code == 0 and outcome.error is None, (workdir / "log.txt").read_text()
        container = engine.containers.get(outcome.container)
        labels = container.labels
        assert labels["pushtune.role"] == "train"
        assert (labels["pushtune.run"], labels["pushtune.attempt"]) == ("900001", "1")
        assert (labels["pushtune.kind"], labels["pushtune.model"]) == ("regression", name)
        assert '"image": "pushtune/regression:' in labels["pushtune.spec"]

        host = container.attrs["HostConfig"]
        assert host["Memory"] == 256 * 2**20
        assert host["NanoCpus"] == 500_000_000
        assert host["NetworkMode"] == "none"
        assert host["Privileged"] is False
        assert host["CapDrop"] == ["ALL"]
        assert host["ReadonlyRootfs"] is True and host["PidsLimit"] == PIDS_LIMIT
        assert set(host["Tmpfs"]) == {"/tmp", "/work"}
        user = container.attrs["Config"]["User"]
        assert user == f"{expected_uid()}:{IMAGE_USER[1] if os.getuid() == 0 else os.getgid()}"
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        assert set(mounts) == {"/work/model.py", "/work/params.json", "/output", "/data", "/cache"}
        assert sorted(d for d, m in mounts.items() if m["RW"]) == ["/cache", "/output"]
        assert not any("docker.sock" in m["Source"] for m in mounts.values())

        seen = json.loads((workdir / "output" / "seen.json").read_text())
        assert seen["uid"] == expected_uid() != 0
        assert seen["cwd"] == "/work" and seen["rows"] == "1,2\n"
        assert (seen["PUSHTUNE_OUTPUT"], seen["PUSHTUNE_DATA"], seen["PUSHTUNE_CACHE"]) == \
            ("/output", "/data", "/cache")
        assert seen["PUSHTUNE_PARAMS"] == '{"C": 2.0}' and seen["PUSHTUNE_RESUME"] is None
        assert seen["model_writable"] is False and seen["data_writable"] is False
        assert seen["cache_writable"] is True
        assert seen["root_writable"] is False and seen["tmp_writable"] is True and seen["work_writable"] is True
        environment = seen["environment"]
        assert "PUSHTUNE_SMTP_PASSWORD" not in environment and "JENKINS_API_TOKEN" not in environment
        assert environment["OMP_NUM_THREADS"] == "1" and environment["https_proxy"] == "http://127.0.0.1:9"
        assert environment["HOME"] == "/tmp" and environment["PATH"].startswith("/opt/venv/bin:")
        assert "accuracy: 0.5" in (workdir / "log.txt").read_text()
    finally:
        engine.containers.get(outcome.container).remove(force=True)


@pytest.mark.docker
@requires_engine
def test_attempt_timeout_stops_and_removes_the_container(pushtune_home, model_file, engine):
    model = model_file(WAITING_SCRIPT, "waiting")
    store = RunStore.open()
    started = time.monotonic()
    summary = run_model(model, RunOptions(threshold=0.9, max_attempts=1, attempt_timeout=6,
                                          runtime="docker"), DockerRuntime(engine), store)
    assert time.monotonic() - started < 60  # not the script's 120 s sleep
    (attempt,) = store.attempts(summary["run_id"])
    assert attempt["status"] == "failed"
    assert "timed out after 6 s" in attempt["error"]
    assert "started" in (Path(attempt["dir"]) / "log.txt").read_text()
    with pytest.raises(NotFound):
        engine.containers.get(attempt["container"])


@pytest.mark.docker
@requires_engine
def test_container_killed_from_outside_is_recorded_with_its_exit_code(pushtune_home, model_file, engine):
    model = model_file(WAITING_SCRIPT, "waiting")
    store = RunStore.open()
    options = RunOptions(threshold=0.9, max_attempts=1, max_restarts=0, runtime="docker")
    thread, result = run_in_thread(model, options, DockerRuntime(engine), store)
    killed = kill_when_ready(engine, model)
    thread.join(timeout=120)
    assert "summary" in result, result
    (attempt,) = store.attempts(result["summary"]["run_id"])
    assert attempt["status"] == "failed"
    assert attempt["exit_code"] == 137
    assert "killed by SIGKILL" in attempt["error"] and attempt["restarts"] == 0
    assert attempt["container"] == killed


@pytest.mark.docker
@requires_engine
def test_killed_container_is_restarted_with_resume_and_reports(pushtune_home, model_file, engine):
    model = model_file(WAITING_SCRIPT, "waiting")
    store = RunStore.open()
    options = RunOptions(threshold=0.9, max_attempts=1, max_restarts=2, runtime="docker")
    thread, result = run_in_thread(model, options, DockerRuntime(engine), store)
    killed = kill_when_ready(engine, model)
    thread.join(timeout=120)
    assert "summary" in result, result
    run_id = result["summary"]["run_id"]
    (attempt,) = store.attempts(run_id)
    assert attempt["status"] == "ok" and attempt["metric_value"] == 0.97
    assert attempt["restarts"] == 1
    assert re.fullmatch(rf"pushtune-{run_id}-1-[0-9a-f]{{8}}", killed)
    assert attempt["container"] == f"{killed}-r1"
    (restart,) = store.restarts(run_id, 1)
    assert restart["exit_code"] == 137 and restart["reason"] == "killed by SIGKILL"
    log = (Path(attempt["dir"]) / "log.txt").read_text()
    assert "[pushtune] killed by SIGKILL; restart 1/2" in log
    assert "resumed with PUSHTUNE_RESUME=1" in log
    assert containers_of(engine, model) == []


# Waits for the test's go-ahead (a file in its output directory), then reports.
WAITS_FOR_GO = """\
import time

from sklearn.linear_model import LogisticRegression

from jobs import kit

LogisticRegression(C=1.0)
print("ready", flush=True)
while not (kit.output_dir() / "go").exists():
    time.sleep(0.1)
kit.report(accuracy=0.95)
"""


def finished_without_its_driver(engine, model: Path):
    """`pushtune run` starts the model's container and is SIGKILLed; the container then finishes."""
    driver = subprocess.Popen([sys.executable, "-m", "jobs", "run", str(model), "--runtime", "docker",
                               "--max-attempts", "1", "--threshold", "0.9", "--network", "none"],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        kill_when_ready(engine, model, marker="ready", kill=False)
    finally:
        driver.kill()
        driver.wait()
    (container,) = containers_of(engine, model)
    attempt = Path(container.labels["pushtune.workdir"])
    (attempt / "output" / "go").write_text("")
    assert container.wait(timeout=60)["StatusCode"] == 0
    return container


@pytest.mark.docker
@requires_engine
def test_collect_tells_how_a_driverless_container_ended_and_removes_it(pushtune_home, model_file, engine):
    model = model_file(WAITS_FOR_GO, "waiting")
    container = finished_without_its_driver(engine, model)
    store = RunStore.open()
    spec = attempt_spec(store, store.get_run(1), store.get_attempt(1, 1))
    kept = DockerRuntime(engine, keep=True).collect(spec)
    assert (kept.exit_code, kept.oom_killed, kept.container) == (0, False, container.name)
    assert containers_of(engine, model) != []  # --keep keeps it
    outcome = DockerRuntime(engine).collect(spec)
    assert (outcome.exit_code, outcome.container) == (0, container.name)
    assert containers_of(engine, model) == []


@pytest.mark.docker
@requires_engine
def test_an_attempt_recorded_for_a_dead_driver_leaves_no_container(pushtune_home, model_file, engine):
    # What `pushtune monitor` does for it: `pushtune resume 1 --attempt 1` records the attempt.
    model = model_file(WAITS_FOR_GO, "waiting")
    container = finished_without_its_driver(engine, model)
    store = RunStore.open()
    attempt = resume_attempt(store, 1, 1, DockerRuntime(engine))
    assert attempt["status"] == "ok" and attempt["metric_value"] == 0.95
    assert attempt["container"] == container.name and attempt["exit_code"] == 0
    assert containers_of(engine, model) == []


def test_runtime_docker_without_an_engine_is_one_line_and_exit_2(cli, tmp_path, model_file):
    model = model_file(REGRESSION_SCRIPT, "regression")
    dead = f"unix://{tmp_path}/dead.sock"
    result = cli("run", model, "--runtime", "docker", env={"DOCKER_HOST": dead})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"pushtune: error: no Docker engine answers at {dead}")
    assert "scripts/start-docker.sh" in lines[0] and "Traceback" not in result.stderr


def test_runtime_auto_without_an_engine_runs_locally(cli, tmp_path, model_file):
    model = model_file(REGRESSION_SCRIPT, "regression")
    result = cli("run", model, "--runtime", "auto", "--threshold", "0.8", "--json",
                 env={"DOCKER_HOST": f"unix://{tmp_path}/dead.sock"})
    assert result.returncode == 0, result.stderr
    assert "runtime: local" in result.stderr
    assert '"status": "passed"' in result.stdout


def test_auto_falls_back_to_local_and_docker_refuses(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/dead.sock")
    assert isinstance(get_runtime("auto"), LocalRuntime)
    with pytest.raises(UserError, match="no Docker engine answers"):
        get_runtime("docker")


@pytest.mark.docker
@requires_engine
def test_auto_picks_docker_when_an_engine_answers():
    runtime = get_runtime("auto", memory="1g", cpus=1, network="none", keep=True)
    assert isinstance(runtime, DockerRuntime) and runtime.name == "docker"
    assert (runtime.memory, runtime.cpus, runtime.network, runtime.keep) == (2**30, 1.0, "none", True)


@pytest.mark.docker
@requires_engine
@pytest.mark.parametrize("options, message", [
    ({"memory": "lots"}, "--memory 'lots'"),
    ({"memory": "1k"}, "at least 6m"),
    ({"cpus": 0}, "--cpus 0"),
    ({"network": "host"}, "--network host: not allowed"),
    ({"network": "no-such-network-here"}, "no such Docker network"),
])
def test_bad_runtime_options_are_user_errors(engine, options, message):
    with pytest.raises(UserError, match=re.escape(message)):
        DockerRuntime(engine, **options)


@pytest.mark.docker
@pytest.mark.slow
@requires_engine
@pytest.mark.parametrize("example, kind, threshold, needs_faces", [
    ("regression_logistic.py", "regression", 0.95, False),
    ("ann_digits.py", "ann", 0.5, False),
    ("face_vgg16.py", "cnn", 0.75, True),
])
def test_each_example_trains_in_its_kind_container_and_reaches_its_threshold(
        pushtune_home, engine, request, example, kind, threshold, needs_faces):
    data = str(request.getfixturevalue("faces_dir")) if needs_faces else None
    store = RunStore.open()
    # network none: the face example's imagenet download fails at once, as it would offline
    runtime = DockerRuntime(engine, memory="4g", cpus=2, network="none")
    summary = run_model(ROOT / "models" / example,
                        RunOptions(threshold=threshold, max_attempts=3, runtime="docker", data=data),
                        runtime, store)
    assert summary["kind"] == kind and summary["status"] == "passed", summary
    best = store.get_attempt(summary["run_id"], summary["best"]["attempt"])
    assert re.fullmatch(rf"pushtune-{summary['run_id']}-{best['n']}-[0-9a-f]{{8}}", best["container"])
    assert Path(best["artifact_path"]).exists()
    if needs_faces:
        assert best["metrics"]["weights"] == "none"
