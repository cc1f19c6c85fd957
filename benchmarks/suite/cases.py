"""The tuning suite: ordinary under-performing models, each with one known fix.

Each case is a training script in this folder that follows pushtune's contract (hyperparameters
from `kit.params(...)`, whose literal defaults are the bad values as pushed; the metric through
`kit.report`). `fix` is the parameter change that makes it pass; `keras_tuner` names the
`kt_<case>.py` module that is the same model written as a keras-tuner hypermodel, or None.

The unmodified cases (`plain_*.py`, `unmodified=True`) are scripts as people write them, run
through the launcher's capture: no pushtune import, the metric printed in their own words, the
model saved under their own name or not at all. Their known fix is a source edit, `fix_edit`:
the exact text to replace, once, and its replacement.
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
    fix_edit: tuple[str, str] | None = None  # the known fix as (text in the script, its replacement)
    unmodified: bool = False  # written without pushtune (no kit)

    @property
    def path(self) -> Path:
        return HERE / self.script

    @property
    def fix_text(self) -> str:
        if self.fix_edit:
            return "`{}` → `{}`".format(*self.fix_edit)
        return ", ".join(f"{name}={value}" for name, value in self.fix.items())

    def fixed_source(self) -> str:
        """The script with `fix_edit` applied."""
        old, new = self.fix_edit
        source = self.path.read_text()
        if source.count(old) != 1:
            raise ValueError(f"{self.script}: {old!r} occurs {source.count(old)} times, not once")
        return source.replace(old, new)


def plain(name: str, fault: str, threshold: float, fix_edit: tuple[str, str]) -> Case:
    """An unmodified case: plain_<name>.py, gated on accuracy."""
    return Case(f"plain_{name}", f"plain_{name}.py", fault, "accuracy", "max", threshold, False, {},
                fix_edit=fix_edit, unmodified=True)


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
    plain("too_narrow", "Keras Sequential, one hidden Dense(3)", 0.9, ("Dense(3,", "Dense(16,")),
    plain("diverging_functional", "Keras functional API, SGD learning rate 8.0", 0.9,
          ("SGD(learning_rate=8.0)", "SGD(learning_rate=0.8)")),
    plain("few_epochs", "Keras Sequential, fit for 1 epoch", 0.9, ("epochs=1,", "epochs=8,")),
    plain("torch_slow_sgd", "PyTorch DataLoader loop, SGD lr 0.001 for 6 epochs", 0.9,
          ("lr=0.001,", "lr=0.01,")),
    plain("torch_diverging", "PyTorch full-batch loop, learning rate 5.0", 0.9, ("LR = 5.0", "LR = 0.5")),
    plain("unconverged_logistic", "LogisticRegression max_iter=5, unscaled", 0.95,
          ("max_iter=5)", "max_iter=100)")),
    plain("svc_strong_reg", "SVC C=1e-4", 0.95, ("C=1e-4)", "C=1.0)")),
]

BY_NAME = {case.name: case for case in CASES}
