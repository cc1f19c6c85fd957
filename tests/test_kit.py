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
from jobs.train import images

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


def test_importing_kit_does_not_import_tensorflow_or_torch():
    code = "import sys, jobs.kit; print(any(m in sys.modules for m in ('tensorflow', 'keras', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("module", images.SCRIPT_MODULES)
def test_what_runs_inside_an_attempt_imports_only_the_standard_library_at_module_level(module):
    """The kit and the launcher are copied alone into the runtime images (SCRIPT_MODULES): at
    module level they import the standard library and each other, nothing else."""
    import ast

    tree = ast.parse((ROOT / module).read_text())
    imported = set()
    for node in tree.body:  # module level only: Keras, torch and scikit-learn are imported lazily
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    shipped = {name.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for name in images.SCRIPT_MODULES}
    foreign = {name for name in imported
               if name.split(".")[0] not in set(sys.stdlib_module_names) | {"__future__"} and name not in shipped}
    assert not foreign, foreign


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
        return subprocess.Popen([sys.executable, "model.py"], cwd=workdir, env=env, stdout=handle,
                                stderr=subprocess.STDOUT)


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


# --- PyTorch checkpoints: torch_resume / torch_epoch_end -----------------------------------------


def _torch_model(seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return model, optimizer


def _train_a_little(model, optimizer, steps: int = 3) -> None:
    import torch

    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _same_tensors(a, b) -> bool:
    """Nested state dicts (tensors, numbers, lists, dicts) equal, tensors exactly."""
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_torch_checkpoint_round_trip_restores_model_optimizer_epoch_and_rng(monkeypatch, capsys):
    import torch

    model, optimizer = _torch_model(0)
    assert kit.torch_resume(model, optimizer) == 0  # a training from scratch
    _train_a_little(model, optimizer)
    kit.torch_epoch_end(0, model, optimizer, epochs=5, steps=3, loss=torch.tensor(0.7), accuracy=0.5)
    _train_a_little(model, optimizer)
    kit.torch_epoch_end(1, model, optimizer, epochs=5, steps=3, loss=0.6, accuracy=0.75)
    rng_after_save = torch.get_rng_state()
    checkpoints = kit.output_dir() / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["torch.pt", "training_metadata.json"]
    assert json.loads((checkpoints / "training_metadata.json").read_text()) == {"epoch": 2, "batch": 0}

    fresh_model, fresh_optimizer = _torch_model(1)  # other weights, no optimizer state
    torch.manual_seed(123)  # another RNG state
    assert not _same_tensors(fresh_model.state_dict(), model.state_dict())
    monkeypatch.setenv("PUSHTUNE_RESUME", "1")
    assert kit.torch_resume(fresh_model, fresh_optimizer) == 2
    assert "kit: resumed at epoch 2" in capsys.readouterr().err
    assert _same_tensors(fresh_model.state_dict(), model.state_dict())
    assert _same_tensors(fresh_optimizer.state_dict(), optimizer.state_dict())
    assert torch.equal(torch.get_rng_state(), rng_after_save)
    # and they train on alike, on the same batches (Adam's moments and step count came back too)
    rng = torch.get_rng_state()
    _train_a_little(model, optimizer)
    torch.set_rng_state(rng)
    _train_a_little(fresh_model, fresh_optimizer)
    assert _same_tensors(fresh_model.state_dict(), model.state_dict())


def test_torch_resume_without_a_checkpoint_starts_at_0_and_a_fresh_start_clears_old_files(monkeypatch, capsys):
    model, optimizer = _torch_model(0)
    monkeypatch.setenv("PUSHTUNE_RESUME", "1")
    assert kit.torch_resume(model, optimizer) == 0  # killed before its first epoch ended
    assert "no checkpoint yet" in capsys.readouterr().err

    kit.torch_epoch_end(0, model, optimizer, epochs=2, loss=1.0)
    monkeypatch.setenv("PUSHTUNE_RESUME", "")
    assert kit.torch_resume(model, optimizer) == 0  # an earlier run's files are not this one's
    assert sorted(p.name for p in kit.output_dir().iterdir()) == []


def test_torch_resume_of_an_unreadable_checkpoint_starts_at_0(monkeypatch, capsys):
    checkpoints = kit.output_dir() / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "torch.pt").write_bytes(b"not a checkpoint")
    (checkpoints / ".torch.pt.abc.tmp").write_bytes(b"a save cut short")
    monkeypatch.setenv("PUSHTUNE_RESUME", "1")
    assert kit.torch_resume(*_torch_model(0)) == 0
    assert "cannot read" in capsys.readouterr().err
    assert not (checkpoints / ".torch.pt.abc.tmp").exists()


def test_torch_checkpoint_save_that_fails_keeps_the_previous_and_leaves_no_temp_file():
    model, optimizer = _torch_model(0)
    kit.torch_epoch_end(0, model, optimizer, epochs=3, loss=1.0)
    checkpoints = kit.output_dir() / "checkpoints"
    saved = (checkpoints / "torch.pt").read_bytes()

    class Unpicklable:
        def state_dict(self):
            return {"x": lambda: None}  # torch.save cannot pickle it: the write fails midway

    with pytest.raises(AttributeError, match="pickle"):
        kit.torch_epoch_end(1, Unpicklable(), None, epochs=3, loss=0.5)
    assert (checkpoints / "torch.pt").read_bytes() == saved
    assert sorted(p.name for p in checkpoints.iterdir()) == ["torch.pt", "training_metadata.json"]
    assert kit.progress()["epoch"] == 1  # progress never claims the epoch that was not saved


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras' own, with NumPy 2
def test_torch_epoch_end_writes_progress_and_history_as_the_keras_callbacks_do(tmp_path, monkeypatch):
    """Same files, same keys, same epoch numbering as `kit.callbacks()` in a Keras `fit`; a
    resumed training's curve drops the epochs after its checkpoint."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    monkeypatch.setenv("PUSHTUNE_OUTPUT", str(tmp_path / "keras"))
    keras.utils.set_random_seed(0)
    x = np.random.rand(64, 4).astype("float32")
    y = (x.sum(axis=1) > 2).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:48], y[:48], validation_data=(x[48:], y[48:]), epochs=2, batch_size=16, verbose=0,
              callbacks=kit.callbacks())
    keras_history, keras_progress = kit.history(), kit.progress()

    monkeypatch.setenv("PUSHTUNE_OUTPUT", str(tmp_path / "torch"))
    net, optimizer = _torch_model(0)
    assert kit.torch_resume(net, optimizer) == 0
    import torch

    for epoch in range(2):
        kit.torch_epoch_end(epoch, net, optimizer, epochs=2, steps=3, loss=torch.tensor(0.5 - epoch / 10),
                            accuracy=0.6, val_loss=np.float32(0.55), val_accuracy=0.625)
    torch_history, torch_progress = kit.history(), kit.progress()

    assert torch_history.keys() == keras_history.keys() == {"epochs", "steps", "history"}
    assert (torch_history["epochs"], torch_history["steps"]) == (keras_history["epochs"], keras_history["steps"])
    assert [e["epoch"] for e in torch_history["history"]] == [e["epoch"] for e in keras_history["history"]] == [1, 2]
    for ours, theirs in zip(torch_history["history"], keras_history["history"], strict=True):
        assert sorted(ours) == sorted(theirs) == ["accuracy", "epoch", "loss", "val_accuracy", "val_loss"]
        assert all(type(value) in (int, float) for value in ours.values())
    assert torch_progress.keys() == keras_progress.keys() == {"epoch", "epochs", "logs"}
    assert torch_progress["logs"].keys() == keras_progress["logs"].keys()
    assert (torch_progress["epoch"], torch_progress["epochs"]) == (keras_progress["epoch"], keras_progress["epochs"])
    assert torch_history["history"][1]["loss"] == pytest.approx(0.4)

    # pushtune reads them as it reads Keras': the curve, the live progress, the resumable epoch
    from jobs.train.metrics import read_curve
    from jobs.train.runtime import resumable_epoch

    output = tmp_path / "torch"
    assert read_curve(output) == torch_history and resumable_epoch(output) == 2

    # a NaN loss is written as null, as Keras' is
    kit.torch_epoch_end(2, net, optimizer, epochs=4, loss=float("nan"))
    assert kit.history()["history"][-1] == {"epoch": 3, "loss": None}
    # resumed from the checkpoint of epoch 1, epoch 2 is trained again and replaces the old one
    kit.torch_epoch_end(1, net, optimizer, epochs=4, loss=0.3)
    assert [(e["epoch"], e["loss"]) for e in kit.history()["history"]] == [(1, 0.5), (2, 0.3)]
