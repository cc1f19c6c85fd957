"""Kill-and-resume reliability: a Keras training (the kit's callbacks) is SIGKILLed at a random
moment and restarted with PUSHTUNE_RESUME=1 by the local runtime. How many trainings resumed
and finished, and how much work each kill lost, in epochs."""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from jobs.runtime import AttemptSpec, LocalRuntime

TRIALS = 20
EPOCHS = 12
SCRIPT = textwrap.dedent(f"""\
    import time
    import numpy as np
    import keras
    from jobs import kit

    class Slow(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(0.25)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 16)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs={EPOCHS}, batch_size=64, verbose=0, callbacks=[*kit.callbacks(), Slow()])
    kit.report(accuracy=float(model.evaluate(x, y, verbose=0)[1]), epochs_run=len(history.epoch))
""")


def _epoch(output: Path) -> int:
    try:
        return json.loads((output / "progress.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def trial(seed: int) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "attempt-1"
        workdir.mkdir()
        (workdir / "model.py").write_text(SCRIPT)
        spec = AttemptSpec(run_id=1, attempt=1, kind="ann", model_name="m.py", workdir=workdir,
                           data_dir=None, cache_dir=Path(tmp) / "cache", params={}, max_restarts=3)
        killed_at = {}

        def killer() -> None:  # once training has started, kill it at a random moment
            while _epoch(spec.output_dir) < 1:
                time.sleep(0.02)
            time.sleep(rng.uniform(0, EPOCHS * 0.25 * 0.6))
            killed_at["epoch"] = _epoch(spec.output_dir)
            pid = json.loads((workdir / "process.json").read_text())["pid"]
            os.kill(pid, signal.SIGKILL)

        restarts = []
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        outcome = LocalRuntime().run(spec, on_restart=restarts.append)
        thread.join()
        metrics = json.loads((spec.output_dir / "metrics.json").read_text()) if outcome.exit_code == 0 else {}
        resumed_from = restarts[0].resumed_epoch if restarts else None
        return {
            "finished": outcome.exit_code == 0 and bool(metrics),
            "restarted": len(restarts),
            "killed_at": killed_at.get("epoch"),
            "resumed_from": resumed_from,
            "lost": (killed_at["epoch"] - (resumed_from or 0)) if restarts else None,
            "epochs_after_resume": metrics.get("epochs_run"),
        }


def main() -> str:
    results = [trial(seed) for seed in range(TRIALS)]
    resumed = [r for r in results if r["restarted"] and r["finished"] and (r["resumed_from"] or 0) > 0]
    lost = [r["lost"] for r in results if r["lost"] is not None]
    rows = "\n".join(
        f"| {i + 1} | {r['killed_at']} | {r['resumed_from']} | {r['lost']} | {r['epochs_after_resume']} | "
        f"{'yes' if r['finished'] else 'no'} |" for i, r in enumerate(results))
    return textwrap.dedent(f"""\
        ## Kill and resume

        {TRIALS} trials: a Keras training of {EPOCHS} epochs with `kit.callbacks()` is SIGKILLed at a
        random moment after its first epoch; the local runtime restarts it with `PUSHTUNE_RESUME=1`.
        "lost" is the number of completed epochs (per `progress.json` at the kill) that the resumed
        training had to redo; the epoch in progress at the kill is always redone.

        | metric | value |
        | --- | --- |
        | trainings that resumed from a checkpoint (epoch > 0) and finished | {len(resumed)}/{TRIALS} |
        | completed epochs lost per kill | mean {statistics.mean(lost):.2f}, max {max(lost)} |

        | trial | killed after epoch | resumed from | lost | epochs run after resume | finished |
        | ---: | ---: | ---: | ---: | ---: | --- |
        """) + rows + "\n"
