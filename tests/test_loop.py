"""The train → gate → tweak → retrain loop, with real runs of tiny scikit-learn models."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from jobs.loop import RunOptions, run_model
from jobs.store.run_store import RunStore
from jobs.train.runtime import LocalRuntime

LOGISTIC = textwrap.dedent("""\
    import json, os
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    # strongly regularised on purpose: the first attempt falls short
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.0001, max_iter=200))
    model.fit(X_train, y_train)
    with open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "metrics.json"), "w") as f:
        json.dump({"accuracy": model.score(X_test, y_test)}, f)
""")

CRASHES_WHEN_C_IS_SMALL = textwrap.dedent("""\
    from jobs import kit
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    p = kit.params(C=0.01)
    if p["C"] < 0.05:
        raise RuntimeError("C too small for this solver (on purpose)")
    X, y = load_breast_cancer(return_X_y=True)
    model = LogisticRegression(C=p["C"], max_iter=5000).fit(X, y)
    kit.report(accuracy=model.score(X, y))
""")

PARAMS_SCRIPT = textwrap.dedent("""\
    from jobs import kit
    from sklearn.linear_model import Ridge

    p = kit.params(alpha=1.0, C=1)
    kit.report(accuracy=round(1 / (1 + p["alpha"]) * p["C"] / 10, 4))
    _ = Ridge(alpha=p["alpha"])
""")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def store(pushtune_home) -> RunStore:
    return RunStore.open()


def test_below_threshold_gets_tweaked_until_it_passes(tmp_path, store):
    model = write(tmp_path, "logistic.py", LOGISTIC)
    summary = run_model(model, RunOptions(threshold=0.94, max_attempts=5), LocalRuntime(), store)
    assert summary["status"] == "passed"
    values = [a.get("accuracy") for a in summary["attempts"]]
    assert values[0] < 0.94 <= values[-1]
    # C×10 improved, so the ladder applied it again before moving on
    names = [a["tweak_name"] for a in store.attempts(summary["run_id"])]
    assert names == [None, "c_times_10", "c_times_10"]
    best = summary["best"]
    assert best["attempt"] == len(summary["attempts"]) and len(best["tweaks"]) == 2
    run_dir = Path(store.get_run(summary["run_id"])["run_dir"])
    attempt_dir = run_dir / f"attempt-{best['attempt']}"
    assert "C=0.01" in (attempt_dir / "model.py").read_text()
    removed = "-model = make_pipeline(StandardScaler(), LogisticRegression(C=0.0001"
    assert removed in (attempt_dir / "diff.patch").read_text()
    assert "# strongly regularised on purpose" in (attempt_dir / "model.py").read_text()
    assert (run_dir / "report.html").read_text().count("<tr") == len(summary["attempts"]) + 1


def test_budget_spent_below_threshold_keeps_the_best(tmp_path, store):
    model = write(tmp_path, "logistic.py", LOGISTIC)
    summary = run_model(model, RunOptions(threshold=0.999, max_attempts=2), LocalRuntime(), store)
    assert summary["status"] == "below_threshold"
    assert len(summary["attempts"]) == 2 and summary["stop_reason"] == "attempt budget spent (2)"
    assert summary["best"]["attempt"] == 2 and summary["best"]["accuracy"] > 0.9


def test_a_crashing_tweak_is_recorded_and_the_loop_goes_on(tmp_path, store):
    model = write(tmp_path, "crashy.py", CRASHES_WHEN_C_IS_SMALL.replace("C=0.01", "C=0.1").replace(
        'p["C"] < 0.05', 'p["C"] > 0.5'))
    summary = run_model(model, RunOptions(threshold=0.99, max_attempts=3), LocalRuntime(), store)
    first, second, third = summary["attempts"]
    assert first["accuracy"] < 0.99 and "exited with code 1" in second["error"] and "accuracy" in third
    attempt = store.get_attempt(summary["run_id"], 2)
    assert "C too small for this solver" in attempt["log_tail"]
    # tweaks reached the script as parameters, not as source edits
    assert attempt["params"]["C"] == pytest.approx(1.0) and attempt["diff"] == ""


def test_a_pushed_file_that_crashes_stops_after_one_attempt_saying_why(tmp_path, cli):
    model = write(tmp_path, "crashy.py", CRASHES_WHEN_C_IS_SMALL)
    result = cli("run", model, "--runtime", "local", "--max-attempts", "3")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    log = Path(json.loads(cli("show", "1", "--json").stdout)["attempts"][0]["dir"]) / "log.txt"
    assert "stopped: the file as pushed failed (exit code 1), which no tweak fixes: fix it and push again " \
           f"('RuntimeError: C too small for this solver (on purpose)'; log: {log})" in result.stdout.replace("\n", "")
    assert f"attempt 1 failed; the end of {log}:\n" in result.stdout  # the traceback's last lines follow
    assert "    RuntimeError: C too small for this solver (on purpose)\n" in result.stdout
    assert "attempt 2" not in result.stderr
    shown = cli("show", "1").stdout
    assert "    RuntimeError: C too small for this solver (on purpose)\n" in shown
    report = (log.parent.parent / "report.html").read_text()
    assert '<pre class="log">' in report and "raise RuntimeError(&#34;C too small" in report


def test_a_wrong_metric_stops_after_one_attempt_naming_what_was_reported(tmp_path, cli):
    model = write(tmp_path, "acc.py", LOGISTIC.replace('{"accuracy":', '{"acc": 0.5, "loss": 0.3, "f1":'))
    result = cli("run", model, "--runtime", "local")
    assert result.returncode == 1, result.stderr
    assert ("the file as pushed reported no usable accuracy, which no tweak fixes: metrics.json has no finite "
            "number 'accuracy'; it reported acc, f1, loss: is --metric accuracy right?"
            ) in result.stdout.replace("\n", "")
    assert "attempt 2" not in result.stderr


def test_an_exported_pushtune_data_is_the_runs_data_option(tmp_path, cli, pushtune_home):
    data, other = tmp_path / "data", tmp_path / "other"
    data.mkdir()
    other.mkdir()
    model = write(tmp_path, "reads_data.py", LOGISTIC.replace(
        "model.score(X_test, y_test)", "float(os.environ.get('PUSHTUNE_DATA') == " + repr(str(data)) + ")"))
    exported = cli("run", model, "--runtime", "local", "--max-attempts", "1", env={"PUSHTUNE_DATA": str(data)})
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert RunStore.open().get_run(1)["options"]["data"] == str(data)  # what resume and the chain see
    given = cli("run", model, "--runtime", "local", "--max-attempts", "1", "--data", other,
                env={"PUSHTUNE_DATA": str(data)})
    assert given.returncode == 3  # --data wins over the environment
    missing = cli("run", model, "--runtime", "local", env={"PUSHTUNE_DATA": str(tmp_path / "nope")})
    assert missing.returncode == 2
    assert missing.stderr == f"pushtune: error: PUSHTUNE_DATA: no such directory: {tmp_path / 'nope'} " \
                             "(give --data DIR, or unset it)\n"


def test_the_mode_follows_a_loss_metric_and_a_threshold_everything_meets_is_warned(tmp_path, cli):
    model = write(tmp_path, "loss.py", LOGISTIC.replace('{"accuracy": model.score(X_test, y_test)}',
                                                         '{"loss": 1 - model.score(X_test, y_test)}'))
    result = cli("run", model, "--metric", "loss", "--threshold", "0.2", "--runtime", "local", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mode"] == "min"
    assert "pushtune: --metric loss: lower is better, so --mode min (give --mode max if not)" in result.stderr
    plain = write(tmp_path, "plain.py", LOGISTIC)
    trivial = cli("run", plain, "--threshold", "0", "--runtime", "local", "--json")
    assert trivial.returncode == 0
    assert "pushtune: warning: every accuracy meets accuracy ≥ 0: the first attempt will pass" in trivial.stderr


def test_resume_continues_an_interrupted_run(tmp_path, cli, pushtune_home):
    import os
    import signal
    import subprocess
    import sys
    import time

    model = write(tmp_path, "slow.py", LOGISTIC.replace(
        "model.fit(X_train, y_train)",
        "model.fit(X_train, y_train)\nif not os.environ.get('PUSHTUNE_RESUME'):\n"
        "    print('training', flush=True)\n    import time; time.sleep(60)"))
    env = {**os.environ, "PUSHTUNE_HOME": str(pushtune_home), "PYTHONPATH": str(Path(__file__).parent.parent)}
    env.pop("PUSHTUNE_DATA", None)
    driver = subprocess.Popen([sys.executable, "-m", "jobs", "run", str(model), "--runtime", "local",
                               "--threshold", "0.5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = pushtune_home / "runs" / "1" / "attempt-1" / "log.txt"
    deadline = time.monotonic() + 120
    while not (log.exists() and "training" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=60) == 130
    assert RunStore.open().get_run(1)["status"] == "interrupted"

    resumed = cli("resume", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert [a["status"] for a in RunStore.open().attempts(1)] == ["ok"]  # attempt 1 went on, not a new one
    finished = cli("resume", "1")
    assert finished.returncode == 2
    assert finished.stderr == (f"pushtune: error: run 1 is finished (passed): nothing to resume; "
                               f"`pushtune run {model}` starts a new run\n")


def test_duplicate_configurations_are_not_rerun(tmp_path, store):
    model = write(tmp_path, "params.py", PARAMS_SCRIPT)
    options = RunOptions(threshold=0.99, max_attempts=10, strategy="grid",
                         params={"alpha": 1.0}, space={"alpha": [1.0, 0.5, 0.5, 0.0]})
    summary = run_model(model, options, LocalRuntime(), store)
    alphas = [store.get_attempt(summary["run_id"], a["n"])["params"]["alpha"] for a in summary["attempts"]]
    assert alphas == [1.0, 0.5, 0.0]
    assert summary["stop_reason"] == "no tweak left to try"


def test_time_budget_bounds_the_run(tmp_path, store):
    # it would sleep for an hour: the run ends only because the budget stops it
    slow = write(tmp_path, "slow.py", LOGISTIC.replace("import json, os", "import json, os, time\ntime.sleep(3600)"))
    summary = run_model(slow, RunOptions(threshold=0.99, time_budget=3), LocalRuntime(), store)
    assert summary["status"] == "failed"
    assert "timed out" in summary["attempts"][0]["error"]


def test_cli_json_and_exit_codes(tmp_path, cli):
    model = write(tmp_path, "logistic.py", LOGISTIC)
    result = cli("run", model, "--threshold", "0.9", "--json", "--runtime", "local")
    assert result.returncode == 0, result.stderr  # C×10 reaches 0.916 on the second attempt
    summary = json.loads(result.stdout)
    assert summary["status"] == "passed" and len(summary["attempts"]) == 2
    assert set(summary) >= {"status", "threshold", "metric", "best", "attempts", "run_id"}
    assert summary["attempts"][0]["n"] == 1 and "accuracy" in summary["attempts"][0]

    below = cli("run", model, "--threshold", "0.999", "--max-attempts", "1", "--json", "--runtime", "local")
    assert below.returncode == 3 and json.loads(below.stdout)["status"] == "below_threshold"

    shown = cli("show", str(summary["run_id"]), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["run_id"] == summary["run_id"]
    listed = cli("runs", "--json")
    below_id = json.loads(below.stdout)["run_id"]
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [below_id, summary["run_id"]]
    assert below_id > summary["run_id"]


def test_every_attempt_failing_exits_1(tmp_path, cli):
    broken = write(tmp_path, "broken.py",
                   LOGISTIC.replace("model.fit(X_train, y_train)", "model.fit(X_train, y_train[:3])"))
    result = cli("run", broken, "--max-attempts", "2", "--runtime", "local")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "missing.py"], "no such model file"),
    (["run", "{directory}"], "is a directory: give a model file"),
    (["run", "{readme}"], "not a Python file or notebook"),
    (["start", "{readme}"], "not a Python file or notebook"),
    (["run", "{model}", "--threshold", "95"], "--threshold 95: accuracy = 95 is outside its range [0, 1] "
                                              "(for 95%, give 0.95)"),
    (["run", "{model}", "--metric", "mse", "--threshold", "-1"], "--threshold -1: mse = -1 is outside its range"),
    (["run", "{model}", "--threshold", "nan"], "--threshold must be a finite number"),
    (["run", "{model}", "--max-attempts", "0"], "--max-attempts must be at least 1"),
    (["run", "{model}", "--data", "/no/such/dir"], "--data: no such directory"),
    (["run", "{model}", "--strategy", "grid"], "needs a search space"),
    (["run", "{model}", "--param", "oops"], "expected KEY=VALUE"),
    (["run", "{model}", "--min-delta", "-0.01"], "--min-delta must be a finite number, 0 or more"),
    (["run", "{model}", "--min-delta", "nan"], "--min-delta must be a finite number, 0 or more"),
    (["run", "{model}", "--min-delta", "inf"], "--min-delta must be a finite number, 0 or more"),
    (["run", "{model}", "--min-delta", "lots"], "--min-delta: invalid float value"),
    (["run", "{model}", "--space", "/no/such.json", "--strategy", "grid"], "cannot read"),
    (["run", "{notes}"], "unsupported model file"),
    (["show", "999"], "no run 999"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, cli, args, message):
    model = write(tmp_path, "logistic.py", LOGISTIC)
    notes = write(tmp_path, "notes.py", "# Conv2D would go here\nprint('hello')\n")
    readme = write(tmp_path, "README.md", "# A model\n\nRun `pushtune run model.py`.\n")
    result = cli(*[a.format(model=model, notes=notes, readme=readme, directory=tmp_path) for a in args])
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_optuna_searches_the_space_without_repeating_itself(tmp_path, store):
    model = write(tmp_path, "params.py", PARAMS_SCRIPT)
    space = {"alpha": [1.0, 0.5, 0.0], "C": [1, 5, 10]}
    options = RunOptions(threshold=0.99, max_attempts=10, strategy="optuna", space=space)
    summary = run_model(model, options, LocalRuntime(), store)
    points = [store.get_attempt(summary["run_id"], a["n"])["params"] for a in summary["attempts"]]
    assert points[0] == {"alpha": 1.0, "C": 1}  # as pushed, with its declared defaults
    assert all(p["alpha"] in space["alpha"] and p["C"] in space["C"] for p in points)
    assert len({(p["alpha"], p["C"]) for p in points}) == len(points)  # never the same twice
    assert summary["status"] == "passed" and points[-1] == {"alpha": 0.0, "C": 10}

    again = run_model(model, options, LocalRuntime(), store)  # replayed from the store: reproducible
    assert [store.get_attempt(again["run_id"], a["n"])["params"] for a in again["attempts"]] == points


LATIN1_MODEL = """\
# -*- coding: latin-1 -*-
import json, os
from sklearn.linear_model import LogisticRegression

word = "café"
print(f"word={word!r} len={len(word)}")
_ = LogisticRegression()
with open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "metrics.json"), "w") as f:
    json.dump({"accuracy": 1.0 if word == "caf\\u00e9" else 0.0}, f)
"""


def test_a_latin1_file_runs_with_its_text_intact(tmp_path, cli, pushtune_home):
    model = tmp_path / "latin1.py"
    model.write_bytes(LATIN1_MODEL.encode("latin-1"))

    completed = cli("run", model, "--runtime", "local", "--max-attempts", "1", "--json")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["attempts"][0]["accuracy"] == 1.0
    attempt = pushtune_home / "runs" / str(summary["run_id"]) / "attempt-1"
    assert "word='café' len=4" in (attempt / "log.txt").read_text(encoding="utf-8")
    assert (attempt / "model.py").read_text(encoding="utf-8").startswith("# -*- coding: utf-8 -*-\n")


KILLED_ONCE = """\
import json, os, signal
from sklearn.linear_model import LogisticRegression

out = os.environ["PUSHTUNE_OUTPUT"]
_ = LogisticRegression()
if not os.environ.get("PUSHTUNE_RESUME"):  # the first life dies as the OOM killer would kill it
    json.dump({"epoch": 2}, open(os.path.join(out, "progress.json"), "w"))
    os.kill(os.getpid(), signal.SIGKILL)
json.dump({"accuracy": 0.5}, open(os.path.join(out, "metrics.json"), "w"))
"""


def test_show_json_lists_each_restart_of_an_attempt(tmp_path, cli):
    model = write(tmp_path, "killed_once.py", KILLED_ONCE)
    ran = cli("run", model, "--runtime", "local", "--max-attempts", "1", "--threshold", "0.1")
    assert ran.returncode == 0, ran.stderr

    shown = cli("show", "1", "--json")

    assert shown.returncode == 0, shown.stderr
    (attempt,) = json.loads(shown.stdout)["attempts"]
    assert attempt["restarts"] == 1
    (restart,) = attempt["restart_events"]
    assert {k: restart[k] for k in ("reason", "exit_code", "resumed_epoch", "actor")} == {
        "reason": "killed by SIGKILL", "exit_code": -9, "resumed_epoch": 2, "actor": "run"}
    assert restart["at"] > 0
