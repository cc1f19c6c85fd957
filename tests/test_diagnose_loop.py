"""The default strategy on the ordinary under-performing models of issue 10, trained for real:
each has an obvious fix, and the loop must find it within its attempts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from jobs.loop import RunOptions, run_model
from jobs.store.run_store import RunStore
from jobs.train.runtime import LocalRuntime

FACE_CNN = textwrap.dedent('''\
    """A small CNN on the ORL faces (32x32 grey), trained for too few epochs."""
    import keras
    import numpy as np
    from PIL import Image
    from sklearn.model_selection import train_test_split

    from jobs import kit

    keras.utils.set_random_seed(7)
    paths = sorted(kit.data_dir().glob("s*/*.pgm"))
    x = np.stack([np.asarray(Image.open(p).resize((32, 32)), dtype="float32") / 255.0 for p in paths])
    y = np.array([int(p.parent.name[1:]) - 1 for p in paths])
    x_train, x_val, y_train, y_val = train_test_split(
        x[..., None], y, test_size=0.3, stratify=y, random_state=7)

    model = keras.Sequential([
        keras.Input(shape=(32, 32, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(40, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=2, batch_size=32,
              callbacks=kit.callbacks(), verbose=2)
    kit.report(accuracy=float(model.evaluate(x_val, y_val, verbose=0)[1]))
''')

DIGITS = textwrap.dedent('''\
    import keras
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from jobs import kit

    keras.utils.set_random_seed(42)
    digits = load_digits()
    x_train, x_val, y_train, y_val = train_test_split(
        digits.data.astype("float32") / 16.0, digits.target, test_size=0.25,
        stratify=digits.target, random_state=42)
    model = keras.Sequential([
        keras.Input(shape=(64,)),
        keras.layers.Dense(HIDDEN, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=OPTIMIZER, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=EPOCHS, batch_size=32,
              callbacks=kit.callbacks(), verbose=2)
    kit.report(accuracy=float(model.evaluate(x_val, y_val, verbose=0)[1]))
''')


def run(tmp_path: Path, source: str, threshold: float, attempts: int, data: Path | None = None) -> dict:
    script = tmp_path / "model.py"
    script.write_text(source)
    options = RunOptions(threshold=threshold, max_attempts=attempts, runtime="local",
                         data=str(data) if data else None)
    return run_model(script, options, LocalRuntime(), RunStore.open())


@pytest.mark.slow
def test_too_few_epochs_keeps_doubling_them_from_the_checkpoint(tmp_path, pushtune_home, faces_dir):
    summary = run(tmp_path, FACE_CNN, 0.85, 10, faces_dir)
    assert summary["status"] == "passed", summary["attempts"]
    tweaks = [a["tweak"] for a in summary["attempts"][1:]]
    assert all(t.startswith("double epochs") for t in tweaks), tweaks
    # every doubling went on from its parent's last epoch
    assert [a["warm_epoch"] for a in summary["attempts"][1:]] == [2 * 2 ** i for i in range(len(tweaks))]


@pytest.mark.slow
def test_a_diverging_learning_rate_is_divided_by_ten(tmp_path, pushtune_home):
    source = DIGITS.replace("HIDDEN", "32").replace("OPTIMIZER", "keras.optimizers.SGD(learning_rate=8.0)")
    summary = run(tmp_path, source.replace("EPOCHS", "10"), 0.9, 5)
    assert summary["status"] == "passed", summary["attempts"]
    second = summary["attempts"][1]
    assert second["tweak"].startswith("divide learning rate by 10") and "8.0 → 0.8" in second["tweak"]
    assert second["reason"].startswith("attempt 1: diverged: loss")


@pytest.mark.slow
def test_a_too_narrow_hidden_layer_is_widened(tmp_path, pushtune_home):
    source = DIGITS.replace("HIDDEN", "3").replace("OPTIMIZER", '"adam"').replace("EPOCHS", "30")
    summary = run(tmp_path, source, 0.9, 6)
    assert summary["status"] == "passed", summary["attempts"]
    assert any(a["tweak"] and a["tweak"].startswith("widen Dense 3 → 10") for a in summary["attempts"])
