"""Property-based (Hypothesis): random bytes and random Python sources fed to what reads untrusted
input — `classify`, every tweak, the metric readers. None of them may raise anything but a
`UserError`, nor hang (pytest-timeout bounds each test)."""

from __future__ import annotations

import ast
import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from jobs.classify.classifier import classify_file, classify_source
from jobs.errors import UserError
from jobs.train.metrics import log_tail, read_curve, read_metrics
from jobs.tune.tweaks import TWEAK_NAMES, apply_tweak, declared_params, reads_params

KINDS = ("cnn", "ann", "regression", "unsupported")  # all the classifier may answer
FRAMEWORKS = ("keras", "pytorch", "sklearn", "none")

ROOT = Path(__file__).resolve().parent.parent
REAL_SOURCES = [path.read_text(encoding="utf-8") for path in sorted(
    [*ROOT.glob("models/*.py"), *(ROOT / "tests" / "fixtures" / "classify").rglob("*.py")])]

# What a mutation may put where a number was: extremes, other types, deep or long nesting.
REPLACEMENTS = [
    "0", "-1", "-0.0", "1e308", "1e-320", "1e999", "1" + "0" * 400, "9" * 4300, "1_000", "0x10", "0o7",
    "1j", "True", "None", "'text'", "[1, 2]", "x", "-" * 300 + "1", "(" * 150 + "1" + ")" * 150,
    " and ".join(["1"] * 300), "lambda: " * 2900 + "1", "[" * 60 + "1" + "]" * 60, "f'{1}'",
    "'a' 'b' " * 100 + "'c'", "1 if x else " * 200 + "1",
]
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated_sources(draw) -> str:
    """A real model file with up to four edits: a number replaced, a cut, text inserted, a line
    dropped or repeated."""
    source = draw(st.sampled_from(REAL_SOURCES))
    for _ in range(draw(st.integers(0, 4))):
        edit = draw(st.sampled_from(["number", "number", "cut", "insert", "drop", "repeat"]))
        if edit == "number" and (numbers := list(NUMBER.finditer(source))):
            found = draw(st.sampled_from(numbers))
            source = source[:found.start()] + draw(st.sampled_from(REPLACEMENTS)) + source[found.end():]
        elif edit in ("cut", "insert"):
            at = draw(st.integers(0, len(source)))
            inserted = draw(st.text(max_size=12)) if edit == "insert" else ""
            source = source[:at] + inserted + (source[at:] if edit == "insert" else "")
        elif edit in ("drop", "repeat") and (lines := source.splitlines(keepends=True)):
            n = draw(st.integers(0, len(lines) - 1))
            lines[n:n + 1] = [] if edit == "drop" else [lines[n]] * draw(st.integers(2, 50))
            source = "".join(lines)
    return source


CALL_LINE = (r"(from (keras|sklearn\.linear_model|jobs) import (layers|Dense|Ridge|SVC|kit)\n)?"
             r"[a-z]{1,3} = (kit\.params|Dense|Ridge|SVC|LogisticRegression|fit|Adam|compile)\("
             r"(([a-z_]{1,12}|C|lr)=(-?[0-9]{1,400}(\.[0-9]{0,3})?(e-?[0-9]{1,3})?|'adam'|None|True), ){0,4}\)\n")
SOURCES = st.one_of(mutated_sources(), st.text(max_size=300), st.from_regex(CALL_LINE, fullmatch=True))
PARAM_VALUES = st.one_of(st.integers(), st.integers(min_value=10**300, max_value=10**400), st.floats(),
                         st.booleans(), st.none(), st.text(max_size=5), st.lists(st.integers(), max_size=3))
PARAMS = st.dictionaries(
    st.one_of(st.sampled_from(["epochs", "EPOCHS", "learning_rate", "lr", "batch_size", "dense_layers",
                               "dense_width", "dropout", "C", "alpha", "max_iter"]), st.text(max_size=6)),
    PARAM_VALUES, max_size=4)


# --- classify -----------------------------------------------------------------------------------


def _check(result, path: str) -> None:
    assert result.path == path and result.kind in KINDS and result.framework in FRAMEWORKS and result.reason


@pytest.mark.timeout(120)
@FUZZ
@given(data=st.binary(max_size=4096))
@example(b"\xef\xbb\xbf# coding: latin-1\n")  # a BOM and another declared encoding
@example(b"# coding: utf-16\nx = 1\n")
@example(b"x = '" + b"\xff" * 100 + b"'\n")
def test_classify_file_takes_any_bytes(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.py"
        path.write_bytes(data)
        _check(classify_file(path), str(path))


@pytest.mark.timeout(120)
@FUZZ
@given(source=SOURCES)
@example("from sklearn.svm import SVC\nm = SVC()\nf = " + "lambda: " * 2900 + "1\n")  # the analyser recursed
def test_classify_takes_any_source(source):
    _check(classify_source(source, "model.py"), "model.py")


# --- tweaks -------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@FUZZ
@given(source=SOURCES, name=st.sampled_from(TWEAK_NAMES), params=PARAMS)
@example("from sklearn.svm import SVC\nm = SVC(C=1e308)\n", "c_times_10", {})
@example("from keras.layers import *\nm = Sequential([Input((2,)), base, Dense(1)])\n", "add_dropout", {})
@example("from jobs import kit\np = kit.params(epochs=" + "9" * 4300 + ")\n", "double_epochs", {})
@example("from jobs import kit\np = kit.params(dense_layers=" + "9" * 4300 + ")\n", "add_dense", {})
def test_every_tweak_takes_any_source_and_params(source, name, params):
    try:
        reads_params(source)
        declared_params(source)
        result = apply_tweak(name, source, params)
    except UserError:
        return
    if result is not None:
        ast.parse(result.source)  # a tweak never writes a file Python cannot run
        assert result.description and isinstance(result.params, dict)


# --- metric readers -----------------------------------------------------------------------------

METRIC_NAMES = st.one_of(st.sampled_from(["accuracy", "loss", "val_accuracy", "f1"]), st.text(max_size=8))
FILES = st.dictionaries(st.sampled_from(["metrics.json", "accuracy.txt", "history.json", "log.txt"]),
                        st.binary(max_size=2048), max_size=4)


def _read_all(files: dict[str, bytes], metric: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder)
        for name, data in files.items():
            (output / name).write_bytes(data)
        log = output / "log.txt"
        reported, missing = read_metrics(output, log, metric)
        assert isinstance(reported, dict) and (missing is None or isinstance(missing, str))
        assert missing is not None or metric in reported
        curve = read_curve(output)
        assert curve is None or isinstance(curve.get("history"), list)
        assert isinstance(log_tail(log), str)


@pytest.mark.timeout(120)
@FUZZ
@given(files=FILES, metric=METRIC_NAMES)
@example({"accuracy.txt": b"[/oops]"}, "accuracy")
@example({"metrics.json": b"[" * 100_000}, "accuracy")
@example({"log.txt": b"\xff\xfe accuracy: 0.9\n" * 3}, "accuracy")
def test_metric_readers_take_any_bytes(files, metric):
    _read_all(files, metric)


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@pytest.mark.timeout(120)
@FUZZ
@given(reported=st.dictionaries(st.one_of(METRIC_NAMES, st.just("accuracy")), JSON, max_size=5),
       metric=METRIC_NAMES)
def test_metric_readers_take_any_json_object(reported, metric):
    _read_all({"metrics.json": json.dumps(reported).encode(),
               "history.json": json.dumps({"history": [reported]}).encode()}, metric)


def test_metric_readers_take_an_integer_beyond_float_range(tmp_path):  # found fuzzing metrics.json
    _read_all({"metrics.json": b'{"accuracy": 1' + b"0" * 400 + b"}"}, "accuracy")
    (tmp_path / "metrics.json").write_bytes(b'{"accuracy": 1' + b"0" * 400 + b"}")
    _, missing = read_metrics(tmp_path, None, "accuracy")
    assert missing == "metrics.json has no finite number 'accuracy'"
