"""Reading what a script reported, in every form the contract accepts."""

from __future__ import annotations

import json

from jobs.metrics import meets, read_metrics


def test_metrics_json_wins(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.8, "loss": 0.3}))
    (tmp_path / "accuracy.txt").write_text("0.1")
    metrics, missing = read_metrics(tmp_path, None, "accuracy")
    assert missing is None and metrics["accuracy"] == 0.8 and metrics["loss"] == 0.3


def test_metrics_json_without_the_metric(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"loss": 0.3}))
    _, missing = read_metrics(tmp_path, None, "accuracy")
    assert "no finite number 'accuracy'" in missing


def test_nan_and_bad_json_are_not_metrics(tmp_path):
    (tmp_path / "metrics.json").write_text('{"accuracy": NaN}')
    assert read_metrics(tmp_path, None, "accuracy")[1]
    (tmp_path / "metrics.json").write_text("{oops")
    assert "not valid JSON" in read_metrics(tmp_path, None, "accuracy")[1]


def test_accuracy_txt_of_the_old_recipe(tmp_path):
    (tmp_path / "accuracy.txt").write_text(" 0.93\n")
    assert read_metrics(tmp_path, None, "accuracy") == ({"accuracy": 0.93}, None)


def test_last_stdout_line(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("Epoch 1/2\naccuracy: 0.5\nEpoch 2/2\naccuracy: 0.91\n\n")
    assert read_metrics(tmp_path, log, "accuracy") == ({"accuracy": 0.91}, None)
    log.write_text("accuracy: 0.91\ndone\n")
    assert read_metrics(tmp_path, log, "accuracy")[1]


def test_meets_in_both_modes():
    assert meets(0.9, 0.9, "max") and not meets(0.89, 0.9, "max")
    assert meets(0.1, 0.2, "min") and not meets(0.3, 0.2, "min")
    assert not meets(None, 0.2, "min")
