"""scikit-learn: the fits the script calls (the estimator, its parameters, whether it converged,
its score on the data it was fitted on), the metrics it computes (`model.score(X, y)`,
`accuracy_score(…)`), and the last fitted model, saved as model.joblib when the script saves none.

Estimator classes are defined after sklearn.base is imported (sklearn.linear_model, …, and the
script's own subclasses import it), so a `BaseEstimator.__init_subclass__` chained in front of
sklearn's wraps the `fit` and `score` each new class defines. Only calls the script makes itself
count: not the fits a Pipeline, GridSearchCV or cross_val_score makes inside, nor a subclass's
`super().fit()`, nor the score pushtune asks for.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from jobs.autolog import Capture, Trained, lines, warn
from jobs.autolog.for_pickle import is_model
from jobs.autolog.to_onnx import sample_of

# Scoring functions of sklearn.metrics whose scalar result is a metric of the script's, named as
# lines.canonical reads the function's words, or as RENAMED says where that reads wrong.
METRIC_FUNCTIONS = (
    "accuracy_score", "balanced_accuracy_score", "f1_score", "fbeta_score", "precision_score",
    "recall_score", "roc_auc_score", "log_loss", "r2_score", "mean_squared_error", "mean_absolute_error",
    "root_mean_squared_error", "median_absolute_error", "explained_variance_score", "matthews_corrcoef",
    "cohen_kappa_score", "jaccard_score", "hamming_loss", "zero_one_loss",
)

RENAMED = {"average_precision_score": "average_precision", "mean_absolute_percentage_error": "mape",
           "top_k_accuracy_score": "top_k_accuracy", "brier_score_loss": "brier_score"}
SCORE_ROWS_LIMIT = 100_000  # above it the training score costs more than it tells

_calls = threading.local()  # `inside`: a patched call runs on this thread; what it calls is its own
_convergence_warnings = [0]  # ConvergenceWarnings shown so far


def patch(capture: Capture, module: ModuleType) -> None:
    if module.__name__ == "sklearn.metrics":
        for name in (*METRIC_FUNCTIONS, *RENAMED):
            if callable(getattr(module, name, None)):
                wrapper = _metric_function(capture, getattr(module, name), name)
                wrapper.__module__, wrapper.__qualname__ = module.__name__, name  # pickled by reference
                setattr(module, name, wrapper)
    elif module.__name__ == "sklearn.base":
        _patch_estimators(capture, module)


def _patch_estimators(capture: Capture, base: ModuleType) -> None:
    estimator = base.BaseEstimator
    own = estimator.__dict__.get("__init_subclass__")

    def __init_subclass__(cls, **kwargs):
        if own is not None:
            own.__get__(None, cls)(**kwargs)
        else:
            super(estimator, cls).__init_subclass__(**kwargs)
        try:
            _wrap_methods(capture, base, cls)
        except Exception as exc:
            warn(f"cannot watch {cls.__name__}: {type(exc).__name__}: {exc}")

    estimator.__init_subclass__ = classmethod(__init_subclass__)
    for mixin in (base.ClassifierMixin, base.RegressorMixin):
        _wrap_methods(capture, base, mixin)
    shown = warnings._showwarnmsg  # type: ignore[attr-defined]  # what warn() calls to show one

    @functools.wraps(shown)
    def _showwarnmsg(message):
        if getattr(message.category, "__name__", None) == "ConvergenceWarning":
            _convergence_warnings[0] += 1
        return shown(message)

    warnings._showwarnmsg = _showwarnmsg  # type: ignore[attr-defined]


def _wrap_methods(capture: Capture, base: ModuleType, cls: type) -> None:
    if cls.__module__ == "__main__":  # the script's own class stays as written (cloudpickle copies
        return  # it into joblib's workers); the fit it inherits, or calls by super(), is watched
    for name, wrapper in (("fit", _fit_method), ("score", _score_method)):
        method = cls.__dict__.get(name)
        if inspect.isfunction(method):
            setattr(cls, name, wrapper(capture, base, method))
        elif inspect.isfunction(getattr(method, "fn", None)):  # sklearn's @available_if (Pipeline.score)
            method.fn = wrapper(capture, base, method.fn)  # type: ignore[union-attr]


def _script_call(capture: Capture) -> FrameType | None:
    """The script's frame when the patched function was called by the script itself, outside
    any other patched call."""
    try:
        return None if getattr(_calls, "inside", False) else capture.script_frame(3)
    except Exception:
        return None


def _call(function: Callable, *args: Any, **kwargs: Any) -> Any:
    inside = getattr(_calls, "inside", False)
    _calls.inside = True
    try:
        return function(*args, **kwargs)
    finally:
        _calls.inside = inside


def _fit_method(capture: Capture, base: ModuleType, fit: Callable) -> Callable:
    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        frame = _script_call(capture)
        warned = _convergence_warnings[0]
        result = _call(fit, self, *args, **kwargs)
        if frame is not None:
            try:
                _record_fit(capture, base, self, args, kwargs, frame.f_lineno, _convergence_warnings[0] > warned)
            except Exception as exc:
                warn(f"could not record {type(self).__name__}.fit(): {type(exc).__name__}: {exc}")
        return result

    return wrapper


def _score_method(capture: Capture, base: ModuleType, score: Callable) -> Callable:
    @functools.wraps(score)
    def wrapper(self, *args, **kwargs):
        frame = _script_call(capture)
        result = _call(score, self, *args, **kwargs)
        if frame is not None:
            _record_metric(capture, _score_name(base, self), result, f"{type(self).__name__}.score()", frame)
        return result

    return wrapper


def _metric_function(capture: Capture, function: Callable, name: str) -> Callable:
    metric = RENAMED.get(name) or lines.canonical(name.replace("_", " "))[0]

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        frame = _script_call(capture)
        result = _call(function, *args, **kwargs)
        if frame is not None:
            _record_metric(capture, metric, result, f"{name}()", frame)
        return result

    return wrapper


def _record_metric(capture: Capture, name: str, value: Any, source: str, frame: FrameType) -> None:
    try:
        import numpy as np  # scikit-learn's own dependency: here only once it is imported

        if np.ndim(value) == 0 and not isinstance(value, (str, bool)):
            capture.metric(name, value, source, frame.f_lineno)
    except Exception as exc:
        warn(f"could not record {source}: {type(exc).__name__}: {exc}")


def _record_fit(capture: Capture, base: ModuleType, estimator: Any, args: tuple, kwargs: dict,
                line: int, warned: bool) -> None:
    if not is_model(estimator):  # a scaler or an encoder fitted on its own: not the model
        return
    name, model = type(estimator).__name__, _innermost(estimator)
    params = {key: value for key, value in model.get_params(deep=False).items() if _plain(value)}
    n_iter = _count(getattr(model, "n_iter_", None))
    max_iter = _count(params.get("max_iter"))
    max_iter = max_iter if max_iter and max_iter > 0 else None  # SVC's -1: no limit
    converged = (n_iter < max_iter) if n_iter is not None and max_iter is not None else None
    capture.framework("sklearn")
    capture.training("sklearn", estimator=name, model=type(model).__name__, params=params, n_iter=n_iter,
                     max_iter=max_iter, converged=False if warned else converged,
                     convergence_warning=warned, line=line)
    capture.note("sklearn", {"estimator": name, **_train_score(base, estimator, args, kwargs)})

    def save(output: Path) -> Path:
        path = output / "model.joblib"
        import joblib  # scikit-learn's own dependency

        joblib.dump(estimator, path)
        return path

    capture.trained_model(Trained("sklearn", f"the last fitted scikit-learn estimator ({name})", line,
                                  save, model=estimator,
                                  sample=sample_of(args[0] if args else kwargs.get("X"))))


def _train_score(base: ModuleType, estimator: Any, args: tuple, kwargs: dict) -> dict:
    """The estimator's own score on the data it was just fitted on."""
    X = args[0] if args else kwargs.get("X")
    y = args[1] if len(args) > 1 else kwargs.get("y")
    if X is None or y is None:
        return {"train_score": None, "skipped": "fit without y"}
    shape = getattr(X, "shape", None)
    rows = shape[0] if shape else len(X)
    if rows > SCORE_ROWS_LIMIT:
        return {"train_score": None, "skipped": f"{rows} rows, more than {SCORE_ROWS_LIMIT}", "rows": rows}
    try:
        value = float(_call(estimator.score, X, y))
    except Exception as exc:
        return {"train_score": None, "skipped": f"score() raised {type(exc).__name__}"}
    return {"train_score": value, "score_name": _score_name(base, estimator), "rows": rows}


def _score_name(base: ModuleType, estimator: Any) -> str:
    scoring = getattr(estimator, "scoring", None)  # GridSearchCV(scoring="f1_macro") scores with it
    if isinstance(scoring, str):
        return scoring
    if base.is_classifier(estimator):
        return "accuracy"
    return "r2" if base.is_regressor(estimator) else "score"


def _innermost(estimator: Any) -> Any:
    """The model a search or a pipeline fitted: GridSearchCV's best_estimator_, a Pipeline's last step."""
    for _ in range(8):
        steps = getattr(estimator, "steps", None)
        inner = getattr(estimator, "best_estimator_", None) or (
            steps[-1][1] if isinstance(steps, list) and steps and isinstance(steps[-1], tuple) else None)
        if not hasattr(inner, "get_params"):
            break
        estimator = inner
    return estimator


def _plain(value: Any) -> bool:
    """A parameter value autolog.json keeps: a number, a string, a bool or None."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (bool, int, str))


def _count(value: Any) -> int | None:
    """An iteration count as an int: n_iter_ is an array for some estimators (the largest counts)."""
    try:
        if value is None or isinstance(value, bool):
            return None
        # numpy only once the script's own libraries are in (the launcher imports none first)
        import numpy as np

        return int(np.max(value))
    except (TypeError, ValueError):
        return None
