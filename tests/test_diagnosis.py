"""jobs.tune.diagnosis: the problem a training curve or log shows, and judging a move against noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jobs.tune.diagnosis import diagnose, examples_behind, judge, noise


def curve(steps: int = 20, **series: list) -> dict:
    """An attempt row with a kit history.json built from per-epoch series."""
    epochs = len(next(iter(series.values())))
    history = [{"epoch": i + 1, **{k: v[i] for k, v in series.items()}} for i in range(epochs)]
    return {"status": "ok", "metric_value": 0.5, "curve": {"epochs": epochs, "steps": steps, "history": history}}


def keras_diagnosis(attempt: dict, threshold: float = 0.9):
    return diagnose(attempt, "accuracy", "max", "ann", threshold)


@pytest.mark.parametrize("loss", [[2.3, None, None], [2.3, float("nan"), 1.0], [2.3, math.inf, 1.0]])
def test_non_finite_loss_is_divergence(loss):
    found = keras_diagnosis(curve(loss=loss, accuracy=[0.1, 0.1, 0.1]))
    assert found.problem == "diverged"
    assert found.moves == ("divide_learning_rate_by_10",)
    assert "epoch 2" in found.evidence


def test_a_loss_that_ends_higher_than_it_started_is_divergence():
    found = keras_diagnosis(curve(loss=[2.3, 5.1, 9.7, 14.2], accuracy=[0.12, 0.1, 0.1, 0.09]))
    assert found.problem == "diverged"
    assert "2.3 at epoch 1, 14.2 at epoch 4" in found.evidence


def test_a_loss_frozen_at_chance_level_is_divergence():
    # digits with SGD(learning_rate=8.0): the first steps blow up and every unit dies
    frozen = [3.902] + [2.402] * 5
    found = keras_diagnosis(curve(loss=frozen, accuracy=[0.11] + [0.117] * 5, val_accuracy=[0.1] * 6))
    assert found.problem == "diverged"
    assert found.evidence == "loss stuck at 2.402 with train accuracy 0.117, chance level"
    # frozen but well above chance (the narrow net's plateau) is not divergence
    plateau = keras_diagnosis(curve(loss=[1.4] + [1.04] * 5, accuracy=[0.5] + [0.66] * 5))
    assert plateau.problem == "under-capacity"


def test_validation_metric_still_rising_means_under_trained():
    found = keras_diagnosis(curve(loss=[2.0, 1.5, 1.2], accuracy=[0.3, 0.5, 0.6],
                                  val_loss=[2.1, 1.6, 1.3], val_accuracy=[0.3, 0.45, 0.58]))
    assert found.problem == "under-trained"
    assert found.moves == ("double_epochs",)
    assert found.evidence == "val_accuracy still rising at the last epoch (3)"


def test_few_optimizer_steps_per_epoch_tries_a_smaller_batch_first():
    found = keras_diagnosis(curve(steps=1, loss=[2.3, 2.2, 2.1], accuracy=[0.1, 0.2, 0.3]))
    assert found.problem == "under-trained"
    assert found.moves[0] == "batch_size_32" and "double_epochs" in found.moves
    assert "1 optimizer step(s) per epoch" in found.evidence


def test_a_falling_loss_after_too_few_steps_is_under_training_even_with_a_flat_metric():
    # The face CNN after 2 epochs: accuracy at chance, loss falling slowly, 18 steps.
    found = keras_diagnosis(curve(steps=9, loss=[3.705, 3.675], accuracy=[0.021, 0.025],
                                  val_loss=[3.681, 3.669], val_accuracy=[0.025, 0.025]))
    assert found.problem == "under-trained"
    assert "18 optimizer steps" in found.evidence


def test_a_flat_low_train_metric_after_real_training_is_under_capacity():
    found = keras_diagnosis(curve(loss=[1.4, 1.1, 1.05, 1.04, 1.04], accuracy=[0.5, 0.62, 0.65, 0.66, 0.66],
                                  val_accuracy=[0.5, 0.6, 0.64, 0.65, 0.65]))
    assert found.problem == "under-capacity"
    assert found.moves == ("widen_dense", "add_dense")


def test_flat_but_above_threshold_in_training_is_a_plateau_with_no_named_move():
    found = keras_diagnosis(curve(loss=[0.5, 0.3, 0.29, 0.29, 0.29], accuracy=[0.9, 0.95, 0.95, 0.95, 0.95],
                                  val_accuracy=[0.86, 0.88, 0.88, 0.88, 0.88]))
    assert found.problem == "plateau" and found.moves == ()


def test_train_far_above_validation_is_over_fitting():
    found = keras_diagnosis(curve(loss=[1.0, 0.3, 0.05, 0.01, 0.01], accuracy=[0.6, 0.9, 0.99, 1.0, 1.0],
                                  val_accuracy=[0.55, 0.7, 0.72, 0.71, 0.71]))
    assert found.problem == "over-fitting"
    assert found.moves == ("add_dropout",)
    assert "train accuracy 1.000 vs validation 0.710" in found.evidence


def test_a_gap_while_validation_still_rises_is_under_training_first():
    # the face example after 3 epochs: train 0.946, validation 0.833 and still climbing
    found = keras_diagnosis(curve(loss=[3.2, 1.1, 0.4], accuracy=[0.3, 0.8, 0.946],
                                  val_accuracy=[0.45, 0.75, 0.833]))
    assert found.problem == "under-trained"


def test_validation_loss_turning_up_while_loss_falls_is_over_fitting():
    found = keras_diagnosis(curve(loss=[1.0, 0.6, 0.4, 0.3, 0.2], accuracy=[0.6, 0.7, 0.75, 0.78, 0.8],
                                  val_loss=[1.0, 0.7, 0.8, 0.95, 1.1], val_accuracy=[0.6, 0.7, 0.72, 0.72, 0.72]))
    assert found.problem == "over-fitting"
    assert "val_loss lowest at epoch 2" in found.evidence


def test_scikit_learn_convergence_warning_asks_for_more_iterations():
    attempt = {"status": "ok", "metric_value": 0.6, "curve": None,
               "log": "lbfgs failed to converge\nConvergenceWarning: lbfgs failed to converge (status=1)"}
    found = diagnose(attempt, "accuracy", "max", "regression", 0.9)
    assert found.problem == "no convergence"
    assert found.moves[0] == "max_iter_times_10"
    quiet = diagnose({**attempt, "log": "accuracy: 0.6"}, "accuracy", "max", "regression", 0.9)
    assert quiet.problem == "unclear" and quiet.moves == ()


def test_examples_behind_float32_fractions():
    values = [float(np.float32(k / 120)) for k in (9, 8, 31, 55)]
    assert examples_behind(values) == 120
    assert examples_behind([float(np.float32(k / 143)) for k in (130, 134, 139)]) == 143
    assert examples_behind([0.5, 0.75]) is None  # two values: a small n would fit by chance
    assert examples_behind([0.8123457, 0.3141593, 0.7071068]) is None  # no fraction below the limit


def test_noise_is_the_larger_of_min_delta_and_one_example():
    rows = [{"metrics": {"accuracy": 0.9, "examples": 50}}]
    assert noise(rows, "accuracy", 0.0) == pytest.approx(0.02)
    assert noise(rows, "accuracy", 0.05) == pytest.approx(0.05)
    from_curve = [{**curve(val_accuracy=[float(np.float32(k / 120)) for k in (3, 8, 9)]), "metrics": {}}]
    assert noise(from_curve, "accuracy", 0.0) == pytest.approx(1 / 120)
    assert noise([{"metrics": {"accuracy": 0.9}}], "accuracy", 0.0) == 0.0


def test_noise_is_one_example_of_the_smallest_test_set():
    # attempts that report different test set sizes: one example of the smallest is the coarsest
    # step a metric can take, so anything below it is noise for all of them
    rows = [{"metrics": {"accuracy": 0.9, "examples": n}} for n in (200, 50, 100)]
    assert noise(rows, "accuracy", 0.0) == pytest.approx(1 / 50)
    ignored = [{"metrics": {"examples": True}}, {"metrics": {"examples": 0.5}}, {"metrics": "broken"}]
    assert noise(rows + ignored, "accuracy", 0.0) == pytest.approx(1 / 50)  # no count, not a count of 1


def test_judge_treats_differences_within_noise_as_neutral():
    parent = {"status": "ok", "metric_value": 0.075}
    child = {"status": "ok", "metric_value": 0.0667, "tweak_name": "halve_learning_rate"}
    assert judge(child, parent, "max", 1 / 120) == "neutral"
    assert judge(child, parent, "max", 0.0) == "hurt"
    assert judge({**child, "metric_value": 0.2}, parent, "max", 1 / 120) == "helped"
    assert judge({**child, "metric_value": 0.2}, parent, "min", 1 / 120) == "hurt"
    assert judge({"status": "failed", "metric_value": None}, parent, "max", 0.0) == "hurt"


def test_more_epochs_that_lowered_the_training_loss_helped_even_on_a_flat_metric():
    parent = {**curve(loss=[3.70, 3.67]), "metric_value": 0.075}
    child = {**curve(loss=[3.70, 3.67, 3.5, 3.2]), "metric_value": 0.0667, "tweak_name": "double_epochs"}
    assert judge(child, parent, "max", 1 / 120) == "helped"
    flat = {**curve(loss=[3.70, 3.67, 3.67, 3.669]), "metric_value": 0.0667, "tweak_name": "double_epochs"}
    assert judge(flat, parent, "max", 1 / 120) == "neutral"
    assert judge(child, parent, "max", 0.0) == "hurt"  # without noise, lower is lower


@pytest.mark.parametrize("capture, evidence", [
    ({"frameworks": []},
     "no training curve to read: no Keras fit, PyTorch optimizer step or scikit-learn fit was seen"),
    ({"frameworks": ["pytorch"]}, "no training curve to read from pytorch"),
    (None, "no training curve to read"),
])
def test_an_attempt_without_a_curve_says_what_was_missing(capture, evidence):
    attempt = {"status": "ok", "metric_value": 0.5, "curve": None, "capture": capture, "log": ""}
    found = diagnose(attempt, "accuracy", "max", "ann", 0.9)
    assert (found.problem, found.evidence) == ("unclear", evidence)
