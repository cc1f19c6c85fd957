"""Live progress of an attempt: the epoch watcher against files a real child process writes,
and the per-epoch lines of `pushtune run` and `pushtune train` in a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from jobs.train.progress import EpochWatcher, epoch_line, epoch_text, format_value, shown_logs

ROOT = Path(__file__).resolve().parent.parent

# A training stand-in: after each epoch it writes history.json then progress.json, atomically,
# exactly as jobs.kit.callbacks() does (the same helper), without Keras. The function that is
# never called tells the static classifier this file is a dense network.
FAKE_TRAINING = textwrap.dedent("""\
    import os
    import time

    from jobs import kit


    def build():  # never called
        import keras
        return keras.Sequential([keras.layers.Dense(1)])


    EPOCHS = int(os.environ.get("FAKE_EPOCHS", "4"))
    PAUSE = float(os.environ.get("FAKE_PAUSE", "0.2"))
    out = kit.output_dir()
    curve = {"epochs": EPOCHS, "steps": 3, "history": []}
    for epoch in range(1, EPOCHS + 1):
        time.sleep(PAUSE)
        logs = {"loss": round(1.0 / epoch, 4), "accuracy": round(0.5 + epoch / 10, 4),
                "val_loss": round(1.2 / epoch, 4), "val_accuracy": round(0.45 + epoch / 10, 4)}
        curve["history"].append({"epoch": epoch, **logs})
        kit._write_json_atomic(out / kit.HISTORY_FILE, curve)
        kit._write_json_atomic(out / kit.PROGRESS_FILE, {"epoch": epoch, "epochs": EPOCHS, "logs": logs})
    kit.report(accuracy=round(0.5 + EPOCHS / 10, 4))
""")


def expected_logs(epoch: int) -> dict:
    return {"loss": round(1.0 / epoch, 4), "accuracy": round(0.5 + epoch / 10, 4),
            "val_loss": round(1.2 / epoch, 4), "val_accuracy": round(0.45 + epoch / 10, 4)}


def train(tmp_path: Path, epochs: int, pause: float = 0.2) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "fake.py"
    script.write_text(FAKE_TRAINING)
    output = tmp_path / "output"
    env = {**os.environ, "PUSHTUNE_OUTPUT": str(output), "PYTHONPATH": str(ROOT),
           "FAKE_EPOCHS": str(epochs), "FAKE_PAUSE": str(pause)}
    env.pop("PUSHTUNE_RESUME", None)
    child = subprocess.Popen([sys.executable, script.name], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return child, output


class Recorder:
    def __init__(self):
        self.calls: list[tuple[int, int | None, dict]] = []
        self.threads: set[str] = set()

    def __call__(self, epoch, epochs, logs):
        self.calls.append((epoch, epochs, logs))
        self.threads.add(threading.current_thread().name)


@pytest.mark.parametrize("interval", [0.5, 0.05, 30.0], ids=["default", "fast-poll", "only-final-read"])
def test_every_epoch_of_a_real_training_is_reported_once_in_order(tmp_path, interval):
    """0.5 s polls over 0.2 s epochs skip files, which history.json fills in; a poll slower than
    the whole training leaves everything to the read that stop() does after the attempt."""
    child, output = train(tmp_path, epochs=8)
    seen = Recorder()
    watcher = EpochWatcher(output, seen, interval=interval).start()
    assert child.wait(timeout=60) == 0, child.stderr.read()
    watcher.stop()

    assert [c[0] for c in seen.calls] == list(range(1, 9))
    assert all(epochs == 8 for _, epochs, _ in seen.calls)
    assert [logs for _, _, logs in seen.calls] == [expected_logs(e) for e in range(1, 9)]
    assert watcher._thread is None
    assert not any(t.name.startswith("epochs:") for t in threading.enumerate())


def test_stop_right_after_the_last_epoch_still_reports_it(tmp_path):
    child, output = train(tmp_path, epochs=3, pause=0.2)
    seen = Recorder()
    with EpochWatcher(output, seen):  # the default 0.5 s poll
        child.wait(timeout=60)
    # the last epoch was written < 0.5 s before the end: only the final read can have seen it
    assert [c[0] for c in seen.calls] == [1, 2, 3]


def test_missing_half_written_and_foreign_files_are_nothing_new(tmp_path):
    output = tmp_path / "output"  # does not exist yet
    seen = Recorder()
    watcher = EpochWatcher(output, seen, interval=0.02).start()
    time.sleep(0.1)
    output.mkdir()
    (output / "progress.json").write_text('{"epoch": 1, "epochs": 3, "lo')  # caught mid-write
    time.sleep(0.1)
    (output / "progress.json").write_text("[1, 2, 3]")  # not the kit's object
    time.sleep(0.1)
    (output / "progress.json").write_text('{"epoch": "two"}')
    time.sleep(0.1)
    assert seen.calls == []
    (output / "progress.json").write_text(json.dumps({"epoch": 1, "epochs": 3, "logs": {"loss": None}}))
    time.sleep(0.2)
    watcher.stop()
    assert seen.calls == [(1, 3, {"loss": None})]


def test_a_failing_callback_never_reaches_the_caller(tmp_path):
    calls = []

    def explode(epoch, epochs, logs):
        calls.append(epoch)
        raise RuntimeError("the terminal went away")

    child, output = train(tmp_path, epochs=3, pause=0.1)
    with EpochWatcher(output, explode, interval=0.05):
        child.wait(timeout=60)
    assert calls == [1, 2, 3]


def test_a_warm_start_does_not_repeat_its_parents_epochs(tmp_path):
    """A warm-started attempt begins with its parent's progress.json and history.json."""
    output = tmp_path / "output"
    output.mkdir()
    parent = {"epochs": 2, "steps": 3, "history": [{"epoch": e, **expected_logs(e)} for e in (1, 2)]}
    (output / "history.json").write_text(json.dumps(parent))
    (output / "progress.json").write_text(json.dumps({"epoch": 2, "epochs": 2, "logs": expected_logs(2)}))
    seen = Recorder()
    with EpochWatcher(output, seen, interval=30):
        history = parent["history"] + [{"epoch": e, **expected_logs(e)} for e in (3, 4)]
        curve = {"epochs": 4, "steps": 3, "history": history}
        (output / "history.json").write_text(json.dumps(curve))
        (output / "progress.json").write_text(json.dumps({"epoch": 4, "epochs": 4, "logs": expected_logs(4)}))
    assert [(e, n) for e, n, _ in seen.calls] == [(3, 4), (4, 4)]
    assert seen.calls[0][2] == expected_logs(3)


def test_formatting():
    logs = {"loss": 0.412, "accuracy": 0.871, "val_loss": 0.50123, "val_accuracy": 0.85}
    assert epoch_line(3, 4, logs) == "  epoch 3/4: loss 0.4120, accuracy 0.8710, val_loss 0.5012, val_accuracy 0.8500"
    assert epoch_text(3, 4, logs, shown_logs(logs, "accuracy"), digits=3, sep=" ") == \
        "epoch 3/4: loss 0.412 accuracy 0.871 val_accuracy 0.850"
    assert shown_logs({"loss": 1, "mae": 2, "val_mae": 3, "val_loss": 4}, "val_mae") == ["loss", "mae", "val_mae"]
    keras_order = {"accuracy": 0.5, "loss": 0.8242, "val_accuracy": 0.5781, "val_loss": 0.6768}
    assert epoch_line(5, 8, keras_order) == \
        "  epoch 5/8: loss 0.8242, accuracy 0.5000, val_loss 0.6768, val_accuracy 0.5781"
    assert epoch_line(2, None, {}) == "  epoch 2"
    assert format_value(None) == "nan" and format_value(2e-6) == "2.000e-06" and format_value(3) == "3.0000"


# --- the commands, as a user and a Jenkins console see them ------------------------------------


def epoch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip().startswith("epoch ")]


def test_pushtune_run_prints_one_plain_line_per_epoch_in_a_pipe(tmp_path, cli):
    model = tmp_path / "fake_ann.py"
    model.write_text(FAKE_TRAINING)
    result = cli("run", model, "--runtime", "local", "--threshold", "0.8", "--max-attempts", "1", timeout=120)
    assert result.returncode == 0, result.stderr
    assert epoch_lines(result.stderr) == [
        "  epoch 1/4: loss 1.0000, accuracy 0.6000, val_loss 1.2000, val_accuracy 0.5500",
        "  epoch 2/4: loss 0.5000, accuracy 0.7000, val_loss 0.6000, val_accuracy 0.6500",
        "  epoch 3/4: loss 0.3333, accuracy 0.8000, val_loss 0.4000, val_accuracy 0.7500",
        "  epoch 4/4: loss 0.2500, accuracy 0.9000, val_loss 0.3000, val_accuracy 0.8500",
    ]
    lines = result.stderr.splitlines()
    start = lines.index("attempt 1/1: as pushed …")
    assert lines[start + 1].startswith("  epoch 1/4")
    assert lines[start + 5].startswith("attempt 1: accuracy 0.9000 (")
    assert "\x1b[" not in result.stderr  # a pipe gets no terminal escapes

    shown = json.loads(cli("show", "1", "--json").stdout)
    attempt = shown["attempts"][0]
    assert [e["epoch"] for e in attempt["curve"]["history"]] == [1, 2, 3, 4]
    assert attempt["curve"]["epochs"] == 4
    assert {"reason", "warm_from", "warm_epoch"} <= set(attempt)


def test_pushtune_train_prints_the_epochs_in_the_jenkins_console(tmp_path, cli):
    model = tmp_path / "fake_ann.py"  # pushtune's environment never reaches a script: 3 epochs in its source
    model.write_text(FAKE_TRAINING.replace('"FAKE_EPOCHS", "4"', '"FAKE_EPOCHS", "3"'))
    started = cli("start", model, "--runtime", "local", "--threshold", "0.95", "--max-attempts", "2")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    trained = cli("train", run_id, timeout=120)
    assert trained.returncode == 3, trained.stderr
    lines = trained.stdout.splitlines()
    assert lines[0] == f"run {run_id} attempt 1/2: as pushed …"
    assert epoch_lines(trained.stdout) == [
        "  epoch 1/3: loss 1.0000, accuracy 0.6000, val_loss 1.2000, val_accuracy 0.5500",
        "  epoch 2/3: loss 0.5000, accuracy 0.7000, val_loss 0.6000, val_accuracy 0.6500",
        "  epoch 3/3: loss 0.3333, accuracy 0.8000, val_loss 0.4000, val_accuracy 0.7500",
    ]
    assert lines[-1] == f"run {run_id} attempt 1 (as pushed): accuracy 0.8000, threshold 0.95: below threshold"
