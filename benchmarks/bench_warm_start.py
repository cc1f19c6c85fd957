"""Warm starts: what an epoch doubling costs when it continues from its parent's checkpoint,
against the same attempt trained from scratch.

The suite's faces CNN (benchmarks/suite/few_epochs_faces.py), as pushed with E epochs, then one
doubling to 2E through the loop (warm-started), then 2E epochs from scratch. Both are the same
model: their accuracies must be equal.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from jobs.loop import RunOptions, run_model
from jobs.store.run_store import RunStore
from jobs.train.runtime import LocalRuntime
from jobs.tune import strategies, tweaks

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "suite" / "few_epochs_faces.py"
SIZES = [(32, 8), (32, 16), (64, 16), (64, 32)]  # (image side in pixels, epochs before doubling)
REPEATS = 2  # the faster of two runs of each, on a shared machine


class DoubleEpochs:
    """Always the one move measured here: double the epochs of the last attempt."""

    name = "double-epochs"

    def next_candidate(self, history: strategies.History) -> strategies.Candidate | None:
        last = history.attempts[-1]
        result = tweaks.apply_tweak("double_epochs", last["source"], last["params"])
        return result and strategies.Candidate(result.source, result.params, "double_epochs",
                                               result.description, [result.description], last["n"])


strategies.STRATEGIES.setdefault(DoubleEpochs.name, DoubleEpochs)


def attempts(params: dict, count: int) -> list[dict]:
    faces = os.environ.get("PUSHTUNE_DATA") or str(HERE.parent.parent / "shared" / "data" / "att_faces")
    with tempfile.TemporaryDirectory() as home:
        os.environ["PUSHTUNE_HOME"] = home
        store = RunStore.open(Path(home) / "pushtune.db")
        options = RunOptions(threshold=1.01, max_attempts=count, strategy=DoubleEpochs.name,
                             data=faces, params=params, runtime="local")
        summary = run_model(SCRIPT, options, LocalRuntime(), store)
        return store.attempts(summary["run_id"])


def main() -> str:
    rows = []
    for side, epochs in SIZES:
        warm, scratch = [], []
        for _ in range(REPEATS):
            _, doubled = attempts({"epochs": epochs, "image_size": side}, 2)
            assert doubled["warm_epoch"] == epochs, "the doubling was not warm-started"
            (alone,) = attempts({"epochs": 2 * epochs, "image_size": side}, 1)
            warm.append(doubled)
            scratch.append(alone)
        w = min(warm, key=lambda a: a["seconds"])
        s = min(scratch, key=lambda a: a["seconds"])
        same = "yes" if all(a["metric_value"] == s["metric_value"] for a in warm + scratch) else "**no**"
        rows.append(f"| {side}×{side} | {epochs} → {2 * epochs} | {w['seconds']:.1f} | {s['seconds']:.1f} "
                    f"| **{w['seconds'] / s['seconds']:.2f}×** | {w['metric_value']:.4f} / {s['metric_value']:.4f} "
                    f"| {same} |")
    return "\n".join([
        "## warm starts",
        "",
        "The suite's faces CNN (`few_epochs_faces.py`, `image_size` and `epochs` set as parameters):",
        "an epoch doubling warm-started from its parent's checkpoint against the same attempt",
        f"from scratch, local runtime, the faster of {REPEATS} runs each. Seconds are whole attempts,",
        "including the Python start-up and TensorFlow import (about 4.5 s) that both pay.",
        "",
        "| images | epochs | warm-started (s) | from scratch (s) | warm ÷ scratch "
        "| accuracy warm / scratch | same model |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ])
