"""jobs.kit: the helpers model scripts import. Real files, real subprocesses, real Keras."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import kit

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_VARS = ("PUSHTUNE_OUTPUT", "PUSHTUNE_DATA", "PUSHTUNE_PARAMS", "PUSHTUNE_RESUME", "PUSHTUNE_CACHE")


@pytest.fixture(autouse=True)
def standalone(tmp_path, monkeypatch) -> Path:
    """Each test starts as a standalone script would: no contract variables, cwd = tmp_path."""
    for name in CONTRACT_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- params ---------------------------------------------------------------------------------


def test_params_without_env_are_the_defaults():
    assert kit.params(epochs=5, learning_rate=0.01) == {"epochs": 5, "learning_rate": 0.01}


def test_params_overlay_matches_keys_case_insensitively_and_keeps_default_spelling(monkeypatch):
    monkeypatch.setenv("PUSHTUNE_PARAMS", json.dumps({"EPOCHS": 10, "c": 2.5, "lr": 0.5}))
    got = kit.params(epochs=5, C=1.0, learning_rate=0.01, batch_size=32)
    assert got == {"epochs": 10, "C": 2.5, "learning_rate": 0.5, "batch_size": 32}


def test_params_cast_to_the_defaults_types(monkeypatch):
    monkeypatch.setenv(
        "PUSHTUNE_PARAMS",
        json.dumps({"batch_size": "64", "epochs": 20.0, "alpha": 1, "shuffle": "false", "name": 7}),
    )
    got = kit.params(batch_size=32, epochs=5, alpha=0.1, shuffle=True, name="x")
    assert got == {"batch_size": 64, "epochs": 20, "alpha": 1.0, "shuffle": False, "name": "7"}
    assert type(got["batch_size"]) is int and type(got["epochs"]) is int
    assert type(got["alpha"]) is float


def test_params_unknown_keys_pass_through(monkeypatch):
    monkeypatch.setenv("PUSHTUNE_PARAMS", json.dumps({"dense_layers": 2}))
    assert kit.params(epochs=5) == {"epochs": 5, "dense_layers": 2}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"epochs": 2.5}', "epochs=2.5"),
        ('{"epochs": "many"}', "epochs='many'"),
    ],
)
def test_params_bad_input_exits_with_one_line(monkeypatch, raw, message):
    monkeypatch.setenv("PUSHTUNE_PARAMS", raw)
    with pytest.raises(SystemExit) as exc:
        kit.params(epochs=5)
    text = str(exc.value.code)
    assert message in text and "\n" not in text


# --- directories and flags -------------------------------------------------------------------


def test_standalone_dirs_are_output_and_sibling_cache(standalone):
    assert kit.output_dir().resolve() == standalone / "output"
    assert kit.cache_dir() == standalone / ".cache"
    assert (standalone / "output").is_dir() and (standalone / ".cache").is_dir()
    assert kit.data_dir() is None
    assert kit.data_dir("faces") == Path("faces")


def test_contract_dirs_come_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PUSHTUNE_OUTPUT", str(tmp_path / "attempt-1" / "output"))
    monkeypatch.setenv("PUSHTUNE_CACHE", str(tmp_path / "shared-cache"))
    monkeypatch.setenv("PUSHTUNE_DATA", str(tmp_path / "data"))
    assert kit.output_dir() == tmp_path / "attempt-1" / "output"
    assert kit.cache_dir() == tmp_path / "shared-cache"
    assert (tmp_path / "attempt-1" / "output").is_dir() and (tmp_path / "shared-cache").is_dir()
    assert kit.data_dir("ignored") == tmp_path / "data"


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("", False), ("0", False), ("1", True), ("yes", True)])
def test_resuming(monkeypatch, value, expected):
    if value is not None:
        monkeypatch.setenv("PUSHTUNE_RESUME", value)
    assert kit.resuming() is expected


# --- report / progress -------------------------------------------------------------------------


def test_report_merges_into_metrics_json_and_prints(standalone, capsys):
    import numpy as np

    first = kit.report(accuracy=0.5, loss=1.0)
    second = kit.report(accuracy=np.float32(0.75), epochs=np.int64(3))
    assert first == second == kit.output_dir() / "metrics.json"
    assert json.loads(second.read_text()) == {"accuracy": 0.75, "loss": 1.0, "epochs": 3}
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["accuracy: 0.5", "loss: 1.0", "accuracy: 0.75", "epochs: 3"]


def test_report_failure_leaves_previous_file_and_no_temp_files():
    path = kit.report(accuracy=0.9)
    with pytest.raises(TypeError):
        kit.report(accuracy=0.1, bad=object())  # not JSON-serialisable: the write fails midway
    assert json.loads(path.read_text()) == {"accuracy": 0.9}
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


def test_progress_is_none_without_a_file_and_reads_one():
    assert kit.progress() is None
    (kit.output_dir() / "progress.json").write_text('{"epoch": 3, "logs": {"loss": 0.1}}')
    assert kit.progress() == {"epoch": 3, "logs": {"loss": 0.1}}


def test_importing_kit_does_not_import_tensorflow():
    code = "import sys, jobs.kit; print(any(m in sys.modules for m in ('tensorflow', 'keras')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


# --- Keras callbacks: resume after SIGKILL ------------------------------------------------------

EPOCHS = 8
TRAIN_SCRIPT = f"""
import os, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras, numpy as np
from jobs import kit

keras.utils.set_random_seed(0)
x = np.random.rand(64, 4).astype("float32")
y = (x.sum(axis=1) > 2).astype("float32")
model = keras.Sequential([
    keras.Input(shape=(4,)),
    keras.layers.Dense(8, activation="relu"),
    keras.layers.Dense(1, activation="sigmoid"),
])
model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])

class Slow(keras.callbacks.Callback):  # gives the test time to kill it between epochs
    def on_epoch_begin(self, epoch, logs=None):
        print(f"epoch-start {{epoch}}", flush=True)
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(0.4)

model.fit(x, y, epochs={EPOCHS}, batch_size=16, callbacks=kit.callbacks() + [Slow()], verbose=0)
kit.report(accuracy=float(model.evaluate(x, y, verbose=0)[1]))
"""


def _train(workdir: Path, log: Path, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PUSHTUNE_OUTPUT": str(workdir / "output")}
    env["PUSHTUNE_RESUME"] = "1" if resume else ""
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, "model.py"], cwd=workdir, env=env, stdout=handle, stderr=subprocess.STDOUT)


def _started_epochs(log: Path) -> list[int]:
    return [int(n) for n in re.findall(r"^epoch-start (\d+)$", log.read_text(), re.M)]


def _wait_for_progress(process: subprocess.Popen, progress_file: Path, at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "training ended before it could be killed"
        try:
            if json.loads(progress_file.read_text())["epoch"] >= at_least:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"progress.json did not reach epoch {at_least} within {timeout}s")


@pytest.mark.timeout(180)
def test_sigkilled_training_resumes_from_its_checkpoint(tmp_path):
    (tmp_path / "model.py").write_text(TRAIN_SCRIPT)
    progress_file = tmp_path / "output" / "progress.json"
    # A stale checkpoint from an earlier standalone run: a run that is not resuming ignores it.
    stale = tmp_path / "output" / "checkpoints" / "training_metadata.json"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"epoch": 6, "batch": 0}')

    first = _train(tmp_path, tmp_path / "first.log", resume=False)
    _wait_for_progress(first, progress_file, at_least=2, timeout=120)
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL
    done_before_kill = json.loads(progress_file.read_text())["epoch"]
    assert 2 <= done_before_kill < EPOCHS
    assert not (tmp_path / "output" / "metrics.json").exists()
    assert _started_epochs(tmp_path / "first.log")[0] == 0

    second = _train(tmp_path, tmp_path / "second.log", resume=True)
    assert second.wait(timeout=120) == 0, (tmp_path / "second.log").read_text()
    resumed = _started_epochs(tmp_path / "second.log")
    # It continued where the checkpoint left off: not from epoch 0, no epoch done twice that
    # progress.json had recorded, and through to the last epoch.
    assert resumed[0] >= done_before_kill > 0
    assert resumed == list(range(resumed[0], EPOCHS))
    assert f"kit: resumed at epoch {resumed[0]}" in (tmp_path / "second.log").read_text()
    assert json.loads(progress_file.read_text())["epoch"] == EPOCHS
    assert 0.0 <= json.loads((tmp_path / "output" / "metrics.json").read_text())["accuracy"] <= 1.0


def test_resume_with_a_truncated_checkpoint_metadata_falls_back_to_the_previous(monkeypatch):
    backup = kit.output_dir() / kit.CHECKPOINT_DIR
    backup.mkdir()
    (backup / "training_metadata.json").write_text('{"epo')  # killed mid-write
    (backup / "training_metadata.json.bkp").write_text('{"epoch": 3, "batch": 0}')
    (backup / "latest.weights.h5").write_bytes(b"half")
    (backup / "latest.weights.h5.bkp").write_bytes(b"previous weights")
    monkeypatch.setenv("PUSHTUNE_RESUME", "1")

    callbacks = kit.callbacks()

    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 3
    assert (backup / "latest.weights.h5").read_bytes() == b"previous weights"
    assert [type(c).__name__ for c in callbacks] == ["BackupAndRestore", "ProgressFile"]
