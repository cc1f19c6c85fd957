"""Keras 3 (`tf.keras` included): the curve, the checkpoint, the metric and the model of a
script that only calls `fit`, `evaluate` and `save`.

The first `fit` the script calls gets the kit's callbacks (`kit.callbacks()`: BackupAndRestore
in <output>/checkpoints and the per-epoch history.json/progress.json), so a killed attempt
resumes and an epochs-only change starts warm, as for scripts written for pushtune. Later fits
of the same script (fine-tuning after a frozen first stage) are recorded but not checkpointed: one
BackupAndRestore directory can only hold one training. A script that passes the kit's callbacks
itself, or its own BackupAndRestore, keeps its own.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

from jobs import kit
from jobs.autolog import Capture, Trained, warn
from jobs.autolog.to_onnx import sample_of


def patch(capture: Capture, keras: ModuleType) -> None:
    model_class = keras.Model
    state = {"fits": 0, "inside": 0}  # fits the script called; depth of our own patched calls
    fit, evaluate, save = model_class.fit, model_class.evaluate, model_class.save
    fit_signature = inspect.signature(fit)

    @functools.wraps(fit)
    def patched_fit(self, *args, **kwargs):
        frame = capture.script_frame()
        if frame is None or state["inside"]:
            return fit(self, *args, **kwargs)
        line = frame.f_lineno
        state["fits"] += 1
        call = (self, *args), kwargs
        given: dict = {}
        try:
            bound = fit_signature.bind(self, *args, **kwargs)
            given = dict(bound.arguments)
            bound.arguments["callbacks"] = _with_capture(capture, keras, given.get("callbacks"), state["fits"])
            call = bound.args, bound.kwargs
        except Exception as exc:  # fit itself will say what is wrong with the arguments
            warn(f"fit is not instrumented: {type(exc).__name__}: {exc}")
        state["inside"] += 1
        try:
            history = fit(*call[0], **call[1])
        finally:
            state["inside"] -= 1
        _record_fit(capture, keras, self, given, history, line)
        return history

    @functools.wraps(evaluate)
    def patched_evaluate(self, *args, **kwargs):
        frame = capture.script_frame()
        result = evaluate(self, *args, **kwargs)
        if frame is not None and not state["inside"]:
            try:
                for name, value in _evaluated(self, result).items():
                    capture.metric(_metric_name(name), value, "model.evaluate()", frame.f_lineno)
            except Exception as exc:
                warn(f"could not read model.evaluate()'s result: {type(exc).__name__}: {exc}")
        return result

    @functools.wraps(save)
    def patched_save(self, filepath, *args, **kwargs):
        frame = capture.script_frame()
        result = save(self, filepath, *args, **kwargs)
        if frame is not None:
            capture.saved(filepath, "model.save()", model=True, line=frame.f_lineno)
        return result

    model_class.fit, model_class.evaluate, model_class.save = patched_fit, patched_evaluate, patched_save


def _with_capture(capture: Capture, keras: ModuleType, callbacks: Any, fit_number: int) -> list:
    """The script's callbacks, plus the kit's on the first fit unless the script keeps its own
    curve or checkpoint."""
    own = list(callbacks or [])
    if capture.kit_used or fit_number > 1:
        return own

    keeps_own = any(isinstance(cb, keras.callbacks.BackupAndRestore) or type(cb).__module__ == kit.__name__
                    for cb in own)
    return own if keeps_own else own + kit.callbacks()


def _record_fit(capture: Capture, keras: ModuleType, model: Any, given: dict, history: Any, line: int) -> None:
    try:
        params = getattr(history, "params", None) or {}
        optimizer = getattr(model, "optimizer", None)
        dense = [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        capture.framework("keras")
        capture.training(
            "keras",
            epochs=params.get("epochs", given.get("epochs", 1)),
            batch_size=given.get("batch_size") or 32,  # Keras' default
            steps_per_epoch=params.get("steps"),
            validation_split=given.get("validation_split", 0.0),
            validation_data=given.get("validation_data") is not None,
            optimizer=type(optimizer).__name__ if optimizer is not None else None,
            learning_rate=_learning_rate(optimizer),
            hidden_dense_units=dense[:-1],
            fits=capture.data["training"].get("keras", {}).get("fits", 0) + 1,
        )

        def save(output: Path) -> Path:
            path = output / "model.keras"
            model.save(path)
            return path

        capture.trained_model(Trained("keras", f"the last fitted Keras model ({type(model).__name__})", line, save,
                                      model=model, sample=sample_of(given.get("x"))))
    except Exception as exc:
        warn(f"could not record the fit: {type(exc).__name__}: {exc}")


def _learning_rate(optimizer: Any) -> float | None:
    try:
        return float(optimizer.learning_rate)
    except Exception:  # a schedule, or no optimizer
        return None


def _evaluated(model: Any, result: Any) -> dict:
    """model.evaluate()'s result by metric name, whatever form the script asked for."""
    if isinstance(result, dict):
        return result
    values = model.get_metrics_result()  # the metrics of the evaluation that just ran
    if isinstance(values, dict) and values:
        return values
    return {"loss": result[0] if isinstance(result, (list, tuple)) else result}


def _metric_name(name: str) -> str:
    """Keras' metric names as the run's metric names them: acc, categorical_accuracy, … are accuracy."""
    return "accuracy" if name == "acc" or name.endswith("_accuracy") else name
