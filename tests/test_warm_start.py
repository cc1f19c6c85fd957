"""Warm starts: more epochs continue the parent's training from its checkpoint, and the result
is the model a training of the new total from scratch gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jobs.loop import RunOptions, run_model, warm_start_epoch
from jobs.store.run_store import RunStore
from jobs.train.runtime import LocalRuntime
from jobs.tune.strategies import Candidate

ROOT = Path(__file__).resolve().parent.parent

DIGITS = textwrap.dedent("""\
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from jobs import kit

    keras.utils.set_random_seed(3)
    digits = load_digits()
    x_train, x_val, y_train, y_val = train_test_split(
        digits.data.astype("float32") / 16, digits.target, test_size=0.25, random_state=3)
    model = keras.Sequential([
        keras.Input(shape=(64,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.002),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=2, batch_size=64,
              callbacks=kit.callbacks(), verbose=0)
    np.save(kit.output_dir() / "weights.npy", np.concatenate([w.ravel() for w in model.get_weights()]))
    np.save(kit.output_dir() / "optimizer.npy", np.concatenate(
        [np.ravel(v.numpy()) for v in model.optimizer.variables]))
    kit.report(accuracy=float(model.evaluate(x_val, y_val, verbose=0)[1]))
""")


@pytest.mark.slow
def test_a_warm_started_epoch_doubling_is_the_model_trained_from_scratch(tmp_path, pushtune_home):
    script = tmp_path / "digits.py"
    script.write_text(DIGITS)
    options = RunOptions(threshold=1.0, max_attempts=2, runtime="local")  # only a perfect score: two attempts
    summary = run_model(script, options, LocalRuntime(), RunStore.open())
    store = RunStore.open()
    first, second = store.attempts(summary["run_id"])
    assert second["tweak_name"] == "double_epochs" and "epochs 2 → 4" in second["tweak"]
    assert (second["warm_from"], second["warm_epoch"]) == (1, 2)
    assert second["reason"].startswith("attempt 1: under-trained: val_accuracy still rising at the last epoch (2)")
    assert "kit: resumed at epoch 2" in (Path(second["dir"]) / "log.txt").read_text()
    # The curve goes on from the parent's: its first two epochs are the parent's own.
    assert [e["epoch"] for e in second["curve"]["history"]] == [1, 2, 3, 4]
    assert second["curve"]["history"][:2] == first["curve"]["history"]

    # The same source trained from scratch, four epochs in one go.
    scratch = tmp_path / "scratch"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHTUNE_")}
    subprocess.run([sys.executable, str(Path(second["dir"]) / "model.py")], check=True, cwd=tmp_path,
                   env={**env, "PUSHTUNE_OUTPUT": str(scratch), "PYTHONPATH": str(ROOT)}, timeout=300)
    warm = Path(second["dir"]) / "output"
    for name in ("weights.npy", "optimizer.npy"):  # optimizer: Adam's moments and step count
        assert np.array_equal(np.load(warm / name), np.load(scratch / name)), name
    assert json.loads((scratch / "metrics.json").read_text())["accuracy"] == second["metric_value"]


def _parent(tmp_path: Path, source: str, epochs: int = 2, saved: int = 2) -> dict:
    output = tmp_path / "attempt-1" / "output"
    (output / "checkpoints").mkdir(parents=True)
    (output / "checkpoints" / "latest.weights.h5").write_bytes(b"weights")
    (output / "checkpoints" / "training_metadata.json").write_text(json.dumps({"epoch": saved, "batch": 0}))
    (tmp_path / "attempt-1" / "model.py").write_text(source)
    history = [{"epoch": i + 1, "loss": 1.0} for i in range(epochs)]
    return {"n": 1, "status": "ok", "dir": str(tmp_path / "attempt-1"), "params": {},
            "curve": {"epochs": 2, "steps": 10, "history": history}}


FIT = "model.fit(x, y, epochs=2)\nlr = 0.1\n"


def test_warm_start_only_when_the_one_change_is_more_epochs(tmp_path):
    more_epochs = Candidate("model.fit(x, y, epochs=4)\nlr = 0.1\n", {}, "double_epochs", parent=1)
    assert warm_start_epoch(_parent(tmp_path / "a", FIT), more_epochs) == 2
    also_rate = Candidate("model.fit(x, y, epochs=4)\nlr = 0.2\n", {}, "double_epochs", parent=1)
    assert warm_start_epoch(_parent(tmp_path / "b", FIT), also_rate) is None
    other_tweak = Candidate(FIT.replace("0.1", "0.01"), {}, "divide_learning_rate_by_10", parent=1)
    assert warm_start_epoch(_parent(tmp_path / "c", FIT), other_tweak) is None


def test_no_warm_start_from_an_unfinished_or_uncheckpointed_parent(tmp_path):
    more_epochs = Candidate("model.fit(x, y, epochs=4)\nlr = 0.1\n", {}, "double_epochs", parent=1)
    stopped_early = _parent(tmp_path / "a", FIT, epochs=1)  # early stopping: 1 of 2 epochs
    assert warm_start_epoch(stopped_early, more_epochs) is None
    stale = _parent(tmp_path / "b", FIT, saved=1)  # the checkpoint is not of the last epoch
    assert warm_start_epoch(stale, more_epochs) is None
    gone = _parent(tmp_path / "c", FIT)
    (Path(gone["dir"]) / "output" / "checkpoints" / "latest.weights.h5").unlink()
    assert warm_start_epoch(gone, more_epochs) is None
    linked = _parent(tmp_path / "e", FIT)  # a checkpoints folder the script turned into a link
    real = Path(linked["dir"]) / "output" / "checkpoints"
    real.rename(real.with_name("elsewhere"))
    real.symlink_to(real.with_name("elsewhere"))
    assert warm_start_epoch(linked, more_epochs) is None
    in_params = {**_parent(tmp_path / "d", FIT), "params": {"epochs": 2, "lr": 0.1}}
    assert warm_start_epoch(in_params, Candidate(FIT, {"epochs": 4, "lr": 0.1}, "double_epochs")) == 2
    assert warm_start_epoch(in_params, Candidate(FIT, {"epochs": 4, "lr": 0.2}, "double_epochs")) is None
