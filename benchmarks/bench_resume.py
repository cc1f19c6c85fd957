"""Kill-and-resume reliability: a Keras training (the kit's callbacks) is SIGKILLed at a random
moment and restarted with PUSHTUNE_RESUME=1 by the local runtime. How many trainings resumed
and finished, and how much work each kill lost, in epochs.

What was lost is read from two records that do not share a file: the epochs the training itself
logged as completed before the kill (printed before the kit checkpoints them) and the epoch
Keras starts the resumed `fit` at (restored from the checkpoint by BackupAndRestore)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import statistics
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from jobs.train.runtime import AttemptSpec, LocalRuntime

TRIALS = 20
EPOCHS = 12
BATCH_SECONDS = 0.03  # 8 batches an epoch: about 0.25 s of training per epoch
SCRIPT = textwrap.dedent(f"""\
    import time
    import numpy as np
    import keras
    from jobs import kit

    class Logged(keras.callbacks.Callback):
        # The training's own record, ahead of the kit's callbacks: the epoch each fit begins at
        # (Keras's counter, which a resume restores from the checkpoint) and each epoch completed.
        def on_train_begin(self, logs=None):
            self.begun = False

        def on_epoch_begin(self, epoch, logs=None):
            if not self.begun:
                self.begun = True
                print(f"fit begins at epoch {{epoch}}", flush=True)

        def on_epoch_end(self, epoch, logs=None):
            print(f"epoch {{epoch + 1}} completed", flush=True)

    class Slow(keras.callbacks.Callback):  # the time goes into training, as in a real epoch
        def on_train_batch_end(self, batch, logs=None):
            time.sleep({BATCH_SECONDS})

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 16)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs={EPOCHS}, batch_size=64, verbose=0,
                        callbacks=[Logged(), *kit.callbacks(), Slow()])
    kit.report(accuracy=float(model.evaluate(x, y, verbose=0)[1]), epochs_run=len(history.epoch))
""")
FIT_BEGINS = re.compile(r"^fit begins at epoch (\d+)$", re.M)
COMPLETED = re.compile(r"^epoch (\d+) completed$", re.M)


def lives(log: str) -> list[tuple[int, int]]:
    """(epoch the fit began at, epochs completed) of each life of the training, from its log."""
    parts = FIT_BEGINS.split(log)  # [before, epoch, text of that life, epoch, text, …]
    return [(int(start), max(map(int, COMPLETED.findall(text)), default=int(start)))
            for start, text in zip(parts[1::2], parts[2::2], strict=True)]


def trial(seed: int) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "attempt-1"
        workdir.mkdir()
        (workdir / "model.py").write_text(SCRIPT)
        spec = AttemptSpec(run_id=1, attempt=1, kind="ann", model_name="m.py", workdir=workdir,
                           data_dir=None, cache_dir=Path(tmp) / "cache", params={}, max_restarts=3)

        def killer() -> None:  # once an epoch is completed, kill the training at a random moment
            while not (spec.log_path.exists() and COMPLETED.search(spec.log_path.read_text())):
                time.sleep(0.02)
            time.sleep(rng.uniform(0, EPOCHS * 8 * BATCH_SECONDS * 0.6))
            pid = json.loads((workdir / "process.json").read_text())["pid"]
            os.kill(pid, signal.SIGKILL)

        restarts = []
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        outcome = LocalRuntime().run(spec, on_restart=restarts.append)
        thread.join()
        metrics = json.loads((spec.output_dir / "metrics.json").read_text()) if outcome.exit_code == 0 else {}
        log = spec.log_path.read_text()
        (_, completed), *resumed = lives(log) or [(0, 0)]
        resumed_at = resumed[0][0] if resumed else None
        finished = outcome.exit_code == 0 and bool(metrics)
        last_line = ([line for line in log.splitlines() if line.strip()] or ["empty log"])[-1]
        return {
            "finished": finished,
            "why_not": None if finished else f"{outcome.error or f'exit {outcome.exit_code}'}: {last_line[:160]}",
            "restarted": len(restarts),
            "completed": completed,
            "resumed_at": resumed_at,
            "lost": completed - resumed_at if resumed_at is not None else None,
            "epochs_after_resume": metrics.get("epochs_run"),
        }


def main() -> str:
    results = [trial(seed) for seed in range(TRIALS)]
    resumed = [r for r in results if r["restarted"] and r["finished"] and (r["resumed_at"] or 0) > 0]
    lost = [r["lost"] for r in results if r["lost"] is not None]
    rows = "\n".join(
        f"| {i + 1} | {r['completed']} | {r['resumed_at']} | {r['lost']} | {r['epochs_after_resume']} | "
        f"{'yes' if r['finished'] else 'no (' + r['why_not'].replace('|', '/') + ')'} |"
        for i, r in enumerate(results))
    return textwrap.dedent(f"""\
        ## Kill and resume

        {TRIALS} trials: a Keras training of {EPOCHS} epochs with `kit.callbacks()` is SIGKILLed at a
        random moment after its first completed epoch; the local runtime restarts it with
        `PUSHTUNE_RESUME=1`. "completed" is the epochs the training logged as completed before the
        kill (a callback ahead of the kit's prints them, before they are checkpointed); "resumed at"
        is the epoch Keras began the resumed `fit` at, restored from the checkpoint; "lost" is the
        completed epochs the resumed training had to redo. The epoch in progress at the kill is
        always redone and is not counted.

        | metric | value |
        | --- | --- |
        | trainings that resumed from a checkpoint (epoch > 0) and finished | {len(resumed)}/{TRIALS} |
        | completed epochs lost per kill | mean {statistics.mean(lost):.2f}, max {max(lost)} (of {len(lost)} kills) |

        | trial | completed before the kill | resumed at | lost | epochs run after resume | finished |
        | ---: | ---: | ---: | ---: | ---: | --- |
        """) + rows + "\n"
