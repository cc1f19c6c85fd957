"""jobs.autolog.for_sklearn: scripts as people write them, run by the launcher with real
scikit-learn, and what autolog.json says of them; the diagnosis read from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.model_selection import train_test_split

from jobs.tune.diagnosis import LOOSEN_MOVES, NO_CONVERGENCE_MOVES, REGULARISE_MOVES, Diagnosis, diagnose

ROOT = Path(__file__).resolve().parents[1]

SCRIPTS = {
    "logistic": """\
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split

        X, y = load_iris(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
        clf = LogisticRegression(max_iter=5)
        clf.fit(X_train, y_train)
        acc = clf.score(X_test, y_test)
        print(f"Accuracy = {acc * 100:.1f}%")
        """,
    "pipeline": """\
        from sklearn.datasets import load_iris
        from sklearn.metrics import accuracy_score
        from sklearn.model_selection import train_test_split
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        X, y = load_iris(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=1)
        pipe = Pipeline([("scale", StandardScaler()), ("svc", SVC(C=0.5))])
        pipe.fit(X_train, y_train)
        predictions = pipe.predict(X_test)
        print("Test accuracy:", accuracy_score(y_test, predictions))
        """,
    "search": """\
        import sklearn.metrics
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split

        X, y = load_iris(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
        grid = GridSearchCV(LogisticRegression(max_iter=1000), {"C": [0.01, 1.0]}, cv=3)
        grid.fit(X_train, y_train)
        print("best C:", grid.best_params_["C"])
        print("cv mean:", cross_val_score(LogisticRegression(max_iter=1000), X_train, y_train, cv=3).mean())
        print("f1:", sklearn.metrics.f1_score(y_test, grid.predict(X_test), average="macro"))
        """,
    "ridge": """\
        from sklearn.datasets import load_diabetes
        from sklearn.linear_model import Ridge
        from sklearn.metrics import mean_squared_error, r2_score
        from sklearn.model_selection import train_test_split

        X, y = load_diabetes(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
        model = Ridge(alpha=1.0).fit(X_train, y_train)
        pred = model.predict(X_test)
        r2 = r2_score(y_test, pred)
        print(f"R2: {r2}")
        print(f"MSE: {mean_squared_error(y_test, pred)}")
        """,
    "saved": """\
        import joblib
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import accuracy_score, make_scorer
        from sklearn.model_selection import cross_val_score


        class Model(LogisticRegression):
            def fit(self, X, y):
                return super().fit(X, y)


        X, y = load_iris(return_X_y=True)
        scores = cross_val_score(Model(max_iter=1000), X, y, cv=2, n_jobs=2, scoring=make_scorer(accuracy_score))
        print("cv accuracy:", scores.mean())
        clf = Model(max_iter=1000).fit(X, y)
        print("train accuracy:", clf.score(X, y))
        joblib.dump(clf, "clf.pkl")
        """,
}
UNCAPTURED = ("logistic", "search")  # run again with PUSHTUNE_AUTOLOG=0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Every script run by the launcher, all at once (each spends most of its time importing),
    each on one BLAS thread (they share two cores)."""
    started = {}
    for name, source in SCRIPTS.items():
        for autolog in ("1", "0") if name in UNCAPTURED else ("1",):
            folder = tmp_path_factory.mktemp(f"{name}{autolog}")
            (folder / "model.py").write_text(textwrap.dedent(source))
            env = {**os.environ, "PUSHTUNE_OUTPUT": str(folder / "out"), "PYTHONPATH": str(ROOT),
                   "PUSHTUNE_AUTOLOG": autolog, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
            process = subprocess.Popen([sys.executable, "-m", "jobs.launch", "model.py"], cwd=folder, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            started[name, autolog] = (folder, process)
    done = {}
    for key, (folder, process) in started.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        out = folder / "out"
        capture = json.loads((out / "autolog.json").read_text()) if (out / "autolog.json").exists() else None
        done[key] = {"stdout": stdout, "stderr": stderr, "out": out, "folder": folder, "capture": capture}
    return done


def line_of(name: str, text: str) -> int:
    return next(i for i, line in enumerate(textwrap.dedent(SCRIPTS[name]).splitlines(), 1) if text in line)


def iris_split(test_size: float, random_state: int):
    return train_test_split(*load_iris(return_X_y=True), test_size=test_size, random_state=random_state)


def test_a_fit_stopped_by_max_iter_its_score_and_the_model_pushtune_saves(runs):
    run = runs["logistic", "1"]
    capture = run["capture"]
    [metric] = capture["metrics"]
    assert metric["name"] == "accuracy" and metric["source"] == "LogisticRegression.score()"
    assert metric["line"] == line_of("logistic", "clf.score(")
    assert run["stdout"] == f"Accuracy = {metric['value'] * 100:.1f}%\n"
    training = capture["training"]["sklearn"]
    assert training["estimator"] == "LogisticRegression" and training["line"] == line_of("logistic", "clf.fit(")
    assert (training["n_iter"], training["max_iter"], training["converged"]) == (5, 5, False)
    assert training["convergence_warning"] is True
    assert training["params"]["max_iter"] == 5 and training["params"]["solver"] == "lbfgs"
    assert capture["frameworks"] == ["sklearn"]
    assert capture["artifact"]["file"] == "model.joblib" and "(LogisticRegression)" in capture["artifact"]["how"]

    model = joblib.load(run["out"] / "model.joblib")  # the script's model: the same scores, to the bit
    X_train, X_test, y_train, y_test = iris_split(0.2, 42)
    assert model.score(X_test, y_test) == metric["value"]
    assert capture["notes"]["sklearn"] == {"estimator": "LogisticRegression", "score_name": "accuracy",
                                           "train_score": model.score(X_train, y_train), "rows": 120}


def test_a_pipeline_is_one_fit_and_accuracy_score_the_metric(runs):
    run = runs["pipeline", "1"]
    capture = run["capture"]
    assert capture["metrics"] == [{"name": "accuracy", "value": float(run["stdout"].split()[-1]),
                                   "source": "accuracy_score()", "line": line_of("pipeline", "accuracy_score(y_test")}]
    training = capture["training"]["sklearn"]
    assert (training["estimator"], training["model"], training["params"]["C"]) == ("Pipeline", "SVC", 0.5)
    assert training["max_iter"] is None and training["converged"] is None  # SVC: max_iter=-1, no limit
    model = joblib.load(runs["pipeline", "1"]["out"] / "model.joblib")
    X_train, X_test, y_train, y_test = iris_split(0.3, 1)
    assert capture["notes"]["sklearn"]["train_score"] == model.score(X_train, y_train)


def test_only_the_search_the_script_fits_is_recorded_not_the_fits_inside(runs):
    run = runs["search", "1"]
    capture = run["capture"]
    training = capture["training"]["sklearn"]
    # cross_val_score's fits come after grid.fit: had they been recorded, they would be the last
    assert (training["estimator"], training["model"]) == ("GridSearchCV", "LogisticRegression")
    assert training["line"] == line_of("search", "grid.fit(") and training["converged"] is True
    assert training["params"]["C"] == float(run["stdout"].splitlines()[0].split()[-1])  # the best C
    f1 = float(run["stdout"].splitlines()[2].split()[-1])
    assert capture["metrics"] == [{"name": "f1", "value": f1, "source": "f1_score()",
                                   "line": line_of("search", "f1_score(")}]  # no score() from inside
    assert capture["notes"]["sklearn"]["score_name"] == "accuracy"


def test_a_regressor_scores_r2_and_its_errors_are_named_as_printed(runs):
    run = runs["ridge", "1"]
    capture = run["capture"]
    printed = [float(line.split()[-1]) for line in run["stdout"].splitlines()]
    assert [(m["name"], m["value"], m["source"], m["line"]) for m in capture["metrics"]] == [
        ("r2", printed[0], "r2_score()", line_of("ridge", "r2 = r2_score(")),
        ("mse", printed[1], "mean_squared_error()", line_of("ridge", "MSE")),
    ]
    training = capture["training"]["sklearn"]
    assert training["estimator"] == "Ridge" and training["params"]["alpha"] == 1.0
    X_train, _, y_train, _ = train_test_split(*load_diabetes(return_X_y=True), random_state=0)
    model = joblib.load(run["out"] / "model.joblib")
    assert capture["notes"]["sklearn"] == {"estimator": "Ridge", "train_score": model.score(X_train, y_train),
                                           "score_name": "r2", "rows": len(X_train)}


def test_the_scripts_own_save_is_the_artifact_and_its_own_class_is_left_as_written(runs):
    # Model and the accuracy_score in its scorer went to joblib's worker processes by pickle: the
    # class is not rewritten (cloudpickle copies it), the function pickles as sklearn.metrics'.
    run = runs["saved", "1"]
    capture = run["capture"]
    assert capture["artifact"]["file"] == "model.pkl" and "clf.pkl" in capture["artifact"]["how"]
    assert (run["out"] / "model.pkl").read_bytes() == (run["folder"] / "clf.pkl").read_bytes()
    assert not (run["out"] / "model.joblib").exists()
    training = capture["training"]["sklearn"]
    # LogisticRegression.fit, as Model.fit calls it: the line in the script that fitted it
    assert training["estimator"] == "Model" and training["line"] == line_of("saved", "return super().fit(")
    [metric] = capture["metrics"]  # none from cross_val_score's workers
    assert (metric["source"], metric["value"]) == ("Model.score()", float(run["stdout"].split()[-1]))


@pytest.mark.parametrize("name", UNCAPTURED)
def test_the_script_runs_the_same_without_autolog(runs, name):
    captured, plain = runs[name, "1"], runs[name, "0"]
    assert (captured["stdout"], captured["stderr"]) == (plain["stdout"], plain["stderr"])
    assert "[pushtune]" not in captured["stderr"]
    assert plain["capture"] is None


# --- diagnosis from the capture ---------------------------------------------------------------


def attempt_with(training: dict | None = None, notes: dict | None = None, metric_value: float = 0.8,
                 **extra) -> dict:
    capture = {"training": {"sklearn": training or {}}, "notes": {"sklearn": notes or {}}}
    return {"status": "ok", "metric_value": metric_value, "curve": None, "log": "", "capture": capture, **extra}


def sklearn_diagnosis(attempt: dict, metric: str = "accuracy", threshold: float = 0.9):
    return diagnose(attempt, metric, "max", "regression", threshold)


def test_the_captured_script_that_stopped_at_max_iter_did_not_converge(runs):
    capture = runs["logistic", "1"]["capture"]
    found = sklearn_diagnosis({"status": "ok", "metric_value": capture["metrics"][0]["value"], "curve": None,
                               "log": "", "capture": capture})
    assert found == Diagnosis("no convergence", "LogisticRegression stopped at max_iter=5 (n_iter_ 5)",
                              NO_CONVERGENCE_MOVES)


def test_a_convergence_warning_without_counts_is_no_convergence():
    found = sklearn_diagnosis(attempt_with({"model": "MLPClassifier", "convergence_warning": True}))
    assert found.problem == "no convergence" and "MLPClassifier" in found.evidence
    assert found.moves == NO_CONVERGENCE_MOVES


def test_a_train_score_well_above_the_test_metric_is_over_fitting():
    found = sklearn_diagnosis(attempt_with({"model": "SVC", "n_iter": 40, "max_iter": None},
                                           {"train_score": 1.0, "score_name": "accuracy"}, 0.82))
    assert found.problem == "over-fitting" and found.moves == REGULARISE_MOVES == ("c_div_10", "alpha_times_10")
    assert found.evidence == "SVC scores 1.000 accuracy on its training data, 0.820 on the test data"


def test_both_scores_low_is_under_fitting_and_a_good_fit_is_left_alone():
    low = sklearn_diagnosis(attempt_with({"model": "Ridge"}, {"train_score": 0.41, "score_name": "r2"}, 0.38),
                            metric="r2", threshold=0.6)
    assert low.problem == "under-fitting" and low.moves == LOOSEN_MOVES == ("c_times_10", "alpha_div_10")
    assert low.evidence == "Ridge scores 0.410 r2 on its training data too, 0.380 on the test data, short of 0.6"
    fine = sklearn_diagnosis(attempt_with({"model": "SVC"}, {"train_score": 0.95, "score_name": "accuracy"}, 0.91))
    assert fine.problem == "unclear"
    other_metric = sklearn_diagnosis(attempt_with({}, {"train_score": 1.0, "score_name": "accuracy"}, 0.5), metric="f1")
    assert other_metric.problem == "unclear"  # a training accuracy says nothing against an F1


@pytest.mark.parametrize("capture", [
    None, "autolog", [], {"training": []}, {"training": {"sklearn": "x"}, "notes": 3},
    {"training": {"sklearn": {"n_iter": "100", "max_iter": True, "converged": "no", "model": 7}}},
    {"notes": {"sklearn": {"train_score": float("nan"), "score_name": "accuracy"}}},
    {"notes": {"sklearn": {"train_score": 10 ** 400, "score_name": ["accuracy"]}}},
])
def test_a_malformed_capture_is_no_evidence(capture):
    attempt = {"status": "ok", "metric_value": 0.5, "curve": None, "log": "", "capture": capture}
    assert sklearn_diagnosis(attempt, threshold=0.4).problem == "unclear"
    log = sklearn_diagnosis({**attempt, "log": "ConvergenceWarning: lbfgs failed to converge"})
    assert log.evidence == "scikit-learn's ConvergenceWarning in the log"  # the log still speaks
