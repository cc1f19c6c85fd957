"""`--strategy optuna` without `--space`: a search space derived from the script's kit.params
defaults, sampled reproducibly from the store's history, never repeating a configuration."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from jobs.loop import RunOptions, run_model
from jobs.store.run_store import RunStore
from jobs.train.runtime import LocalRuntime
from jobs.tune.strategies import History, OptunaStrategy, config_key, derived_space, first_candidate
from jobs.tune.tweaks import declared_params

ROOT = Path(__file__).resolve().parent.parent

KERAS_LIKE = textwrap.dedent("""\
    from jobs import kit

    p = kit.params(learning_rate=0.01, epochs=5, batch_size=64, C=1.0, activation="relu")
""")

LOGISTIC = textwrap.dedent("""\
    from jobs import kit
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    p = kit.params(C=0.0001)  # strongly regularised on purpose: the first attempt falls short
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=p["C"], max_iter=1000))
    model.fit(X_train, y_train)
    kit.report(accuracy=model.score(X_test, y_test))
""")

NOTHING_TUNABLE = textwrap.dedent("""\
    from jobs import kit
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    p = kit.params(solver="lbfgs", seed=0)  # nothing the optuna strategy knows how to search
    X, y = load_breast_cancer(return_X_y=True)
    model = LogisticRegression(solver=p["solver"], max_iter=5000).fit(X, y)
    kit.report(accuracy=model.score(X, y))
""")


def history(source: str, attempts: list[dict], **overrides) -> History:
    return History(kind=overrides.pop("kind", "ann"), mode="max", pushed_source=source,
                   base_params={**declared_params(source), **overrides}, attempts=attempts)


def attempt(n: int, source: str, params: dict, value: float | None, status: str = "ok") -> dict:
    """A store row as a strategy sees it (only the fields strategies read)."""
    return {"n": n, "params": params, "config_key": config_key(source, params), "status": status,
            "metric_value": value, "tweak_name": None if n == 1 else "optuna", "tweaks": [],
            "parent": None, "source": source, "log": ""}


def fake_metric(params: dict) -> float:
    """Better towards learning_rate 0.05 and more epochs: something for TPE to follow."""
    lr = params.get("learning_rate", 0.01)
    return round(1 / (1 + abs(lr - 0.05) * 10) - 1 / (1 + params.get("epochs", 5)), 6)


def explore(source: str, steps: int, metric=fake_metric, **strategy_options) -> tuple[History, list]:
    """Attempt 1 as pushed, then up to `steps` strategy candidates, each recorded as succeeded."""
    h = history(source, [])
    candidate = first_candidate(h)
    candidates = []
    for n in range(1, steps + 1):
        h.attempts.append(attempt(n, source, candidate.params, metric(candidate.params)))
        candidate = OptunaStrategy(**strategy_options).next_candidate(h)
        if candidate is None:
            break
        candidates.append(candidate)
    return h, candidates


def test_the_space_comes_from_the_declared_defaults():
    space = derived_space(KERAS_LIKE, declared_params(KERAS_LIKE))
    assert set(space) == {"learning_rate", "epochs", "batch_size", "C"}  # not the string
    lr, epochs, batch, c = space["learning_rate"], space["epochs"], space["batch_size"], space["C"]
    assert isinstance(lr, FloatDistribution) and lr.log
    assert (lr.low, lr.high) == pytest.approx((0.0001, 1.0))
    assert isinstance(c, FloatDistribution) and c.log and (c.low, c.high) == pytest.approx((0.01, 100.0))
    assert isinstance(epochs, IntDistribution) and epochs.log and (epochs.low, epochs.high) == (2, 80)
    assert isinstance(batch, CategoricalDistribution)
    assert batch.choices == (8, 16, 32, 64, 128, 256, 512)


def test_ints_stay_ints_and_undeclared_or_unsearched_params_keep_their_values():
    _, candidates = explore(KERAS_LIKE, 6)
    assert len(candidates) == 6
    for candidate in candidates:
        p = candidate.params
        assert isinstance(p["epochs"], int) and 2 <= p["epochs"] <= 80
        assert p["batch_size"] in (8, 16, 32, 64, 128, 256, 512)
        assert isinstance(p["learning_rate"], float) and 0.0001 <= p["learning_rate"] <= 1.0
        assert p["activation"] == "relu"
        assert candidate.source == KERAS_LIKE and candidate.tweak_name == "optuna"
        # what changed against the pushed defaults, floats to 4 significant digits
        assert candidate.tweak.startswith("set ") and candidate.tweak.endswith(" (parameter)")
        assert candidate.tweaks == [candidate.tweak]
        for number in re.findall(r"=([0-9.e+-]+)", candidate.tweak):
            assert len(number.split("e")[0].replace(".", "").lstrip("0")) <= 4


def test_an_int_rate_is_searched_as_ints_and_a_param_value_moves_the_space():
    source = "from jobs import kit\np = kit.params(C=1, max_iter=100, dense_layers=1, dropout=0.2)\n"
    space = derived_space(source, {**declared_params(source), "max_iter": 50})
    assert space["C"] == IntDistribution(1, 100, log=True)  # kit.params would cast 0.5 to int: refused
    assert space["max_iter"] == IntDistribution(50, 5000, log=True)
    assert space["dense_layers"] == IntDistribution(0, 3)
    assert space["dropout"] == FloatDistribution(0.0, 0.6)
    # a parameter set with --param but not declared by the script is not searched
    assert "epochs" not in derived_space(source, {**declared_params(source), "epochs": 5})


def test_the_strategy_is_deterministic_from_the_store():
    h, _ = explore(KERAS_LIKE, 4)
    first = OptunaStrategy().next_candidate(history(KERAS_LIKE, [dict(a) for a in h.attempts]))
    second = OptunaStrategy().next_candidate(history(KERAS_LIKE, [dict(a) for a in h.attempts]))
    assert first is not None and (first.params, first.tweak) == (second.params, second.tweak)

    # a fresh process (a Jenkins step) decides the same
    code = textwrap.dedent("""\
        import json, sys
        from jobs.tune.strategies import History, OptunaStrategy
        given = json.load(sys.stdin)
        h = History("ann", "max", given["source"], given["base"], given["attempts"])
        print(json.dumps(OptunaStrategy().next_candidate(h).params))
    """)
    given = {"source": KERAS_LIKE, "base": h.base_params, "attempts": h.attempts}
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(given), cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout) == first.params


def test_attempts_outside_the_space_and_failed_ones_are_left_out_of_the_study():
    source = "from jobs import kit\np = kit.params(C=1.0)\n"
    attempts = [attempt(1, source, {"C": 1.0}, 0.7), attempt(2, source, {"C": 1e9}, 0.99),
                attempt(3, source, {"C": 5.0}, None, status="failed")]
    candidate = OptunaStrategy().next_candidate(history(source, attempts))
    assert candidate is not None and 0.01 <= candidate.params["C"] <= 100.0
    assert candidate.key not in {a["config_key"] for a in attempts}


def test_it_never_repeats_a_configuration_and_stops_when_the_space_is_spent():
    _, candidates = explore(KERAS_LIKE, 15)
    keys = [config_key(KERAS_LIKE, declared_params(KERAS_LIKE))] + [c.key for c in candidates]
    assert len(candidates) == 15 and len(set(keys)) == len(keys)

    small = "from jobs import kit\np = kit.params(dense_layers=1)\n"  # 0..3: four configurations
    h, candidates = explore(small, 10, metric=lambda p: p["dense_layers"] / 10, max_asks=30)
    assert sorted(a["params"]["dense_layers"] for a in h.attempts) == [0, 1, 2, 3]
    assert len(candidates) == 3  # then None: the sampler only proposes what was tried


@pytest.fixture
def store(pushtune_home) -> RunStore:
    return RunStore.open()


def test_a_real_run_reaches_the_threshold_searching_the_declared_defaults(tmp_path, store):
    model = tmp_path / "logistic.py"
    model.write_text(LOGISTIC)
    options = RunOptions(threshold=0.95, max_attempts=8, strategy="optuna")
    summary = run_model(model, options, LocalRuntime(), store)
    assert summary["status"] == "passed", summary
    rows = store.attempts(summary["run_id"])
    assert rows[0]["params"] == {"C": 0.0001} and rows[0]["metric_value"] < 0.95
    assert all(0.000001 <= r["params"]["C"] <= 0.01 for r in rows)
    assert len({r["config_key"] for r in rows}) == len(rows)
    assert all(r["tweak"].startswith("set C=") for r in rows[1:])


def test_cli_refuses_optuna_without_space_when_nothing_is_tunable(tmp_path, cli):
    model = tmp_path / "plain.py"
    model.write_text(NOTHING_TUNABLE)
    result = cli("run", model, "--strategy", "optuna", "--runtime", "local")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--strategy optuna" in lines[0] and "--space" in lines[0]
    assert "Traceback" not in result.stderr

    grid = cli("run", model, "--strategy", "grid", "--runtime", "local")
    assert grid.returncode == 2 and "needs a search space" in grid.stderr
