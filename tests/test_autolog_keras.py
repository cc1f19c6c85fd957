"""Keras scripts as people write them (no pushtune import, the metric printed in their own words,
the model saved under their own name or not at all), run through the launcher: the curve, the
checkpoint, the metric and the model are captured without changing a line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, requires_engine
from jobs.store.run_store import RunStore
from jobs.train.metrics import read_capture, read_curve, read_metric

# A plain tutorial script: Sequential, compile, fit, evaluate, print. It saves nothing; it
# writes its own predictions (for the test to compare the model pushtune keeps) to preds.npy.
SEQUENTIAL = """\
import numpy as np
import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

keras.utils.set_random_seed(0)
X, y = load_digits(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, random_state=0)
model = keras.Sequential([
    keras.Input((64,)),
    keras.layers.Dense(16, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, validation_split=0.1, verbose=2)
print("losses", [round(v, 6) for v in history.history["loss"]])
loss, acc = model.evaluate(x_test, y_test, verbose=0)
print(f"Test accuracy: {acc:.4f}")
np.save("preds.npy", model.predict(x_test[:5], verbose=0))
"""

# The functional API, two fits (a frozen first stage, then fine-tuning), saved as face.h5.
FUNCTIONAL = """\
import numpy as np
from tensorflow import keras

keras.utils.set_random_seed(1)
rng = np.random.default_rng(0)
x = rng.normal(size=(300, 8)).astype("float32")
y = (x[:, 0] - x[:, 1] > 0).astype("int32")
inputs = keras.Input((8,))
hidden = keras.layers.Dense(8, activation="relu")(inputs)
outputs = keras.layers.Dense(2, activation="softmax")(hidden)
model = keras.Model(inputs, outputs)
model.compile("adam", "sparse_categorical_crossentropy", metrics=["acc"])
model.fit(x[:200], y[:200], epochs=2, verbose=0)
model.fit(x[:200], y[:200], epochs=1, verbose=0)
print("Accuracy = %.1f%%" % (100 * model.evaluate(x[200:], y[200:], verbose=0)[1]))
model.save("face.h5")
"""


def launch(workdir: Path, source: str, *, autolog: bool = True, resume: bool = False,
           wait: bool = True, **replace: object):
    for name, value in replace.items():
        source = source.replace(name, str(value))
    (workdir / "model.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PUSHTUNE_OUTPUT": str(workdir / "output"),
           "TF_CPP_MIN_LOG_LEVEL": "3", "PUSHTUNE_AUTOLOG": "1" if autolog else "0",
           "PUSHTUNE_RESUME": "1" if resume else ""}
    command = [sys.executable, "-m", "jobs.launch", "model.py"]
    if not wait:
        log = open(workdir / "log.txt", "a")
        return subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_plain_sequential_script_gets_its_curve_metric_and_model(tmp_path):
    done = launch(tmp_path, SEQUENTIAL, EPOCHS=3)
    assert done.returncode == 0, done.stderr
    output = tmp_path / "output"

    curve = read_curve(output)
    losses = json.loads(done.stdout.split("losses ", 1)[1].splitlines()[0])
    assert [e["epoch"] for e in curve["history"]] == [1, 2, 3] and curve["epochs"] == 3
    assert [round(e["loss"], 6) for e in curve["history"]] == losses  # the script's own History
    assert all("val_accuracy" in e for e in curve["history"])
    assert curve["steps"] == 19  # ceil(0.9 × 1347 / 64)

    capture = read_capture(output)
    assert capture["frameworks"] == ["keras"]
    training = capture["training"]["keras"]
    assert training["epochs"] == 3 and training["batch_size"] == 64 and training["validation_split"] == 0.1
    assert training["optimizer"] == "Adam" and training["learning_rate"] == pytest.approx(0.01)
    assert training["hidden_dense_units"] == [16]

    reading = read_metric(output, None, "accuracy", capture)
    printed = float(done.stdout.split("Test accuracy: ")[1].split()[0])
    assert reading.metrics["accuracy"] == pytest.approx(printed, abs=5e-5)
    assert reading.source == "accuracy from model.evaluate() at line 17"

    assert capture["artifact"] == {"file": "model.keras",
                                   "how": "saved by pushtune: the last fitted Keras model (Sequential) (line 15)"}
    import keras

    kept = keras.models.load_model(output / "model.keras")
    x_test = np.load(tmp_path / "preds.npy")  # the script's predictions on its first 5 test rows
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    rows = train_test_split(X / 16.0, y, test_size=0.25, random_state=0)[1][:5]
    np.testing.assert_allclose(kept.predict(rows, verbose=0), x_test, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_capture_changes_nothing_the_script_computes(tmp_path):
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    on = launch(tmp_path / "on", SEQUENTIAL, EPOCHS=2)
    off = launch(tmp_path / "off", SEQUENTIAL, EPOCHS=2, autolog=False)
    assert on.returncode == off.returncode == 0, on.stderr + off.stderr
    assert on.stdout.split("losses")[1] == off.stdout.split("losses")[1]  # same losses, same accuracy
    assert not (tmp_path / "off" / "output").exists()  # no capture: nothing written for it


@pytest.mark.slow
def test_a_functional_model_saved_under_its_own_name_becomes_the_artifact(tmp_path):
    done = launch(tmp_path, FUNCTIONAL)
    assert done.returncode == 0, done.stderr
    output = tmp_path / "output"
    capture = read_capture(output)
    assert capture["artifact"] == {"file": "model.h5",
                                   "how": "saved by the script as face.h5 (model.save() at line 16)"}
    assert (output / "model.h5").read_bytes() == (tmp_path / "face.h5").read_bytes()
    # metrics=["acc"]: evaluate's accuracy, and the percentage it printed, both read as accuracy
    reading = read_metric(output, None, "accuracy", capture)
    assert reading.source == "accuracy from model.evaluate() at line 15"
    printed = capture["printed"][-1]
    assert printed["label"] == "Accuracy" and printed["value"] == pytest.approx(reading.metrics["accuracy"], abs=6e-4)
    # two fits: the curve and checkpoint are the first's; both are counted
    assert [e["epoch"] for e in read_curve(output)["history"]] == [1, 2]
    assert capture["training"]["keras"]["fits"] == 2


@pytest.mark.slow
def test_a_script_that_uses_the_kit_or_its_own_checkpoint_is_not_instrumented_twice(tmp_path):
    kit_script = SEQUENTIAL.replace("import keras\n", "import keras\nfrom jobs import kit\n").replace(
        "validation_split=0.1, verbose=2)", "validation_split=0.1, verbose=2, callbacks=kit.callbacks())")
    done = launch(tmp_path, kit_script, EPOCHS=2)
    assert done.returncode == 0, done.stderr
    assert [e["epoch"] for e in read_curve(tmp_path / "output")["history"]] == [1, 2]  # one writer, not two

    own = tmp_path / "own"
    own.mkdir()
    own_backup = SEQUENTIAL.replace(
        "validation_split=0.1, verbose=2)",
        "validation_split=0.1, verbose=2, callbacks=[keras.callbacks.BackupAndRestore('mine')])")
    done = launch(own, own_backup, EPOCHS=2)
    assert done.returncode == 0, done.stderr
    assert not (own / "output" / "checkpoints").exists() and not (own / "output" / "history.json").exists()
    assert read_capture(own / "output")["training"]["keras"]["epochs"] == 2  # still recorded


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_killed_unmodified_training_resumes_from_the_injected_checkpoint(tmp_path):
    slow = SEQUENTIAL.replace(
        "history = model.fit(",
        "import time\nclass Slow(keras.callbacks.Callback):\n"
        "    def on_epoch_begin(self, epoch, logs=None):\n        print(f'epoch-start {epoch}', flush=True)\n"
        "    def on_epoch_end(self, epoch, logs=None):\n        time.sleep(0.5)\n"
        "history = model.fit(callbacks=[Slow()], x=").replace("x_train, y_train, epochs", "x_train, y=y_train, epochs")
    first = launch(tmp_path, slow, EPOCHS=8, wait=False)
    progress = tmp_path / "output" / "progress.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert first.poll() is None, (tmp_path / "log.txt").read_text()
        try:
            if json.loads(progress.read_text())["epoch"] >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL
    done_before_kill = json.loads(progress.read_text())["epoch"]

    second = launch(tmp_path, slow, EPOCHS=8, resume=True)
    assert second.returncode == 0, second.stderr
    started = [int(line.split()[1]) for line in second.stdout.splitlines() if line.startswith("epoch-start")]
    assert started[0] >= done_before_kill >= 2 and started == list(range(started[0], 8))
    assert [e["epoch"] for e in read_curve(tmp_path / "output")["history"]] == list(range(1, 9))


@pytest.mark.slow
def test_a_crash_inside_fit_is_the_scripts_own_traceback(tmp_path):
    broken = SEQUENTIAL.replace("model.fit(x_train, y_train", "model.fit(x_train[:, :10], y_train")
    done = launch(tmp_path, broken, EPOCHS=1)
    assert done.returncode == 1
    assert 'File "' + str(tmp_path / "model.py") + '", line 15' in done.stderr
    assert "jobs/launch.py" not in done.stderr and "jobs/autolog" not in done.stderr
    assert read_capture(tmp_path / "output")["artifact"] is None  # a failed script leaves no model


# --- through the loop, in both runtimes ---------------------------------------------------------

# Trained far too briefly: one epoch at a cautious rate. Prints its metric its own way.
SHORT = SEQUENTIAL.replace("Dense(16", "Dense(32").replace("Adam(0.01)", "Adam(0.003)").replace("EPOCHS", "1")


def _run_unmodified(cli, tmp_path: Path, runtime: str) -> dict:
    script = tmp_path / "digits_short.py"
    script.write_text(SHORT)
    done = cli("run", script, "--runtime", runtime, "--threshold", "0.9", "--max-attempts", "4", "--json",
               timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _assert_captured_through_the_loop(cli, summary: dict) -> None:
    attempts = RunStore.open().attempts(summary["run_id"])
    assert summary["status"] == "passed"
    for attempt in attempts:  # a curve on every attempt, which the diagnosis read
        assert attempt["curve"]["history"], attempt["n"]
        assert "no training curve" not in (attempt["reason"] or "")
    # more epochs, each continuing from the checkpoint the capture put into the script's fit
    assert [(a["tweak_name"], a["warm_from"]) for a in attempts[1:]] == [
        ("double_epochs", a["n"] - 1) for a in attempts[1:]]
    assert [len(a["curve"]["history"]) for a in attempts] == [2 ** (a["n"] - 1) for a in attempts]
    assert summary["best"]["metric_source"] == "accuracy from model.evaluate() at line 17"
    assert summary["best"]["artifact_source"].startswith("saved by pushtune: the last fitted Keras model")
    assert Path(summary["best"]["artifact"]).name == "model.keras"
    [model] = json.loads(cli("models", "--json").stdout)  # the passing run registered its model
    assert model["name"] == "digits_short" and model["production"] == 1
    assert model["versions"][0]["run_id"] == summary["run_id"]
    assert model["versions"][0]["attempt"] == summary["best"]["attempt"]


@pytest.mark.slow
def test_an_unmodified_keras_script_goes_through_the_loop_locally(cli, tmp_path):
    _assert_captured_through_the_loop(cli, _run_unmodified(cli, tmp_path, "local"))


@pytest.mark.docker
@pytest.mark.slow
@requires_engine
def test_an_unmodified_keras_script_goes_through_the_loop_in_docker(cli, tmp_path):
    _assert_captured_through_the_loop(cli, _run_unmodified(cli, tmp_path, "docker"))


def test_the_launcher_runs_a_script_as_python_would(tmp_path):
    """__file__, sys.argv, __name__, exit codes and pickling of classes the script defines."""
    source = textwrap.dedent("""\
        import pickle, sys
        class Model:
            def predict(self, x):
                return x
        print(__name__, __file__, sys.argv[1:], sys.path[0])
        pickle.loads(pickle.dumps(Model()))
        sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    """)
    (tmp_path / "model.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PUSHTUNE_OUTPUT": str(tmp_path / "out")}
    for args, code in (((), 0), (("3",), 3)):
        launched = subprocess.run([sys.executable, "-m", "jobs.launch", "model.py", *args], cwd=tmp_path,
                                  env=env, capture_output=True, text=True)
        plain = subprocess.run([sys.executable, "model.py", *args], cwd=tmp_path, env=env,
                               capture_output=True, text=True)
        assert launched.returncode == plain.returncode == code, launched.stderr
        assert launched.stdout == plain.stdout
