"""The diagnose strategy's decisions, on recorded histories (no training): which move, from
which attempt, and when it says that nothing is left."""

from __future__ import annotations

import textwrap

from jobs.tune.strategies import Candidate, DiagnoseStrategy, History, LadderStrategy, config_key

KERAS = textwrap.dedent("""\
    import keras
    model = keras.Sequential([
        keras.Input(shape=(64,)),
        keras.layers.Dense(3, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001), loss="sparse_categorical_crossentropy")
    model.fit(x, y, validation_data=(xv, yv), epochs=2, batch_size=32)
""")

LOGISTIC = textwrap.dedent("""\
    from sklearn.linear_model import LogisticRegression
    model = LogisticRegression(C=0.0001, max_iter=100).fit(x, y)
""")


def attempt(n: int, source: str, metric: float | None, *, parent: int | None = None, tweak: str | None = None,
            curve: dict | None = None, log: str = "", params: dict | None = None) -> dict:
    params = params or {}
    return {
        "n": n, "status": "ok" if metric is not None else "failed", "metric_value": metric,
        "parent": parent, "tweak_name": tweak, "tweak": tweak, "tweaks": [tweak] if tweak else [],
        "params": params, "config_key": config_key(source, params), "source": source,
        "curve": curve, "log": log, "metrics": {}, "error": None if metric is not None else "crashed",
    }


def history(kind: str, pushed: str, attempts: list[dict], threshold: float = 0.9) -> History:
    return History(kind=kind, mode="max", pushed_source=pushed, base_params={}, attempts=attempts,
                   metric="accuracy", threshold=threshold)


def grown(n: int, candidate: Candidate, metric: float | None, curve: dict | None = None) -> dict:
    return attempt(n, candidate.source, metric, parent=candidate.parent, tweak=candidate.tweak_name,
                   curve=curve, params=candidate.params)


def flat_curve(value: float, epochs: int = 6) -> dict:
    history = [{"epoch": i + 1, "loss": 1.0 + 0.5 / (i + 1) ** 3, "accuracy": value, "val_accuracy": value}
               for i in range(epochs)]
    return {"epochs": epochs, "steps": 40, "history": history}


def test_the_move_follows_the_diagnosis_and_says_why():
    past = [attempt(1, KERAS, 0.66, curve=flat_curve(0.66))]
    candidate = DiagnoseStrategy().next_candidate(history("ann", KERAS, past))
    assert candidate.tweak_name == "widen_dense" and candidate.parent == 1
    assert candidate.reason == "attempt 1: under-capacity: train accuracy flat at 0.660 by epoch 6"
    assert candidate.tweak.startswith("widen Dense 3 → 10")
    assert "keras.layers.Dense(10, activation=\"relu\")" in candidate.source


def test_a_move_within_one_test_example_of_its_parent_is_not_abandoned():
    # The face CNN: 2 → 4 epochs gave 8/120 against 9/120, but the training loss fell.
    def curve(epochs: int, accuracy: float) -> dict:
        history = [{"epoch": i + 1, "loss": 3.7 - 0.05 * i, "accuracy": 0.03 + 0.01 * i,
                    "val_accuracy": [3 / 120, 4 / 120, 9 / 120, 8 / 120][i] if i < 4 else accuracy}
                   for i in range(epochs)]
        return {"epochs": epochs, "steps": 9, "history": history}

    first = attempt(1, KERAS, 9 / 120, curve=curve(2, 9 / 120))
    doubled = DiagnoseStrategy().next_candidate(history("cnn", KERAS, [first]))
    assert doubled.tweak_name == "double_epochs"
    second = grown(2, doubled, 8 / 120, curve(4, 8 / 120))
    again = DiagnoseStrategy().next_candidate(history("cnn", KERAS, [first, second]))
    assert again.tweak_name == "double_epochs" and again.parent == 2
    assert "epochs 4 → 8" in again.tweak
    # today's ladder judged the same two attempts on the one number, and moved on
    assert LadderStrategy().next_candidate(history("cnn", KERAS, [first, second])).tweak_name != "double_epochs"


def test_it_goes_on_where_the_ladder_gives_up():
    first = attempt(1, LOGISTIC, 0.62)
    ladder, strategy = LadderStrategy(), DiagnoseStrategy()
    c_up = ladder.next_candidate(history("regression", LOGISTIC, [first]))
    second = grown(2, c_up, 0.80)
    c_up_again = ladder.next_candidate(history("regression", LOGISTIC, [first, second]))
    third = grown(3, c_up_again, 0.80)  # no better: the ladder moves on to max_iter
    more_iter = ladder.next_candidate(history("regression", LOGISTIC, [first, second, third]))
    fourth = grown(4, more_iter, 0.80)
    past = [first, second, third, fourth]
    assert ladder.next_candidate(history("regression", LOGISTIC, past)) is None  # "no tweak left"
    candidate = strategy.next_candidate(history("regression", LOGISTIC, past))
    assert candidate is not None and candidate.key not in {a["config_key"] for a in past}
    # C ×10 and ÷10 from the best attempt were both tried: the next move from it
    assert (candidate.parent, candidate.tweak_name) == (2, "max_iter_times_10")
    assert candidate.reason == "attempt 2: no training curve to read: next untried move"


def test_the_move_that_helped_is_repeated_from_the_best():
    first = attempt(1, LOGISTIC, 0.62)
    c_up = DiagnoseStrategy().next_candidate(history("regression", LOGISTIC, [first]))
    assert c_up.tweak_name == "c_times_10"
    second = grown(2, c_up, 0.80)
    again = DiagnoseStrategy().next_candidate(history("regression", LOGISTIC, [first, second]))
    assert (again.parent, again.tweak_name) == (2, "c_times_10")
    assert again.reason == "attempt 2: C ×10 helped at attempt 2 (0.62 → 0.8): again"


def test_it_says_nothing_is_left_only_when_every_move_from_every_attempt_was_tried():
    source = "import keras\nmodel.fit(x, y, batch_size=4)\n"  # only the batch size can change
    past = [attempt(1, source, 0.5)]
    strategy = DiagnoseStrategy()
    while (candidate := strategy.next_candidate(history("ann", source, past))) is not None:
        assert len(past) < 10, "it loops"
        past.append(grown(len(past) + 1, candidate, 0.5 - 0.1 * len(past)))
    sizes = sorted(int(a["source"].split("batch_size=")[1].split(")")[0]) for a in past)
    assert sizes == [1, 2, 4]


def test_a_failed_attempt_with_a_diverged_curve_is_built_on():
    curve = {"epochs": 3, "steps": 40, "history": [
        {"epoch": 1, "loss": 2.3, "accuracy": 0.1}, {"epoch": 2, "loss": None, "accuracy": 0.1},
        {"epoch": 3, "loss": None, "accuracy": 0.1}]}
    past = [attempt(1, KERAS, None, curve=curve)]
    candidate = DiagnoseStrategy().next_candidate(history("ann", KERAS, past))
    assert candidate.tweak_name == "divide_learning_rate_by_10"
    assert "0.001 → 0.0001" in candidate.tweak
    assert "diverged: loss is NaN or infinite at epoch 2" in candidate.reason
