"""The tuning suite: ordinary under-performing models, each with one known fix.

Each case is a training script in this folder that follows pushtune's contract (hyperparameters
from `kit.params(...)`, whose literal defaults are the bad values as pushed; the metric through
`kit.report`). `fix` is the parameter change that makes it pass; `keras_tuner` names the
`kt_<case>.py` module that is the same model written as a keras-tuner hypermodel, or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Case:
    name: str
    script: str  # file name in benchmarks/suite/
    fault: str  # what is wrong, in a few words
    metric: str
    mode: str  # max or min
    threshold: float
    needs_faces: bool  # reads the ORL faces from PUSHTUNE_DATA
    fix: dict  # the known fix, as kit.params values
    keras_tuner: str | None = None  # hypermodel module in benchmarks/suite/, or None

    @property
    def path(self) -> Path:
        return HERE / self.script


CASES = [
    Case("diverging_rate", "diverging_rate.py", "SGD learning rate 8.0 diverges",
         "accuracy", "max", 0.9, False, {"learning_rate": 0.8}, "kt_diverging_rate"),
    Case("few_epochs_faces", "few_epochs_faces.py", "faces CNN trained 2 epochs",
         "accuracy", "max", 0.9, True, {"epochs": 16}, "kt_few_epochs_faces"),
    Case("too_narrow", "too_narrow.py", "one hidden Dense(3)",
         "accuracy", "max", 0.9, False, {"dense_width": 16}, "kt_too_narrow"),
    Case("overfitting", "overfitting.py", "wide net learns 30% noisy labels",
         "accuracy", "max", 0.78, False, {"dropout": 0.3}, "kt_overfitting"),
    Case("strong_reg_logistic", "strong_reg_logistic.py", "LogisticRegression C=1e-4",
         "accuracy", "max", 0.95, False, {"C": 1.0}),
    Case("strong_reg_ridge", "strong_reg_ridge.py", "Ridge alpha=100 (r2)",
         "r2", "max", 0.45, False, {"alpha": 0.1}),
    Case("weak_reg_ridge", "weak_reg_ridge.py", "Ridge alpha=0.1 on 66 features, 120 rows (r2)",
         "r2", "max", 0.3, False, {"alpha": 100.0}),
    Case("no_convergence", "no_convergence.py", "LogisticRegression max_iter=5, unscaled",
         "accuracy", "max", 0.9, False, {"max_iter": 50}),
    Case("bad_batch_size", "bad_batch_size.py", "batch = whole training set (1 step/epoch)",
         "accuracy", "max", 0.9, False, {"batch_size": 32}, "kt_bad_batch_size"),
]

BY_NAME = {case.name: case for case in CASES}
