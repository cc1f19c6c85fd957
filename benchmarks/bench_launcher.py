"""What the launcher costs: `python -m jobs.launch model.py` against `python model.py`.

Per attempt: the wall time of a trivial script and of a tiny scikit-learn script, run both
ways alternately (median of RUNS each). Per epoch: a small Keras digits script times its own
`fit`, run through the launcher with the capture on (the kit's callbacks: checkpoint and
history.json every epoch) and with PUSHTUNE_AUTOLOG=0.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 10
KERAS_RUNS = 3
EPOCHS = 20

TRIVIAL = 'print("accuracy: 0.5")\n'
SKLEARN = textwrap.dedent("""\
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=200).fit(X, y)
    print(f"Accuracy: {clf.score(X, y):.4f}")
    joblib.dump(clf, "clf.pkl")
""")
KERAS = textwrap.dedent(f"""\
    import os
    import time

    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import keras
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(0)
    X, y = load_digits(return_X_y=True)
    model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(X[:64] / 16.0, y[:64], epochs=1, verbose=0)  # compile the step functions first
    started = time.perf_counter()
    model.fit(X / 16.0, y, validation_split=0.2, epochs={EPOCHS}, batch_size=32, verbose=0)
    print("fit seconds per epoch:", (time.perf_counter() - started) / {EPOCHS})
""")


def _run(workdir: Path, script: Path, launcher: bool, autolog: bool = True) -> tuple[float, str]:
    """(wall seconds, stdout) of one run of the script, in a fresh output directory."""
    output = Path(tempfile.mkdtemp(dir=workdir, prefix="output-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PUSHTUNE_OUTPUT": str(output),
           "PUSHTUNE_AUTOLOG": "1" if autolog else "0"}
    command = [sys.executable, *(["-m", "jobs.launch"] if launcher else []), str(script)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=output, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout


def per_attempt(workdir: Path, name: str, source: str) -> tuple[float, float]:
    """Median wall seconds of (python script.py, python -m jobs.launch script.py)."""
    script = workdir / f"{name}.py"
    script.write_text(source)
    _run(workdir, script, True)  # warm the page cache
    plain, launched = [], []
    for _ in range(RUNS):
        plain.append(_run(workdir, script, False)[0])
        launched.append(_run(workdir, script, True)[0])
    return statistics.median(plain), statistics.median(launched)


def per_epoch(workdir: Path) -> tuple[float, float]:
    """Median fit seconds per epoch of the Keras script through the launcher, (capture off, on)."""
    script = workdir / "keras_digits.py"
    script.write_text(KERAS)
    samples: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(KERAS_RUNS):
        for autolog in (False, True):
            stdout = _run(workdir, script, True, autolog)[1]
            samples[autolog].append(float(stdout.rsplit("fit seconds per epoch:", 1)[1].split()[0]))
    return statistics.median(samples[False]), statistics.median(samples[True])


def _verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def main() -> str:
    with tempfile.TemporaryDirectory(prefix="bench-launcher-") as tmp:
        workdir = Path(tmp)
        attempts = {name: per_attempt(workdir, name, source)
                    for name, source in (("trivial", TRIVIAL), ("scikit-learn", SKLEARN))}
        off, on = per_epoch(workdir)
    rows = [f"| {name} script | {plain:.3f} s | {launched:.3f} s | {launched - plain:+.3f} s "
            f"({_verdict(launched - plain < 0.3)} < 0.3 s) |" for name, (plain, launched) in attempts.items()]
    extra = (on - off) / off * 100
    return "\n".join([
        "## launcher cost",
        "",
        f"Per attempt: wall time of `python model.py` against `python -m jobs.launch model.py` (capture on), "
        f"median of {RUNS} alternating runs each after a warm-up; the trivial script prints one metric line, "
        f"the scikit-learn one fits a LogisticRegression on iris, prints its accuracy and `joblib.dump`s it.",
        "",
        "| script | python model.py | python -m jobs.launch | overhead |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        f"Per epoch: a Keras digits MLP (Dense 32, {EPOCHS} epochs, batch 32) timing its own `fit` through the "
        f"launcher, capture on (the kit's checkpoint and history every epoch) and `PUSHTUNE_AUTOLOG=0`; "
        f"median of {KERAS_RUNS} runs each.",
        "",
        "| capture off | capture on | overhead |",
        "| --- | --- | --- |",
        f"| {off:.4f} s/epoch | {on:.4f} s/epoch | {extra:+.1f}% ({_verdict(extra < 2)} < 2%) |",
    ]) + "\n"


if __name__ == "__main__":
    print(main())
