"""What went wrong with an attempt, read from the evidence its training left behind.

`diagnose` names the problem an experienced engineer would see in a training curve (the kit's
history.json: loss, metric and their `val_` twins per epoch), in what the capture saw of a
scikit-learn fit (autolog.json, as `attempt["capture"]`) or in the log, and the moves
(tweak names) that fix it, best first. `judge` says whether a move helped, judged against the
evaluation's noise (a difference smaller than one test example is no difference) and, for more
epochs, by the training loss too. Everything here is a pure function of recorded data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from jobs.autolog import lines
from jobs.tune.objective import Objective, scored, usable

# What to try when the evidence names no problem (or for scripts without a curve), per
# framework (and for the regression kind), best first: see `moves_for`.
FALLBACK_MOVES: dict[str, tuple[str, ...]] = {
    "keras": (
        "double_epochs", "widen_dense", "add_dense", "divide_learning_rate_by_10",
        "double_learning_rate", "halve_learning_rate", "batch_size_32", "halve_batch_size",
        "add_dropout",
    ),
    # A hand-written PyTorch loop's usual trouble is its optimizer: plain SGD too slow for the
    # epochs it gets (Adam; a rate ×10). use_adam and use_sgd skip scripts already using theirs.
    "pytorch": (
        "use_adam", "double_epochs", "multiply_learning_rate_by_10", "widen_dense", "add_dense",
        "divide_learning_rate_by_10", "use_sgd", "double_learning_rate", "halve_learning_rate",
    ),
    "regression": (
        "c_times_10", "c_div_10", "alpha_div_10", "alpha_times_10", "max_iter_times_10",
    ),
}

DIVERGED_MOVES = ("divide_learning_rate_by_10",)
UNDER_TRAINED_MOVES = ("double_epochs",)
FEW_STEPS_MOVES = ("batch_size_32", "halve_batch_size")
UNDER_CAPACITY_MOVES = ("widen_dense", "add_dense")
OVER_FITTING_MOVES = ("add_dropout",)
NO_CONVERGENCE_MOVES = ("max_iter_times_10", "double_max_iter")
REGULARISE_MOVES = ("c_div_10", "alpha_times_10")  # an estimator over-fitting: a smaller C, a larger alpha
LOOSEN_MOVES = ("c_times_10", "alpha_div_10")  # an estimator under-fitting: more capacity

OVERFIT_GAP = 0.10  # train metric this far above validation (metrics on a 0..1 scale)
STILL_IMPROVING = 0.005  # last-epoch gain of the metric that counts as "still rising"
LOSS_STILL_FALLING = 0.02  # relative drop of the loss in the last epoch
FEW_STEPS = 4  # optimizer steps per epoch at or below which the batch size is the bottleneck
STUCK_EPOCHS, STUCK_CHANGE = 3, 1e-3  # a loss that moved less than this over these epochs is frozen
MIN_EPOCHS, MIN_STEPS = 4, 200  # before either, a falling loss means "not trained yet", not "stuck"


@dataclass(frozen=True)
class Diagnosis:
    problem: str  # diverged, under-trained, under-capacity, over-fitting, no convergence, …
    evidence: str  # one line: what in the curve or log shows it
    moves: tuple[str, ...]  # tweak names that address it, best first


def moves_for(kind: str, framework: str | None = None) -> tuple[str, ...]:
    """The moves to try for a (kind, framework) profile when the evidence names none: the
    regression kind's, else the framework's, else Keras' (a framework without a list of its own)."""
    if kind == "regression":
        return FALLBACK_MOVES["regression"]
    return FALLBACK_MOVES.get(framework or "keras", FALLBACK_MOVES["keras"])


def _series(history: list[dict], key: str) -> list[float | None] | None:
    if not history or not any(key in epoch for epoch in history):
        return None
    return [epoch.get(key) for epoch in history]


def _finite(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _gain(values: list[float], objective: Objective) -> float:
    """How much the last epoch improved on the best epoch before it (positive = better)."""
    before = values[0]
    for value in values[1:-1]:
        if objective.better_than(value, before):
            before = value
    return objective.improvement(values[-1], before)


def diagnose(attempt: dict, metric: str, mode: str, kind: str, threshold: float) -> Diagnosis:
    """The problem the attempt's curve (or log) shows, and the moves that address it."""
    objective = Objective(metric, mode, threshold)
    if kind == "regression" or not (attempt.get("curve") or {}).get("history"):
        return _diagnose_without_curve(attempt, objective)
    curve = attempt["curve"]
    history = curve["history"]
    last = len(history)
    reported_loss = _series(history, "loss") or []
    if any(v is None or not math.isfinite(v) for v in reported_loss):
        bad = next(i for i, v in enumerate(reported_loss, 1) if v is None or not math.isfinite(v))
        return Diagnosis("diverged", f"loss is NaN or infinite at epoch {bad}", DIVERGED_MOVES)
    loss = _finite(reported_loss)  # all of it: every value is a finite number
    if last >= 2 and loss and loss[-1] >= loss[0]:
        return Diagnosis("diverged", f"loss did not fall ({loss[0]:.4g} at epoch 1, {loss[-1]:.4g} at "
                                     f"epoch {last})", DIVERGED_MOVES)

    train = _finite(_series(history, metric) or [])
    val = _finite(_series(history, f"val_{metric}") or [])
    val_loss = _finite(_series(history, "val_loss") or [])
    if _stuck_at_chance(loss, train):
        return Diagnosis("diverged", f"loss stuck at {loss[-1]:.4g} with train {metric} {train[-1]:.3f}, "
                                     f"chance level", DIVERGED_MOVES)
    val_rising = len(val) >= 2 and _gain(val, objective) > STILL_IMPROVING
    if train and val and len(train) == len(val) and not val_rising:  # while it rises, train on
        gap = objective.improvement(train[-1], val[-1])  # how much better it does on what it trains on
        if gap > OVERFIT_GAP and _unit_scale(train + val):
            return Diagnosis("over-fitting", f"train {metric} {train[-1]:.3f} vs validation {val[-1]:.3f} "
                                             f"at epoch {last}", OVER_FITTING_MOVES)
    if len(val_loss) >= 3 and len(loss) == len(val_loss):
        lowest = min(range(len(val_loss)), key=val_loss.__getitem__)
        if lowest < len(val_loss) - 2 and val_loss[-1] > val_loss[lowest] * 1.1 and loss[-1] < loss[lowest]:
            return Diagnosis("over-fitting", f"val_loss lowest at epoch {lowest + 1} ({val_loss[lowest]:.4g}), "
                                             f"{val_loss[-1]:.4g} at epoch {last} while loss kept falling",
                             OVER_FITTING_MOVES)

    watched, name = (val, f"val_{metric}") if val else (train, metric)
    rising = len(watched) >= 2 and _gain(watched, objective) > STILL_IMPROVING
    drop = (loss[-2] - loss[-1]) / loss[-2] if len(loss) >= 2 and loss[-2] > 0 else 0.0
    steps = curve.get("steps")
    total_steps = steps * last if isinstance(steps, int) and steps > 0 else None
    barely_started = last < MIN_EPOCHS or (total_steps is not None and total_steps < MIN_STEPS)
    if last == 1 or rising or (drop > 0 and barely_started) or (not watched and drop > LOSS_STILL_FALLING):
        what = (f"{name} still rising at the last epoch ({last})" if rising
                else f"only {last} epoch" if last == 1
                else f"loss still falling after {last} epochs" + (
                    f" ({total_steps} optimizer steps in all)" if total_steps else ""))
        if isinstance(steps, int) and 0 < steps <= FEW_STEPS:
            return Diagnosis("under-trained", f"{what}, with only {steps} optimizer step(s) per epoch",
                             FEW_STEPS_MOVES + UNDER_TRAINED_MOVES)
        return Diagnosis("under-trained", what, UNDER_TRAINED_MOVES)
    if train and not objective.meets(train[-1]):
        return Diagnosis("under-capacity", f"train {metric} flat at {train[-1]:.3f} by epoch {last}",
                         UNDER_CAPACITY_MOVES)
    if train:
        return Diagnosis("plateau", f"{name} flat at {watched[-1]:.3f} by epoch {last}", ())
    return Diagnosis("unclear", f"the curve has no {metric!r}", ())


def _stuck_at_chance(loss: list[float], train: list[float]) -> bool:
    """The loss frozen over the last epochs with the metric no better than guessing: the units
    died (a rate far too high), which neither epochs nor width can mend. Guessing among k
    balanced classes scores a cross-entropy loss of ln k ≥ ln 2 and an accuracy of 1/k = exp(-L)."""
    if len(loss) < STUCK_EPOCHS or len(train) != len(loss) or not _unit_scale(train):
        return False
    recent = loss[-STUCK_EPOCHS:]
    frozen = max(recent) - min(recent) <= STUCK_CHANGE * abs(recent[-1])
    return frozen and loss[-1] >= math.log(2) and train[-1] * math.exp(loss[-1]) <= 1.5


def _unit_scale(values: list[float]) -> bool:
    """A metric on a 0..1 scale (accuracy, AUC, F1), where a fixed gap means something."""
    return all(0.0 <= v <= 1.0 for v in values)


def _diagnose_without_curve(attempt: dict, objective: Objective) -> Diagnosis:
    """From what the capture saw of a scikit-learn fit (`attempt["capture"]`, autolog.json as the
    script left it: untrusted), else from the log."""
    fit = _captured_fit(attempt)
    model = next((v[:80] for v in (fit.get("model"), fit.get("estimator")) if isinstance(v, str) and v),
                 "the estimator")
    n_iter, max_iter = _number(fit.get("n_iter")), _number(fit.get("max_iter"))
    counted = n_iter is not None and max_iter is not None
    stopped = n_iter is not None and max_iter is not None and n_iter >= max_iter
    if stopped or fit.get("converged") is False or fit.get("convergence_warning") is True:
        evidence = (f"{model} stopped at max_iter={max_iter:.15g} (n_iter_ {n_iter:.15g})" if counted
                    else f"{model} warned of no convergence (ConvergenceWarning) in fit()")
        return Diagnosis("no convergence", evidence, NO_CONVERGENCE_MOVES)
    if "ConvergenceWarning" in (attempt.get("log") or ""):
        return Diagnosis("no convergence", "scikit-learn's ConvergenceWarning in the log",
                         NO_CONVERGENCE_MOVES)
    if attempt.get("status") == "failed":
        return Diagnosis("failed", f"the attempt failed: {attempt.get('error') or 'no metric'}", ())
    train, name = _number(fit.get("train_score")), fit.get("score_name")
    if train is not None and scored(attempt) and isinstance(name, str) and lines.matches(name, objective.metric):
        test = attempt["metric_value"]
        scores = f"{model} scores {train:.3f} {objective.metric} on its training data"
        if objective.improvement(train, test) > OVERFIT_GAP and _unit_scale([train, test]):
            return Diagnosis("over-fitting", f"{scores}, {test:.3f} on the test data", REGULARISE_MOVES)
        if usable(objective.threshold) and not objective.meets(train) and not objective.meets(test):
            return Diagnosis("under-fitting", f"{scores} too, {test:.3f} on the test data, short of "
                                              f"{objective.threshold:g}", LOOSEN_MOVES)
    return Diagnosis("unclear", _nothing_to_read(attempt, fit), ())


def _nothing_to_read(attempt: dict, fit: dict) -> str:
    """What exactly the attempt left nothing of, for the reason its next move is a guess."""
    capture = attempt.get("capture")
    frameworks = capture.get("frameworks") if isinstance(capture, dict) else None
    if not isinstance(frameworks, list):
        return "no training curve to read"  # nor a capture: --no-autolog, or recorded before it
    if fit:
        return "scikit-learn converged, and its training score says neither over- nor under-fitting"
    if not frameworks:
        return "no training curve to read: no Keras fit, PyTorch optimizer step or scikit-learn fit was seen"
    return f"no training curve to read from {', '.join(str(f) for f in frameworks[:3])}"


def _number(value: Any) -> float | None:
    return float(value) if usable(value) else None


def _captured_fit(attempt: dict) -> dict:
    """The last scikit-learn fit the capture saw: its training facts and notes in one dict
    ({} when there is none, or the record is not shaped as autolog.json is)."""
    capture = attempt.get("capture")
    if not isinstance(capture, dict):
        return {}
    found: dict = {}
    for part in ("training", "notes"):
        section = capture.get(part)
        facts = section.get("sklearn") if isinstance(section, dict) else None
        found.update(facts if isinstance(facts, dict) else {})
    return found


# --- judging a move -------------------------------------------------------------------------


def examples_behind(values: list[float], limit: int = 5000) -> int | None:
    """How many test examples an accuracy-like metric was counted over: the smallest n that
    makes every value a fraction k/n (Keras reports them in float32). None below three distinct
    values, where a small n fits by chance."""
    distinct = sorted({round(v, 9) for v in values if 0.0 < v < 1.0})
    if len(distinct) < 3:
        return None
    for n in range(2, limit + 1):
        if all(abs(v * n - round(v * n)) < n * 1e-7 + 1e-9 for v in distinct):
            return n
    return None


def noise(attempts: list[dict], metric: str, min_delta: float) -> float:
    """The smallest difference of the metric that is not noise: --min-delta, and at least one
    test example when the script says how many (`examples` in its metrics) or its validation
    curve shows it."""
    counts = [a["metrics"].get("examples") for a in attempts if isinstance(a.get("metrics"), dict)]
    counts = [c for c in counts if isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 1]
    if not counts:
        values = [epoch.get(f"val_{metric}") for a in attempts
                  for epoch in ((a.get("curve") or {}).get("history") or [])]
        n = examples_behind([v for v in values if isinstance(v, (int, float))])
        counts = [n] if n else []
    return max(min_delta, 1.0 / min(counts) if counts else 0.0)


def final_loss(attempt: dict) -> float | None:
    history = (attempt.get("curve") or {}).get("history") or []
    value = history[-1].get("loss") if history else None
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def judge(child: dict, parent: dict, objective: Objective | str, tolerance: float) -> str:
    """"helped", "neutral" or "hurt": the child's metric against its parent's, differences
    within `tolerance` being noise; more epochs that lowered the training loss without costing
    more than noise count as helping (the curve says training is going somewhere). The direction
    is the run's Objective (or its mode, "max" or "min")."""
    if isinstance(objective, str):
        objective = Objective("", objective, math.nan)  # the direction alone
    if child["status"] != "ok" or child.get("metric_value") is None:
        return "hurt"
    if parent.get("metric_value") is None:
        return "helped"
    value, before = child["metric_value"], parent["metric_value"]
    beyond_noise = abs(value - before) > tolerance
    if beyond_noise and objective.better_than(value, before):
        return "helped"
    if beyond_noise and objective.better_than(before, value):
        return "hurt"
    if child.get("tweak_name") == "double_epochs":
        before, after = final_loss(parent), final_loss(child)
        if before is not None and after is not None and after < before * (1 - LOSS_STILL_FALLING):
            return "helped"
    return "neutral"
