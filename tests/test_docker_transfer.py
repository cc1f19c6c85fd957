"""The Docker runtime's copy transfer, against a real engine: the attempt's files go into the
container through the Docker API, its output comes back checked, with no bind mount at all.

Copy mode is forced with PUSHTUNE_DOCKER_TRANSFER=copy (an engine on this machine could
bind-mount); what `auto` would choose is checked on its own.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, requires_engine
from jobs.errors import UserError
from jobs.loop import RunOptions, attempt_spec, resume_attempt, run_model
from jobs.store.run_store import RunStore
from jobs.train.docker_runtime import (
    CACHE_VOLUME,
    DockerRuntime,
    TransferFailed,
    choose_transfer,
    engine_runs_here,
    in_a_container,
    max_output_bytes,
    transfer_setting,
    unpack_output,
)
from jobs.train.runtime import AttemptSpec, metric_written
from test_docker_runtime import containers_of, engine, model_file, run_in_thread  # noqa: F401


@pytest.fixture
def copying(monkeypatch):
    monkeypatch.setenv("PUSHTUNE_DOCKER_TRANSFER", "copy")


def bind_mounts(container) -> list[dict]:
    return [m for m in container.attrs["Mounts"] if m["Type"] == "bind"]


def remove_all(containers) -> None:
    for container in containers:
        container.remove(force=True, v=True)


# --- choosing the transfer ------------------------------------------------------------------------


def never_asked() -> bool:
    raise AssertionError("the engine need not be asked")


@pytest.mark.parametrize("docker_host, in_container, engine_here, expected", [
    (None, False, never_asked, "mount"),
    ("unix:///var/run/docker.sock", False, never_asked, "mount"),
    ("tcp://127.0.0.1:2375", False, never_asked, "copy"),
    ("tcp://127.0.0.1:2376", True, never_asked, "copy"),
    ("ssh://trainer@gpu-box", False, never_asked, "copy"),
    (None, True, lambda: False, "copy"),  # in a container, talking to the host's engine
    (None, True, lambda: True, "mount"),  # in a container with an engine of its own (dind)
])
def test_auto_copies_when_the_engine_cannot_see_our_paths(docker_host, in_container, engine_here,
                                                           expected):
    assert choose_transfer("auto", docker_host=docker_host, in_container=in_container,
                           engine_here=engine_here) == expected


@pytest.mark.parametrize("setting", ["mount", "copy"])
def test_an_explicit_transfer_wins_over_auto(setting):
    for docker_host in (None, "tcp://127.0.0.1:2375"):
        assert choose_transfer(setting, docker_host=docker_host, in_container=True,
                               engine_here=never_asked) == setting


@pytest.mark.parametrize("environ, message", [
    ({"PUSHTUNE_DOCKER_TRANSFER": "rsync"}, "PUSHTUNE_DOCKER_TRANSFER='rsync': expected auto, mount or copy"),
    ({"PUSHTUNE_DOCKER_TRANSFER": "COPY"}, "PUSHTUNE_DOCKER_TRANSFER='COPY'"),
])
def test_a_bad_transfer_setting_is_a_user_error(environ, message):
    with pytest.raises(UserError) as raised:
        transfer_setting(environ)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_transfer_and_cap_settings_and_their_defaults():
    assert transfer_setting({}) == transfer_setting({"PUSHTUNE_DOCKER_TRANSFER": " "}) == "auto"
    assert transfer_setting({"PUSHTUNE_DOCKER_TRANSFER": "copy"}) == "copy"
    assert max_output_bytes({}) == 2 * 2**30
    assert max_output_bytes({"PUSHTUNE_MAX_OUTPUT_BYTES": "500m"}) == 500 * 2**20
    assert max_output_bytes({"PUSHTUNE_MAX_OUTPUT_BYTES": "4096"}) == 4096
    for bad in ("lots", "0", "-5"):
        with pytest.raises(UserError, match="PUSHTUNE_MAX_OUTPUT_BYTES=.*expected a size"):
            max_output_bytes({"PUSHTUNE_MAX_OUTPUT_BYTES": bad})


@pytest.mark.docker
@requires_engine
def test_runtime_copies_for_a_tcp_docker_host_and_mounts_by_default(engine, monkeypatch):
    monkeypatch.delenv("PUSHTUNE_DOCKER_TRANSFER", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    # This machine's own engine sees its paths: not in a container, or dockerd in this container.
    local = "mount" if not in_a_container() or engine_runs_here(engine) else "copy"
    assert DockerRuntime(engine).transfer == local
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")  # only read; `engine` is connected
    assert DockerRuntime(engine).transfer == "copy"
    monkeypatch.setenv("PUSHTUNE_DOCKER_TRANSFER", "mount")
    assert DockerRuntime(engine).transfer == "mount"


@pytest.mark.docker
@requires_engine
@pytest.mark.parametrize("variable, value", [
    ("PUSHTUNE_DOCKER_TRANSFER", "rsync"),
    ("PUSHTUNE_MAX_OUTPUT_BYTES", "lots"),
])
def test_bad_settings_stop_a_run_in_one_line_with_exit_2(cli, model_file, variable, value):
    model = model_file(PLANTS.format(plant="pass"), "regression")
    result = cli("run", model, "--runtime", "docker", env={variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"pushtune: error: {variable}={value!r}: expected")


# --- checking what comes back, without an engine --------------------------------------------------


def tar_of(*members: tuple) -> tarfile.TarFile:
    """An archive as the engine's get_archive sends it: (name, tarfile type[, content or link name])."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, *more in members:
            info = tarfile.TarInfo(name)
            info.type, info.uid, info.gid, info.mode = kind, 1000, 1000, 0o755 if kind == tarfile.DIRTYPE else 0o644
            content = more[0] if more else b""
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = more[0] if more else "/etc/passwd"
            elif kind == tarfile.REGTYPE:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if kind == tarfile.REGTYPE else None)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r:")


@pytest.mark.parametrize("name, kind, message", [
    ("/etc/cron.d/job", tarfile.REGTYPE, "'/etc/cron.d/job' is an absolute path"),
    ("output/../../escaped", tarfile.REGTYPE, "'output/../../escaped' is a path with '..'"),
    ("output/../../escaped", tarfile.SYMTYPE, "'output/../../escaped' is a path with '..'"),
    ("elsewhere/file", tarfile.REGTYPE, "'elsewhere/file' is outside /output"),
])
def test_a_path_outside_the_output_refuses_the_whole_archive(tmp_path, name, kind, message):
    with tar_of(("output", tarfile.DIRTYPE), ("output/fine.txt", tarfile.REGTYPE, b"fine"), (name, kind)) as tar:
        with pytest.raises(TransferFailed) as raised:
            unpack_output(tar, "/output", tmp_path, 2**20)
    assert str(raised.value).startswith("output not copied back: ")
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "escaped").exists()


def test_links_fifos_and_devices_are_left_out_with_a_note_and_the_rest_comes_back(tmp_path):
    members = [("output", tarfile.DIRTYPE), ("output/model.joblib", tarfile.REGTYPE, b"weights"),
               ("output/metrics.json", tarfile.REGTYPE, b'{"accuracy": 0.9}'),
               ("output/passwd", tarfile.SYMTYPE, "/etc/passwd"),
               ("output/latest.joblib", tarfile.SYMTYPE, "model.joblib"),  # harmless, still a link
               ("output/copy.joblib", tarfile.LNKTYPE, "output/model.joblib"),  # a hard link: a file
               ("output/pipe", tarfile.FIFOTYPE), ("output/tty", tarfile.CHRTYPE),
               ("output/disk", tarfile.BLKTYPE), ("output/checkpoints", tarfile.DIRTYPE),
               ("output/checkpoints/w.h5", tarfile.REGTYPE, b"w"),
               ("output/checkpoints/root", tarfile.SYMTYPE, "/"),
               ("output/checkpoints/twin", tarfile.LNKTYPE, "output/passwd"),  # a hard link to a link
               ("output/odd\nname", tarfile.SYMTYPE, "/")]
    with tar_of(*members) as tar:
        notes = unpack_output(tar, "/output", tmp_path, 2**20)
    assert notes == {
        "passwd": "passwd is a symbolic link (not followed)",
        "latest.joblib": "latest.joblib is a symbolic link (not followed)",
        "pipe": "pipe is not a regular file",
        "tty": "tty is not a regular file",
        "disk": "disk is not a regular file",
        "checkpoints/root": "checkpoints/root is a symbolic link (not followed)",
        "checkpoints/twin": "checkpoints/twin is a symbolic link (not followed)",
        "odd\nname": "'odd\\nname' is a symbolic link (not followed)",  # one line in the log
    }
    found = {p.relative_to(tmp_path).as_posix(): p for p in tmp_path.rglob("*")}
    assert sorted(found) == ["checkpoints", "checkpoints/w.h5", "copy.joblib", "metrics.json", "model.joblib"]
    assert not any(p.is_symlink() for p in found.values())
    assert found["model.joblib"].read_bytes() == found["copy.joblib"].read_bytes() == b"weights"
    assert found["copy.joblib"].stat().st_ino != found["model.joblib"].stat().st_ino  # a copy
    for path in found.values():  # the unpacking user's, not the container's uid 1000
        assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid())


def test_modes_are_the_data_filters_and_directories_get_the_default(tmp_path):
    members = [("output", tarfile.DIRTYPE), ("output/run.sh", tarfile.REGTYPE, b"#!/bin/sh\n"),
               ("output/shared.txt", tarfile.REGTYPE, b"x"), ("output/sub", tarfile.DIRTYPE)]
    with tar_of(*members) as tar:
        for member in tar.getmembers():
            member.mode = {"output/run.sh": 0o6777, "output/shared.txt": 0o666, "output/sub": 0o777}.get(
                member.name, member.mode)
        unpack_output(tar, "/output", tmp_path, 2**20)
    probe = tmp_path / "probe"
    probe.mkdir()  # what a plain mkdir gives here
    assert (tmp_path / "run.sh").stat().st_mode & 0o7777 == 0o755  # no setuid, no group write
    assert (tmp_path / "shared.txt").stat().st_mode & 0o7777 == 0o644
    assert (tmp_path / "sub").stat().st_mode & 0o7777 == probe.stat().st_mode & 0o7777


def test_hard_links_to_one_big_file_count_against_the_cap(tmp_path):
    members = [("output", tarfile.DIRTYPE), ("output/big", tarfile.REGTYPE, b"x" * 600),
               *((f"output/big-{n}", tarfile.LNKTYPE, "output/big") for n in range(3))]
    with tar_of(*members) as tar:
        with pytest.raises(TransferFailed, match=r"/output of container c1 is over 1000 bytes"):
            unpack_output(tar, "/output", tmp_path, 1000, "c1")
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    with tar_of(*members) as tar:
        assert unpack_output(tar, "/output", roomy, 2400) == {}
    assert sorted(p.stat().st_size for p in roomy.iterdir()) == [600] * 4


# --- training in copy mode ------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
@requires_engine
def test_example_trains_to_its_threshold_with_nothing_mounted(pushtune_home, engine, copying):
    store = RunStore.open()
    runtime = DockerRuntime(engine, memory="1g", cpus=1, network="none", keep=True)
    assert runtime.transfer == "copy"
    summary = run_model(ROOT / "models" / "regression_logistic.py",
                        RunOptions(threshold=0.95, max_attempts=3, runtime="docker"), runtime, store)
    kept = [engine.containers.get(a["container"]) for a in store.attempts(summary["run_id"])]
    try:
        assert summary["status"] == "passed", summary
        best = store.get_attempt(summary["run_id"], summary["best"]["attempt"])
        assert best["metric_value"] >= 0.95
        output = Path(best["dir"]) / "output"
        assert Path(best["artifact_path"]) == output / "model.joblib"
        assert (output / "model.joblib").stat().st_size > 0  # copied back
        assert json.loads((output / "metrics.json").read_text())["accuracy"] == best["metric_value"]
        for container in kept:
            assert bind_mounts(container) == []
            assert not any(str(pushtune_home) in (m.get("Source") or "") for m in container.attrs["Mounts"])
            assert {m["Destination"] for m in container.attrs["Mounts"]} == {"/work", "/output", "/cache"}
            assert json.loads(container.labels["pushtune.spec"])["transfer"] == "copy"
    finally:
        remove_all(kept)


SEES_ITS_FILES = """\
import json, os
from pathlib import Path

def writable(path):
    try:
        Path(path).write_text("x")
        return True
    except OSError:
        return False

output = Path(os.environ["PUSHTUNE_OUTPUT"])
seen = dict(uid=os.getuid(), cwd=os.getcwd(), params=Path("params.json").read_text(),
            rows=Path("/data/sub/rows.csv").read_text(),
            checkpoint=(output / "checkpoints" / "w.txt").read_text(),
            model_writable=writable("/work/model.py"), data_writable=writable("/data/new"),
            work_writable=writable("/work/new"), cache_writable=writable("/cache/new"),
            checkpoint_writable=writable(output / "checkpoints" / "w.txt"),
            root_writable=writable("/new"))
(output / "seen.json").write_text(json.dumps(seen))
print("accuracy: 0.5")
"""


@pytest.mark.docker
@requires_engine
def test_copied_files_are_read_only_or_the_users_as_mounted_and_limits_stay(tmp_path, engine, copying):
    workdir, data, cache = tmp_path / "attempt-1", tmp_path / "data", tmp_path / "cache"
    for path in (workdir / "output" / "checkpoints", data / "sub", cache):
        path.mkdir(parents=True)
    (data / "sub" / "rows.csv").write_text("1,2\n")
    (workdir / "output" / "checkpoints" / "w.txt").write_text("weights\n")  # as a resume finds it
    (workdir / "params.json").write_text('{"C": 2.0}\n')
    (workdir / "model.py").write_text(SEES_ITS_FILES)
    spec = AttemptSpec(run_id=900002, attempt=1, kind="regression", model_name=f"copied-{os.getpid()}.py",
                       workdir=workdir, data_dir=data, cache_dir=cache, params={"C": 2.0}, timeout=120)
    outcome = DockerRuntime(engine, memory="256m", cpus=0.5, network="none", keep=True).run(spec)
    container = engine.containers.get(outcome.container)
    try:
        assert outcome.exit_code == 0 and outcome.error is None, (workdir / "log.txt").read_text()
        seen = json.loads((workdir / "output" / "seen.json").read_text())
        assert seen["uid"] != 0 and seen["cwd"] == "/work" and seen["params"] == '{"C": 2.0}\n'
        assert seen["rows"] == "1,2\n" and seen["checkpoint"] == "weights\n"
        assert seen["model_writable"] is False and seen["data_writable"] is False
        assert seen["root_writable"] is False
        assert seen["work_writable"] and seen["cache_writable"] and seen["checkpoint_writable"]
        assert (workdir / "output" / "checkpoints" / "w.txt").read_text() == "x"  # came back

        host = container.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
        assert host["Memory"] == 256 * 2**20 and host["NetworkMode"] == "none"
        assert set(host["Tmpfs"]) == {"/tmp"}
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        assert set(mounts) == {"/work", "/output", "/data", "/cache"} and bind_mounts(container) == []
        assert mounts["/cache"]["Name"] == CACHE_VOLUME
    finally:
        container.remove(force=True, v=True)
    assert containers_of(engine, Path(spec.model_name)) == []


def run_one(model: Path, engine, **options):
    store = RunStore.open()
    summary = run_model(model, RunOptions(threshold=0.9, max_attempts=1, runtime="docker", **options),
                        DockerRuntime(engine, memory="512m", cpus=1, network="none"), store)
    (attempt,) = store.attempts(summary["run_id"])
    return attempt


PLANTS = """\
import os
from pathlib import Path

from sklearn.linear_model import LogisticRegression

from jobs import kit

LogisticRegression(C=1.0)
out = kit.output_dir()
{plant}
kit.report(accuracy=0.99)
"""


# Links and special files a script leaves next to its model and metric; `kit` saves nothing itself.
PLANTED = """\
(out / 'model.joblib').write_bytes(b'weights')
os.symlink('/etc/passwd', out / 'passwd')
os.symlink('model.joblib', out / 'latest.joblib')  # relative and harmless: still a link
(out / 'sub').mkdir(); os.symlink('/', out / 'sub' / 'root')
os.symlink('../../../../escaped', out / 'up')
os.mkfifo(out / 'pipe')
os.link(out / 'model.joblib', out / 'copy.joblib')
"""
LEFT_IN_THE_CONTAINER = ["passwd is a symbolic link (not followed)",
                         "latest.joblib is a symbolic link (not followed)",
                         "sub/root is a symbolic link (not followed)",
                         "up is a symbolic link (not followed)", "pipe is not a regular file"]


@pytest.mark.docker
@requires_engine
def test_links_and_fifos_in_the_output_stay_in_the_container_and_the_rest_comes_back(
        pushtune_home, engine, model_file, copying):
    model = model_file(PLANTS.format(plant=PLANTED), "regression")
    attempt = run_one(model, engine)
    assert attempt["status"] == "ok" and attempt["metric_value"] == 0.99, attempt["error"]
    workdir = Path(attempt["dir"])
    output = workdir / "output"
    assert Path(attempt["artifact_path"]) == output / "model.joblib"
    assert (output / "model.joblib").read_bytes() == (output / "copy.joblib").read_bytes() == b"weights"
    assert json.loads((output / "metrics.json").read_text())["accuracy"] == 0.99
    names = {p.relative_to(output).as_posix() for p in output.rglob("*")}
    assert names - {"autolog.json", "served.json"} == {"copy.joblib", "metrics.json", "model.joblib", "sub"}
    log = (workdir / "log.txt").read_text()
    for note in LEFT_IN_THE_CONTAINER:
        assert f"[pushtune] {note}: left in the container\n" in log
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".")) == []  # no staging left
    assert not any(p.name in ("passwd", "escaped", "pipe", "root") for p in pushtune_home.rglob("*"))
    assert containers_of(engine, model) == []


def modes(output: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, uid, gid) of the output directory and of every regular file or directory in it."""
    found = {".": output, **{p.relative_to(output).as_posix(): p for p in output.rglob("*")}}
    return {name: (p.stat().st_mode, p.stat().st_uid, p.stat().st_gid)
            for name, p in found.items() if not p.is_symlink() and (p.is_file() or p.is_dir())}


@pytest.mark.docker
@requires_engine
def test_the_output_comes_back_as_a_mount_leaves_it(pushtune_home, engine, model_file, monkeypatch):
    plant = PLANTED + "(out / 'run.sh').write_text('#!/bin/sh\\n'); os.chmod(out / 'run.sh', 0o755)"
    model = model_file(PLANTS.format(plant=plant), "regression")
    found = {}
    for transfer in ("mount", "copy"):
        monkeypatch.setenv("PUSHTUNE_DOCKER_TRANSFER", transfer)
        attempt = run_one(model, engine)
        assert attempt["status"] == "ok", attempt["error"]
        found[transfer] = modes(Path(attempt["dir"]) / "output")
    assert found["copy"] == found["mount"]
    assert set(found["copy"]) >= {".", "model.joblib", "copy.joblib", "metrics.json", "sub", "run.sh"}
    assert found["copy"]["."][0] & 0o777 != 0o700  # not a temporary directory's mode


@pytest.mark.docker
@requires_engine
@pytest.mark.parametrize("transfer", ["mount", "copy"])
@pytest.mark.parametrize("plant, error", [
    ("os.symlink('/etc/passwd', out / 'metrics.json')", "metrics.json is a symbolic link (not followed)"),
    ("os.mkfifo(out / 'accuracy.txt')", "accuracy.txt is not a regular file"),
])
def test_a_metric_file_that_is_no_file_fails_alike_with_either_transfer(
        pushtune_home, engine, model_file, monkeypatch, transfer, plant, error):
    monkeypatch.setenv("PUSHTUNE_DOCKER_TRANSFER", transfer)
    script = PLANTS.replace("kit.report(accuracy=0.99)", "print('accuracy: 0.99')")
    model = model_file(script.format(plant=plant + "; (out / 'model.joblib').write_bytes(b'w')"), "regression")
    attempt = run_one(model, engine, autolog=False)
    assert attempt["status"] == "failed" and attempt["error"] == error
    assert (Path(attempt["dir"]) / "output" / "model.joblib").read_bytes() == b"w"  # kept all the same


@pytest.mark.docker
@requires_engine
def test_output_over_the_cap_fails_the_attempt(pushtune_home, engine, model_file, copying, monkeypatch):
    monkeypatch.setenv("PUSHTUNE_MAX_OUTPUT_BYTES", "1m")
    plant = "(out / 'big.bin').write_bytes(os.urandom(2 * 2**20))"
    attempt = run_one(model_file(PLANTS.format(plant=plant), "regression"), engine)
    assert attempt["status"] == "failed"
    assert attempt["error"] == (f"output not copied back: /output of container {attempt['container']} "
                                f"is over {2**20} bytes (PUSHTUNE_MAX_OUTPUT_BYTES)")
    assert list((Path(attempt["dir"]) / "output").iterdir()) == []

    monkeypatch.setenv("PUSHTUNE_MAX_OUTPUT_BYTES", "3m")  # the same output under a higher cap
    attempt = run_one(model_file(PLANTS.format(plant=plant), "regression"), engine)
    assert attempt["status"] == "ok" and attempt["metric_value"] == 0.99
    assert (Path(attempt["dir"]) / "output" / "big.bin").stat().st_size == 2 * 2**20


# --- restarts and a dead driver -------------------------------------------------------------------

# Trains slowly the first time (so it can be killed after a few epochs), at full speed on resume.
SLOW_KERAS = """\
import os
import time

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
pause = 0 if kit.resuming() else 1.5
slow = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: time.sleep(pause))
model.fit(x[:300], y[:300], epochs=12, batch_size=32, callbacks=[*kit.callbacks(), slow], verbose=2)
_, accuracy = model.evaluate(x[300:], y[300:], verbose=0)
kit.report(accuracy=float(accuracy))
"""


def running_container_of(engine, model: Path, thread, result: dict, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        running = [c for c in containers_of(engine, model) if c.status == "running"]
        if running:
            return running[0]
        assert time.monotonic() < deadline and thread.is_alive(), result
        time.sleep(0.2)


def host_epoch(output: Path) -> int:
    try:
        return json.loads((output / "progress.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.docker
@pytest.mark.slow
@requires_engine
def test_killed_container_resumes_from_the_checkpoint_copied_back(pushtune_home, engine, model_file,
                                                                 copying):
    model = model_file(SLOW_KERAS, "ann")
    store = RunStore.open()
    options = RunOptions(threshold=0.5, max_attempts=1, max_restarts=2, runtime="docker")
    thread, result = run_in_thread(model, options, DockerRuntime(engine, memory="2g", cpus=2), store)
    first = running_container_of(engine, model, thread, result)
    assert bind_mounts(first) == []
    output = Path(first.labels["pushtune.workdir"]) / "output"
    deadline = time.monotonic() + 180
    # Live progress: the host's progress.json (copied back while it trains) shows epoch 2 ...
    while host_epoch(output) < 2:
        assert time.monotonic() < deadline and thread.is_alive(), result
        time.sleep(0.2)
    first.kill()  # ... when it dies, mid-training
    thread.join(timeout=240)
    assert "summary" in result, result

    (attempt,) = store.attempts(1)
    assert attempt["status"] == "ok" and attempt["restarts"] == 1, attempt["error"]
    assert re.fullmatch(r"pushtune-1-1-[0-9a-f]{8}-r1", attempt["container"])
    (restart,) = store.restarts(1, 1)
    assert restart["reason"] == "killed by SIGKILL"
    assert 2 <= restart["resumed_epoch"] < 12  # the epoch copied back after the kill
    log = (Path(attempt["dir"]) / "log.txt").read_text()
    assert f"restart 1/2 from epoch {restart['resumed_epoch']}" in log
    assert f"kit: resumed at epoch {restart['resumed_epoch']}" in log  # Keras restored the checkpoint
    assert [e["epoch"] for e in attempt["curve"]["history"]] == list(range(1, 13))
    assert (Path(attempt["dir"]) / "output" / "checkpoints").is_dir()
    assert containers_of(engine, model) == []


FINISHES_ALONE = """\
import time

from sklearn.linear_model import LogisticRegression

from jobs import kit

LogisticRegression(C=1.0)
print("ready", flush=True)
time.sleep(3)
(kit.output_dir() / "model.joblib").write_bytes(b"weights")
kit.report(accuracy=0.95)
"""


def finished_without_its_driver(engine, model: Path):
    """`pushtune run` (copy mode, from the environment) starts the model's container and is
    SIGKILLed; the container then finishes, its output still inside it."""
    driver = subprocess.Popen([sys.executable, "-m", "jobs", "run", str(model), "--runtime", "docker",
                               "--max-attempts", "1", "--threshold", "0.9", "--network", "none"],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(c.status == "running" and b"ready" in c.logs() for c in containers_of(engine, model)):
            assert time.monotonic() < deadline, "the container never got ready"
            time.sleep(0.2)
    finally:
        driver.kill()
        driver.wait()
    (container,) = containers_of(engine, model)
    assert container.wait(timeout=60)["StatusCode"] == 0
    return container


@pytest.mark.docker
@requires_engine
@pytest.mark.parametrize("monitor_looks_first", [True, False])
def test_a_driverless_training_is_copied_back_and_recorded(pushtune_home, engine, model_file, copying,
                                                           monitor_looks_first):
    model = model_file(FINISHES_ALONE, "regression")
    container = finished_without_its_driver(engine, model)
    store = RunStore.open()
    spec = attempt_spec(store, store.get_run(1), store.get_attempt(1, 1))
    assert not metric_written(spec.output_dir)  # still in the container
    runtime = DockerRuntime(engine)
    if monitor_looks_first:  # what `pushtune monitor` does before it hands the attempt over
        state = runtime.training_state(spec)
        assert (state.alive, state.exit_code, state.reason) == (False, 0, "exited with code 0")
        assert metric_written(spec.output_dir)
    attempt = resume_attempt(store, 1, 1, runtime)
    assert attempt["status"] == "ok" and attempt["metric_value"] == 0.95
    assert attempt["container"] == container.name and attempt["restarts"] == 0  # not run again
    assert Path(attempt["artifact_path"]) == spec.output_dir / "model.joblib"
    assert (spec.output_dir / "model.joblib").read_bytes() == b"weights"
    assert containers_of(engine, model) == []
