"""The Objective (metric, mode, threshold) and the one best-attempt rule, unit by unit; then a
real min-mode run through the CLI, on which the loop, the report, `pushtune runs`/`show` and the
mail (through a real SMTP server) must name the same best attempt."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import socket
import textwrap
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from jobs import exit_codes
from jobs.ci.jenkins import RESULT_EXIT_CODES
from jobs.errors import UserError
from jobs.loop import summarize
from jobs.report.html_report import report_context
from jobs.store.run_store import RunStore
from jobs.tune.diagnosis import judge
from jobs.tune.objective import MODES, Objective, best_attempt, usable
from notify import load_settings, load_summary, notify_run

ACCURACY = Objective("accuracy", "max", 0.9)
LOSS = Objective("loss", "min", 0.3)
UNUSABLE = [None, math.nan, math.inf, -math.inf, True, "0.5", 10 ** 400]


def attempt(n: int, value, status: str = "ok") -> dict:
    return {"n": n, "status": status, "metric_value": value}


# --- the objective ------------------------------------------------------------------------------


def test_symbols_and_target_for_both_modes():
    assert (ACCURACY.symbol, ACCURACY.miss_symbol, ACCURACY.direction) == ("≥", "<", 1)
    assert (LOSS.symbol, LOSS.miss_symbol, LOSS.direction) == ("≤", ">", -1)
    assert ACCURACY.target() == "accuracy ≥ 0.9" and LOSS.target() == "loss ≤ 0.3"
    assert (ACCURACY.sign(0.95), ACCURACY.sign(0.8), ACCURACY.sign(None)) == ("≥", "<", "<")
    assert (LOSS.sign(0.1), LOSS.sign(0.5), LOSS.sign(math.nan)) == ("≤", ">", ">")


def test_better_than_follows_the_mode_and_is_strict():
    assert ACCURACY.better_than(0.9, 0.8) and not ACCURACY.better_than(0.8, 0.9)
    assert LOSS.better_than(0.2, 0.4) and not LOSS.better_than(0.4, 0.2)
    assert LOSS.better_than(-1.0, 0.0)  # a negative value is a value
    for objective in (ACCURACY, LOSS):
        assert not objective.better_than(0.5, 0.5)  # a tie is not better, either way round
        assert not objective.better_than(0.0, -0.0) and not objective.better_than(-0.0, 0.0)
    assert ACCURACY.improvement(0.9, 0.8) == pytest.approx(0.1) and LOSS.improvement(0.2, 0.4) == pytest.approx(0.2)


@pytest.mark.parametrize("objective", [ACCURACY, LOSS], ids=MODES)
@pytest.mark.parametrize("bad", UNUSABLE, ids=repr)
def test_an_unusable_value_never_wins_and_never_meets(objective, bad):
    assert not usable(bad)
    assert not objective.better_than(bad, 0.5)
    assert objective.better_than(0.5, bad)  # anything real beats "nothing yet"
    assert not objective.better_than(bad, bad)
    assert not objective.meets(bad)


def test_meets_the_threshold_at_equality_in_both_modes():
    assert ACCURACY.meets(0.9) and ACCURACY.meets(1) and not ACCURACY.meets(0.8999)
    assert LOSS.meets(0.3) and LOSS.meets(0) and not LOSS.meets(0.3001)
    assert not LOSS.meets(-math.inf) and not ACCURACY.meets(math.inf)  # infinite is no score


def test_a_bad_mode_is_a_user_error():
    with pytest.raises(UserError, match="mode must be max or min, not 'maximize'"):
        Objective("accuracy", "maximize", 0.9)
    with pytest.raises(UserError, match=r"^run 7: mode must be max or min, not 'MAX'$"):
        Objective.of({"id": 7, "metric": "accuracy", "mode": "MAX", "threshold": 0.9})
    assert UserError("x").exit_code == exit_codes.USER_ERROR


def test_it_is_made_from_a_run_row_and_cannot_change():
    objective = Objective.of({"id": 1, "metric": "loss", "mode": "min", "threshold": 0.3, "status": "running"})
    assert objective == LOSS and hash(objective) == hash(LOSS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        objective.mode = "max"  # type: ignore[misc]


# --- the one best-attempt rule ------------------------------------------------------------------


def test_the_best_attempt_follows_the_mode():
    attempts = [attempt(1, 0.5), attempt(2, 0.2), attempt(3, 0.35)]
    assert best_attempt(attempts, LOSS)["n"] == 2
    assert best_attempt(attempts, ACCURACY)["n"] == 1


@pytest.mark.parametrize("objective", [ACCURACY, LOSS], ids=MODES)
def test_of_equals_the_first_wins(objective):
    attempts = [attempt(1, 0.1), attempt(2, 0.7), attempt(3, 0.7), attempt(4, 0.1)]
    best = best_attempt(attempts, objective)
    assert best["n"] == (2 if objective.mode == "max" else 1)
    assert objective.ranked(attempts)[0] is best
    assert [a["n"] for a in objective.ranked(attempts)] == ([2, 3, 1, 4] if objective.mode == "max" else [1, 4, 2, 3])


@pytest.mark.parametrize("objective", [ACCURACY, LOSS], ids=MODES)
def test_only_succeeded_attempts_with_a_finite_metric_count(objective):
    winner = 0.6 if objective.mode == "max" else 0.4
    attempts = [attempt(1, 0.99, "failed"), attempt(2, 0.0, "running"), attempt(3, None)]
    attempts += [attempt(3 + i, bad) for i, bad in enumerate(UNUSABLE, start=1)]
    assert best_attempt(attempts, objective) is None and objective.ranked(attempts) == []
    worse = -0.01 if objective.mode == "max" else 0.99
    attempts += [attempt(20, 0.5), attempt(21, winner), attempt(22, worse, "failed")]
    assert best_attempt(attempts, objective)["n"] == 21
    assert [a["n"] for a in objective.ranked(attempts)] == [21, 20]
    assert best_attempt([], objective) is None


def test_the_noise_aware_judge_takes_its_direction_from_the_objective():
    parent = {"status": "ok", "metric_value": 0.5}
    lower = {"status": "ok", "metric_value": 0.4}
    assert judge(lower, parent, LOSS, 0.05) == judge(lower, parent, "min", 0.05) == "helped"
    assert judge(lower, parent, ACCURACY, 0.05) == judge(lower, parent, "max", 0.05) == "hurt"
    assert judge(lower, parent, LOSS, 0.2) == "neutral"  # within the noise
    with pytest.raises(UserError):
        judge(lower, parent, "sideways", 0.0)


# --- one table of exit codes --------------------------------------------------------------------


def test_exit_codes_are_one_table():
    assert (exit_codes.OK, exit_codes.FAILED, exit_codes.USER_ERROR, exit_codes.BELOW_THRESHOLD,
            exit_codes.INTERRUPTED) == (0, 1, 2, 3, 130)
    statuses = ("passed", "below_threshold", "failed", "interrupted")
    assert {status: exit_codes.for_status(status) for status in statuses} \
        == {"passed": 0, "below_threshold": 3, "failed": 1, "interrupted": 130}
    with pytest.raises(KeyError):
        exit_codes.for_status("running")
    assert RESULT_EXIT_CODES["SUCCESS"] == exit_codes.OK and RESULT_EXIT_CODES["UNSTABLE"] == exit_codes.BELOW_THRESHOLD
    assert set(RESULT_EXIT_CODES.values()) <= {exit_codes.OK, exit_codes.FAILED, exit_codes.BELOW_THRESHOLD}


# --- every reader agrees, on a real min-mode run ------------------------------------------------

# A "regression" script that reports a loss chosen by its parameter x (x=4 fails): as pushed
# (x=0) 0.5, then the grid x=1 → 0.2, x=4 → failed, x=2 → 0.35, x=3 → 0.2 (a tie, later).
LOSS_SCRIPT = textwrap.dedent("""\
    import json, os
    if False:  # classified as a regression model; trains nothing
        from sklearn.linear_model import LogisticRegression
        LogisticRegression(C=1.0)
    x = json.loads(os.environ.get("PUSHTUNE_PARAMS") or "{}").get("x", 0)
    if x == 4:
        raise SystemExit("x = 4 is not a thing")
    loss = {0: 0.5, 1: 0.2, 2: 0.35, 3: 0.2}[x]
    json.dump({"loss": loss}, open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "metrics.json"), "w"))
""")


class Inbox:
    def __init__(self):
        self.received = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append(message_from_bytes(envelope.original_content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def plain_smtp():
    """A real SMTP server on 127.0.0.1 (no TLS, no AUTH): (inbox, port)."""
    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def mail_settings(port: int, tmp_path: Path):
    env = {"PUSHTUNE_SMTP_HOST": "127.0.0.1", "PUSHTUNE_SMTP_PORT": str(port), "PUSHTUNE_SMTP_SECURITY": "none",
           "PUSHTUNE_MAIL_FROM": "pushtune@example.com", "PUSHTUNE_MAIL_TO": "dev@example.com",
           "PUSHTUNE_SMTP_TIMEOUT": "5", "PUSHTUNE_SMTP_RETRY_DELAY": "0.01"}
    return load_settings(env=env, path=tmp_path / "none.ini")


def test_the_loop_the_report_runs_and_the_mail_agree_on_a_min_mode_run(tmp_path, cli, pushtune_home, plain_smtp):
    model = tmp_path / "loss_model.py"
    model.write_text(LOSS_SCRIPT)
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"x": [1, 4, 2, 3]}))
    result = cli("run", model, "--metric", "loss", "--mode", "min", "--threshold", "0.1", "--strategy", "grid",
                 "--space", space, "--max-attempts", "5", "--runtime", "local", "--json")

    # the loop: attempt 2 (0.2) beats 0.5 and 0.35, and the later 0.2 does not take over
    summary = json.loads(result.stdout)
    assert result.returncode == exit_codes.BELOW_THRESHOLD, result.stderr
    values = [a.get("loss", "failed") for a in summary["attempts"]]
    assert values == [0.5, 0.2, "failed", 0.35, 0.2]
    assert summary["status"] == "below_threshold" and summary["mode"] == "min"
    assert summary["best"]["attempt"] == 2 and summary["best"]["loss"] == 0.2
    store = RunStore.open()
    run_id = summary["run_id"]
    assert store.get_run(run_id)["best_attempt"] == 2

    # the report
    context = report_context(store, run_id)
    assert context["best"]["n"] == 2 and context["comparison"] == "≤"
    assert [row["css"] for row in context["rows"]] == ["", "best", "failed", "", ""]
    page = (pushtune_home / "runs" / str(run_id) / "report.html").read_text(encoding="utf-8")
    assert "Best: attempt 2, loss 0.2000 (threshold ≤ 0.1): loss from metrics.json." in page

    # `pushtune runs` and `pushtune show`
    listed = cli("runs", "--json")
    assert listed.returncode == exit_codes.OK
    assert [r["best"]["attempt"] for r in json.loads(listed.stdout)] == [2]
    table = cli("runs")
    assert "0.2000" in table.stdout and "≤ 0.1" in table.stdout and "0.5000" not in table.stdout
    assert " UTC" in table.stdout  # the start time, in UTC as in the report, and labelled
    shown = cli("show", run_id)
    assert shown.returncode == exit_codes.OK
    assert "best loss 0.2000 (threshold ≤ 0.1) at attempt 2" in " ".join(shown.stdout.split())
    assert json.loads(cli("show", run_id, "--json").stdout)["best"]["attempt"] == 2

    # the mail, through a real SMTP server
    inbox, port = plain_smtp
    assert load_summary(store, run_id).best["n"] == 2
    assert notify_run(store, run_id, settings=mail_settings(port, tmp_path), echo=None).sent
    (mail,) = inbox.received
    assert mail["Subject"] == (f"[pushtune] loss_model.py: below threshold — best loss 0.20 > 0.10 "
                               f"after 5 attempts (run {run_id})")
    text = mail.get_body(("plain",)).get_content()
    assert re.findall(r"(?m)^\s*(\d+) ★", text) == ["2"]  # the attempts table marks attempt 2 only
    assert "a higher threshold: `--threshold 0.20`" in text  # for a loss, an easier goal is higher


def test_a_running_run_shows_the_same_best_so_far_everywhere(tmp_path, pushtune_home):
    store = RunStore.open()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_id = store.create_run(
        model_path=str(tmp_path / "m.py"), model_name="m.py", model_sha256="0" * 64, kind="regression",
        framework="sklearn", metric="loss", mode="min", threshold=0.1, strategy="grid", runtime="local",
        run_dir=str(run_dir), status="running",
    )
    outcomes = [(0.4, "ok"), (0.01, "failed"), (0.3, "ok"), (0.3, "ok"), (None, "running")]
    for i, (value, status) in enumerate(outcomes, 1):
        n = store.add_attempt(run_id, source_sha256=str(i), config_key=str(i), dir=str(run_dir / f"attempt-{i}"))
        store.update_attempt(run_id, n, status=status, metric_value=value, seconds=1.0)

    assert store.get_run(run_id)["best_attempt"] is None  # recorded when the run finishes
    assert summarize(store, run_id)["best"]["attempt"] == 3
    assert report_context(store, run_id)["best"]["n"] == 3
    assert load_summary(store, run_id).best["n"] == 3
    assert load_summary(store, run_id).headline() == "still running — best loss 0.30 > 0.10 after 5 attempts so far"
