"""Reading what a script reported, in every form the contract accepts, and nothing a hostile
script plants instead: links, FIFOs, oversize files, out-of-range values, endless logs."""

from __future__ import annotations

import json
import os
import threading
import tracemalloc

import pytest

from jobs.train.metrics import (
    LOG_TAIL_BYTES,
    OUTPUT_LIMIT,
    find_artifact,
    log_tail,
    meets,
    read_capture,
    read_curve,
    read_metric,
    read_metrics,
)


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


def test_the_last_printed_line_that_names_the_metric(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("Epoch 1/2\naccuracy: 0.5\nEpoch 2/2\naccuracy: 0.91\n\n")
    assert read_metrics(tmp_path, log, "accuracy") == ({"accuracy": 0.91}, None)
    log.write_text("accuracy: 0.91\ndone\nUserWarning: something\n")  # a warning printed after it
    assert read_metrics(tmp_path, log, "accuracy") == ({"accuracy": 0.91}, None)
    log.write_text("Epoch 3/3\n10/10 ━━━━ 0s 5ms/step - accuracy: 0.99 - loss: 0.1\ndone\n")
    assert read_metrics(tmp_path, log, "accuracy")[1].startswith("the script reported no 'accuracy'")


@pytest.mark.parametrize("printed, value", [
    ("Test accuracy: 0.9667", 0.9667),
    ("Accuracy = 97.8%", 0.978),
    ("val_acc 0.91", 0.91),
    ("test loss: 0.31, test accuracy: 0.93", 0.93),
    ("Final model accuracy is 0.88", 0.88),
])
def test_metrics_printed_in_the_scripts_own_words(tmp_path, printed, value):
    log = tmp_path / "log.txt"
    log.write_text(f"loading\n{printed}\nsaved\n")
    reading = read_metric(tmp_path, log, "accuracy")
    assert reading.missing is None and reading.metrics == {"accuracy": pytest.approx(value)}
    assert reading.source.startswith("accuracy printed as")


def test_held_out_figures_win_over_training_figures_whatever_the_order(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("Test accuracy: 0.93\nTraining accuracy: 0.99\n")
    assert read_metrics(tmp_path, log, "accuracy") == ({"accuracy": 0.93}, None)
    log.write_text("Training accuracy: 0.99\n")  # the only figure there is
    assert read_metrics(tmp_path, log, "accuracy") == ({"accuracy": 0.99}, None)


def _capture(tmp_path, **entries):
    (tmp_path / "autolog.json").write_text(json.dumps({"frameworks": ["keras"], **entries}))
    return read_capture(tmp_path)


def test_a_captured_call_comes_before_printed_lines_and_names_its_line(tmp_path):
    capture = _capture(tmp_path, metrics=[
        {"name": "accuracy", "value": 0.99, "source": "model.evaluate()", "line": 20},  # on the training data
        {"name": "loss", "value": 0.2, "source": "model.evaluate()", "line": 24},
        {"name": "accuracy", "value": 0.93, "source": "model.evaluate()", "line": 24},  # then on the test data
    ], printed=[{"label": "Test accuracy", "value": 0.5, "line": 25}])
    reading = read_metric(tmp_path, None, "accuracy", capture)
    assert reading.metrics == {"accuracy": 0.93} and reading.missing is None
    assert reading.source == "accuracy from model.evaluate() at line 24"
    printed_only = _capture(tmp_path, printed=[{"label": "Accuracy", "value": 0.978, "line": 9}])
    assert read_metric(tmp_path, None, "accuracy", printed_only).source == "accuracy printed as 'Accuracy' at line 9"


def test_metrics_json_still_comes_first_with_a_capture(tmp_path):
    capture = _capture(tmp_path, metrics=[{"name": "accuracy", "value": 0.5, "source": "model.evaluate()", "line": 3}])
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.8}))
    assert read_metric(tmp_path, None, "accuracy", capture).source == "accuracy from metrics.json"


def test_no_metric_says_what_the_script_did_report(tmp_path):
    capture = _capture(tmp_path, metrics=[{"name": "loss", "value": 0.3, "source": "model.evaluate()", "line": 3}],
                       printed=[{"label": "Test acc", "value": 0.9, "line": 4}])
    reading = read_metric(tmp_path, None, "f1", capture)
    assert reading.metrics == {} and reading.missing == (
        "the script reported no 'f1': no metrics.json, no evaluate()/score()/f1 call and no printed 'f1' "
        "line; it reported Test acc, loss")


def test_a_script_that_trained_nothing_is_told_so(tmp_path):
    (tmp_path / "autolog.json").write_text(json.dumps({"frameworks": [], "printed": []}))
    reading = read_metric(tmp_path, None, "accuracy", read_capture(tmp_path))
    assert reading.missing.endswith("; it trained nothing pushtune saw (no Keras fit, PyTorch optimizer step "
                                    "or scikit-learn fit)")


def test_a_captured_value_out_of_its_range_is_refused(tmp_path):
    capture = _capture(tmp_path, printed=[{"label": "Accuracy", "value": 97.8, "line": 9}])
    assert read_metric(tmp_path, None, "accuracy", capture).missing == \
        "printed 'Accuracy': accuracy = 97.8 is outside its range [0, 1]"


@pytest.mark.parametrize("planted", [
    "[1, 2]", '{"metrics": "x", "printed": [{"label": 3, "value": "0.9"}], "artifact": "x"}',
    '{"metrics": [{"name": "accuracy", "value": NaN}], "training": [1], "frameworks": {"a": 1}}',
    '{"metrics": [{"name": "accuracy", "value": true, "source": 5, "line": "x"}]}',
])
def test_a_planted_capture_file_yields_nothing_unexpected(tmp_path, planted):
    (tmp_path / "autolog.json").write_text(planted)
    capture = read_capture(tmp_path)
    if capture is not None:
        reading = read_metric(tmp_path, None, "accuracy", capture)
        assert reading.metrics == {} and reading.missing
        assert capture["artifact"] is None and isinstance(capture["training"], dict)


def test_meets_in_both_modes():
    assert meets(0.9, 0.9, "max") and not meets(0.89, 0.9, "max")
    assert meets(0.1, 0.2, "min") and not meets(0.3, 0.2, "min")
    assert not meets(None, 0.2, "min")


# --- files a hostile script plants in its output directory ---------------------------------------


def finishes(call, seconds: float = 5.0):
    """The call's result; fails (instead of hanging the suite) when it blocks, as on a FIFO."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"blocked for over {seconds} s"
    return result["value"]


@pytest.fixture
def host_secret(tmp_path):
    """A file outside the output directory that a planted link points at."""
    secret = tmp_path / "host" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text('{"accuracy": 0.99, "token": "HOST-SECRET"}\n')
    output = tmp_path / "output"
    output.mkdir()
    return output, secret


@pytest.mark.parametrize("name", ["metrics.json", "accuracy.txt"])
def test_a_metric_file_linked_to_a_host_file_is_not_read(host_secret, name):
    output, secret = host_secret
    (output / name).symlink_to(secret)
    metrics, missing = read_metrics(output, None, "accuracy")
    assert metrics == {} and missing == f"{name} is a symbolic link (not followed)"


def test_a_fifo_as_metrics_json_fails_at_once(tmp_path):
    os.mkfifo(tmp_path / "metrics.json")
    metrics, missing = finishes(lambda: read_metrics(tmp_path, None, "accuracy"))
    assert metrics == {} and missing == "metrics.json is not a regular file"


def test_an_oversize_or_deeply_nested_metrics_json_fails_with_the_reason(tmp_path):
    (tmp_path / "metrics.json").write_text('{"accuracy": 0.5, "pad": "' + "x" * OUTPUT_LIMIT + '"}')
    assert read_metrics(tmp_path, None, "accuracy") == ({}, f"metrics.json is larger than {OUTPUT_LIMIT} bytes")
    (tmp_path / "metrics.json").write_text("[" * 100_000)
    _, missing = read_metrics(tmp_path, None, "accuracy")
    assert missing.startswith("metrics.json is not valid JSON")


def test_a_linked_fifo_or_oversize_history_is_no_curve(host_secret):
    output, secret = host_secret
    secret.write_text(json.dumps({"epochs": 1, "history": [{"epoch": 1, "loss": 0.5}]}))
    (output / "history.json").symlink_to(secret)
    assert read_curve(output) is None
    (output / "history.json").unlink()
    os.mkfifo(output / "history.json")
    assert finishes(lambda: read_curve(output)) is None
    (output / "history.json").unlink()
    (output / "history.json").write_text(json.dumps({"history": [{"epoch": 1, "loss": 0.5}]}))
    assert read_curve(output) == {"history": [{"epoch": 1, "loss": 0.5}]}
    (output / "history.json").write_text("[" * 100_000)
    assert read_curve(output) is None


def test_a_linked_artifact_is_no_artifact(host_secret):
    output, secret = host_secret
    (output / "model.keras").symlink_to(secret)
    os.mkfifo(output / "model.h5")
    assert find_artifact(output) is None
    (output / "model.pkl").write_bytes(b"model")
    assert find_artifact(output) == output / "model.pkl"


# --- the log tail ---------------------------------------------------------------------------------


def test_the_log_tail_is_capped_and_reads_only_the_end(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as handle:
        handle.write("start\n" + "y" * (40 << 20) + "\nTraceback: the end\naccuracy: 0.75\n")
    tracemalloc.start()
    try:
        tail = log_tail(log, lines=15)
        metrics, missing = read_metrics(tmp_path, log, "accuracy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(tail.encode()) <= LOG_TAIL_BYTES + 3  # + the "…" that marks the cut line
    assert tail.startswith("…y") and tail.endswith("yyy\nTraceback: the end\naccuracy: 0.75")
    assert (metrics, missing) == ({"accuracy": 0.75}, None)
    assert peak < 1 << 20  # never the whole 40 MB log in memory


def test_a_log_of_one_huge_line_is_no_metric_line(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("accuracy: 0.9" + " " * (LOG_TAIL_BYTES + 10) + "x\n")
    assert read_metrics(tmp_path, log, "accuracy")[1].startswith("the script reported no 'accuracy'")
    log.write_text("short\nlog\n")
    assert log_tail(log) == "short\nlog"


def test_the_log_tail_is_plain_text_not_progress_bar_frames(tmp_path):
    log = tmp_path / "log.txt"
    frames = "".join(f"\r{i}/3 \x1b[32m{'━' * i}\x1b[0m - loss: 0.{9 - i}" for i in range(1, 4))
    log.write_bytes((f"Epoch 1/1\n{frames}\x1b[1m\x08\x08\x08 done\r\n"
                     "Traceback (most recent call last):\n\x1b]0;title\x07ValueError: bad shape\n").encode())
    assert log_tail(log) == ("Epoch 1/1\n3/3 ━━━ - loss:  done\n"
                             "Traceback (most recent call last):\nValueError: bad shape")


# --- metrics out of their range -------------------------------------------------------------------


@pytest.mark.parametrize("reported, reason", [
    ({"accuracy": 5.0}, "metrics.json: accuracy = 5 is outside its range [0, 1]"),
    ({"accuracy": -3}, "metrics.json: accuracy = -3 is outside its range [0, 1]"),
    ({"accuracy": 0.9, "val_accuracy": 1.2}, "metrics.json: val_accuracy = 1.2 is outside its range [0, 1]"),
    ({"accuracy": 0.9, "ROC_AUC": 1.5}, "metrics.json: ROC_AUC = 1.5 is outside its range [0, 1]"),
    ({"accuracy": 0.9, "f1_score": -0.1}, "metrics.json: f1_score = -0.1 is outside its range [0, 1]"),
    ({"accuracy": 0.9, "Precision": 2}, "metrics.json: Precision = 2 is outside its range [0, 1]"),
    ({"accuracy": 0.9, "test_recall_macro": 7}, "metrics.json: test_recall_macro = 7 is outside its range [0, 1]"),
    ({"accuracy": 0.9, "val_mse": -1}, "metrics.json: val_mse = -1 is outside its range [0, ∞)"),
])
def test_a_metric_outside_its_range_fails_with_the_reason(tmp_path, reported, reason):
    (tmp_path / "metrics.json").write_text(json.dumps(reported))
    assert read_metrics(tmp_path, None, "accuracy") == (reported, reason)


def test_metrics_at_the_ends_of_their_range_and_unranged_ones_pass(tmp_path):
    reported = {"accuracy": 1.0, "val_accuracy": 0, "auc": 1, "loss": -3.0, "r2": -2.5, "epochs": 40}
    (tmp_path / "metrics.json").write_text(json.dumps(reported))
    assert read_metrics(tmp_path, None, "accuracy") == (reported, None)


def test_accuracy_txt_and_the_last_line_are_checked_too(tmp_path):
    (tmp_path / "accuracy.txt").write_text("91.3\n")
    assert read_metrics(tmp_path, None, "accuracy")[1] == "accuracy.txt: accuracy = 91.3 is outside its range [0, 1]"
    (tmp_path / "accuracy.txt").unlink()
    log = tmp_path / "log.txt"
    log.write_text("Accuracy: -0.5\n")
    assert read_metrics(tmp_path, log, "accuracy")[1] == \
        "printed in the log: accuracy = -0.5 is outside its range [0, 1]"
