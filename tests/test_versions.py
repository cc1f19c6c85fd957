"""Model versions: registration at the end of a passing run, the promotion rule (better, worse,
equal, another metric or mode, --force, --no-promote), rollback, who/when/why, and the CLI. The
store tests run on SQLite and PostgreSQL (`store_location`); the CLI ones run real `pushtune run`s."""

from __future__ import annotations

import json
import multiprocessing
import re
import shutil
import subprocess
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from jobs.deploy import versions
from jobs.deploy.served_form import file_sha256
from jobs.errors import UserError
from jobs.loop import RunOptions, finish_run, summarize
from jobs.store.run_store import RunStore


def constant_onnx(value: float, features: int = 4) -> bytes:
    """An ONNX model over `features` float inputs whose every prediction is `value` (an answer
    shows which model made it)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0),
         helper.make_node("Mul", ["total", "zero"], ["nothing"]),
         helper.make_node("Add", ["nothing", "value"], ["y"])],
        "constant", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
         helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
         helper.make_tensor("value", TensorProto.FLOAT, [], [value])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_export(output: Path, onnx_bytes: bytes | None, features: int = 4, reason: str = "") -> None:
    """What the attempt's ONNX export (jobs.autolog.to_onnx) leaves: served.onnx, its input
    sample and served.json; with no ONNX bytes, a report saying why there is none."""
    import numpy as np

    np.save(output / "served-sample.npy", np.zeros((3, features), dtype=np.float32), allow_pickle=False)
    if onnx_bytes is not None:
        (output / "served.onnx").write_bytes(onnx_bytes)
    (output / "served.json").write_text(json.dumps({"ok": onnx_bytes is not None, "reason": reason or None}))


def passing_run(store: RunStore, value: float, *, metric: str = "accuracy", mode: str = "max",
                model: str = "digits.py", name: str | None = None, promote: bool = True,
                threshold: float | None = None, artifact: str = "model.joblib", content: bytes | None = None,
                take_name: bool = False, onnx: bytes | None | bool = True) -> int:
    """A run whose one attempt scored `value` and saved a model file, finished by the loop's own
    finish_run (so registration goes through its real call site). `onnx`: the ONNX export the
    attempt left (True: a model predicting `value`; False: none)."""
    threshold = threshold if threshold is not None else (0.5 if mode == "max" else 10.0)
    options = RunOptions(threshold=threshold, metric=metric, mode=mode, name=name, promote=promote,
                         runtime="local", take_name=take_name)
    run_id = store.create_run(
        files={"pushed.py": f"# the pushed {model}\n"}, model_path=f"/nowhere/{model}", model_name=model,
        model_sha256="0" * 64, kind="regression", framework="sklearn", metric=metric, mode=mode,
        threshold=threshold, strategy="diagnose", runtime="local", options=asdict(options))
    run_dir = Path(store.get_run(run_id)["run_dir"])
    n = store.add_attempt(run_id, dir_of=lambda n: str(run_dir / f"attempt-{n}"), source_sha256="s",
                          config_key=f"k{run_id}", params={"C": value})
    output = run_dir / f"attempt-{n}" / "output"
    output.mkdir(parents=True)
    default = f"model of run {run_id} scoring {value}".encode()
    (output / artifact).write_bytes(content if content is not None else default)
    if onnx is not False:
        write_export(output, constant_onnx(value) if onnx is True else onnx or None)
    store.update_attempt(run_id, n, status="ok", metric_value=value, metrics={metric: value},
                         artifact_path=str(output / artifact), artifact_sha256=file_sha256(output / artifact),
                         finished_at=time.time(), seconds=1.0)
    summary = finish_run(store, run_id, "threshold met")
    assert summary["status"] == "passed"
    return run_id


def states(store: RunStore, name: str) -> dict[int, str]:
    return {v["version"]: v["status"] for v in store.model_versions(name)}


@pytest.fixture
def actor(monkeypatch):
    monkeypatch.setenv("PUSHTUNE_ACTOR", "ada")
    return "ada"


def test_a_passing_run_registers_version_1_and_it_becomes_production(store_location, tmp_path, actor):
    store = RunStore.open(store_location)
    run_id = passing_run(store, 0.95)
    [record] = store.model_versions("digits")
    assert (record["version"], record["status"], record["run_id"], record["attempt"]) == (1, "production", run_id, 1)
    assert record["reason"] == "no production version before it"
    assert (record["metric"], record["mode"], record["metric_value"], record["threshold"]) == (
        "accuracy", "max", 0.95, 0.5)
    assert record["params"] == {"C": 0.95} and record["runtime"] == "local" and record["kind"] == "regression"
    # the artifact is the version's own copy: deleting the run loses nothing
    copy = Path(record["artifact_path"])
    assert copy == tmp_path / "models" / "digits" / "v1" / "model.joblib"
    assert file_sha256(copy) == record["sha256"] == store.get_attempt(run_id, 1)["artifact_sha256"]
    assert (copy.parent / "pushed.py").read_text() == "# the pushed digits.py\n"
    shutil.rmtree(store.get_run(run_id)["run_dir"])
    assert copy.read_bytes().startswith(b"model of run")
    [event] = store.model_events("digits")
    assert (event["actor"], event["action"], event["version"], event["previous"]) == ("ada", "promoted", 1, None)
    assert event["at"] == pytest.approx(time.time(), abs=60)
    assert summarize(store, run_id)["deployment"] == {"name": "digits", "version": 1, "status": "production",
                                     "reason": "no production version before it", "production": 1}


def test_better_promotes_worse_and_equal_stay_candidates_with_the_reason(store_location, actor):
    store = RunStore.open(store_location)
    passing_run(store, 0.95)
    passing_run(store, 0.986)
    assert states(store, "digits") == {1: "retired", 2: "production"}
    assert store.get_model_version("digits", 2)["reason"] == "0.986 beats production v1's 0.95"
    assert store.get_model_version("digits", 1)["reason"] == "replaced by v2: 0.986 beats production v1's 0.95"
    worse = passing_run(store, 0.958)
    equal = passing_run(store, 0.986)
    assert states(store, "digits") == {1: "retired", 2: "production", 3: "candidate", 4: "candidate"}
    assert store.get_model_version("digits", 3)["reason"] == "0.958 does not beat production v2's 0.986"
    assert store.get_model_version("digits", 4)["reason"] == "0.986 does not beat production v2's 0.986"
    assert versions.production_line(store, worse) == (
        "digits v3 registered as a candidate, production stays v2: 0.958 does not beat production v2's 0.986")
    assert versions.deployment_of(store, equal)["status"] == "candidate"
    # mode min: lower is better
    passing_run(store, 0.30, metric="loss", mode="min", model="reg.py")
    passing_run(store, 0.25, metric="loss", mode="min", model="reg.py")
    passing_run(store, 0.40, metric="loss", mode="min", model="reg.py")
    assert states(store, "reg") == {1: "retired", 2: "production", 3: "candidate"}
    assert store.get_model_version("reg", 3)["reason"] == "0.4 does not beat production v2's 0.25"
    actions = [(e["version"], e["action"]) for e in store.model_events("digits")]
    assert actions == [(1, "promoted"), (2, "promoted"), (3, "kept"), (4, "kept")]


def test_a_different_metric_or_mode_is_never_promoted_automatically(store_location, actor):
    store = RunStore.open(store_location)
    passing_run(store, 0.90)
    f1 = passing_run(store, 0.99, metric="f1")
    passing_run(store, 0.01, metric="accuracy", mode="min", threshold=0.5)
    assert states(store, "digits") == {1: "production", 2: "candidate", 3: "candidate"}
    assert store.get_model_version("digits", 2)["reason"] == (
        "measured by f1 (max), production v1 by accuracy (max): not comparable, so not promoted automatically")
    assert "accuracy (min), production v1 by accuracy (max)" in store.get_model_version("digits", 3)["reason"]
    # the rule by hand says the same; --force promotes it
    assert versions.promote_run(store, f1).status == "candidate"
    assert states(store, "digits")[1] == "production"


def test_force_promotes_by_hand_and_records_who_when_and_why(store_location, actor, monkeypatch):
    store = RunStore.open(store_location)
    passing_run(store, 0.986)
    worse = passing_run(store, 0.958)
    kept = versions.promote_run(store, worse)  # the rule: still not better
    assert (kept.status, kept.version, kept.production) == ("candidate", 2, 1)
    assert "0.958 does not beat production v1's 0.986" in kept.describe()
    monkeypatch.setenv("PUSHTUNE_ACTOR", "grace")
    forced = versions.promote_run(store, worse, force=True, reason="the 0.986 one over-fits")
    assert (forced.status, forced.changed, forced.previous, forced.production) == ("production", True, 1, 2)
    assert states(store, "digits") == {1: "retired", 2: "production"}
    event = store.model_events("digits")[-1]
    assert (event["actor"], event["action"], event["version"], event["previous"]) == ("grace", "promoted", 2, 1)
    assert event["reason"] == ("promoted by hand with --force (0.958 does not beat production v1's 0.986): "
                               "the 0.986 one over-fits")
    assert versions.promote_run(store, worse).describe() == "digits v2 is production"  # nothing to do


def test_no_promote_registers_a_candidate_and_deploy_is_idempotent(store_location, actor):
    store = RunStore.open(store_location)
    first = passing_run(store, 0.9, promote=False, name="faces")
    assert states(store, "faces") == {1: "candidate"}
    assert store.get_model_version("faces", 1)["reason"] == versions.NO_PROMOTE
    events = len(store.model_events("faces"))
    for _ in range(2):  # the Jenkins deploy job after it: nothing changes, nothing is recorded again
        assert versions.deploy_run(store, first).status == "candidate"
    assert len(store.model_events("faces")) == events
    promoted = versions.promote_run(store, first)  # by hand: the rule, with no production version
    assert promoted.status == "production" and promoted.reason == "no production version before it"
    second = passing_run(store, 0.95, name="faces")
    assert states(store, "faces") == {1: "retired", 2: "production"}
    assert versions.deploy_run(store, second).describe() == "faces v2 is production"
    assert store.model_names() == ["faces"]  # --name, not the file's stem


@pytest.mark.parametrize("stems", [
    ("модель", "модель2", "μοντέλο", "模型", "model"),  # non-ASCII stems once all became `model`
    ("a" * 100 + "x", "a" * 100 + "y", "a" * 100),  # stems cut at 100 characters once met
    ("ann digits (2)", "ann-digits-2", "ann_digits_2", "ann digits 2", "ann-digits-2-"),
    ("café", "cafe", "cafe\u0301"),  # an accent, none, and a combining accent
])
def test_distinct_file_stems_get_distinct_readable_names(stems):
    names = [versions.default_name(f"{stem}.py") for stem in stems]
    assert len(set(names)) == len(names), names
    for stem, name in zip(stems, names, strict=True):
        assert versions.check_name(name) == name
        if versions.NAME_PATTERN.fullmatch(stem):
            assert name == stem  # a stem that is a valid name is kept as it is
        else:  # else readable (what ASCII it has) and marked by a hash of the whole stem
            assert re.fullmatch(r"[A-Za-z0-9._-]+-[0-9a-f]{10}", name), name
    assert versions.default_name("café.py").startswith("cafe-")
    assert versions.default_name("модель.py").startswith("model-")
    assert versions.default_name(("a" * 100 + "x") + ".py").startswith("a" * 80)


def test_a_name_registered_from_another_file_is_taken_only_with_force(store_location, actor):
    store = RunStore.open(store_location)
    passing_run(store, 0.90, model="digits.py")
    taker = passing_run(store, 0.99, model="other.py", name="digits")  # passes, but may not take the name
    assert states(store, "digits") == {1: "production"} and store.model_version_of_run(taker) is None
    [refused] = [e for e in store.model_events(run_id=taker) if e["action"] == "not_registered"]
    assert refused["reason"] == ("model name 'digits' is registered from digits.py, not other.py: give another "
                                 "--name, or --force to make other.py its new source")
    with pytest.raises(UserError, match="registered from digits.py, not other.py"):
        versions.promote_run(store, taker)
    forced = passing_run(store, 0.99, model="other.py", name="digits", take_name=True)
    assert states(store, "digits") == {1: "retired", 2: "production"}
    assert store.model_version_of_run(forced)["version"] == 2
    # other.py is the name's source now: its own runs register, digits.py needs --force in turn
    passing_run(store, 0.995, model="other.py", name="digits")
    back = passing_run(store, 0.999, model="digits.py")
    assert states(store, "digits") == {1: "retired", 2: "retired", 3: "production"}
    assert store.model_version_of_run(back) is None


def test_rollback_to_the_previous_production_version_then_no_earlier_one(store_location, actor):
    store = RunStore.open(store_location)
    passing_run(store, 0.90)
    passing_run(store, 0.95)
    passing_run(store, 0.93)  # a candidate: never production, so no rollback target
    passing_run(store, 0.97)
    assert states(store, "digits") == {1: "retired", 2: "retired", 3: "candidate", 4: "production"}
    back = versions.rollback(store, "digits", reason="latency regression")
    assert (back.version, back.status, back.previous, back.changed) == (2, "production", 4, True)
    assert states(store, "digits") == {1: "retired", 2: "production", 3: "candidate", 4: "retired"}
    assert store.get_model_version("digits", 4)["reason"] == "rolled back to v2: latency regression"
    event = store.model_events("digits")[-1]
    assert (event["action"], event["version"], event["previous"], event["actor"]) == ("rolled_back", 2, 4, "ada")
    assert event["reason"] == "rolled back: latency regression"
    versions.rollback(store, "digits")
    assert states(store, "digits")[1] == "production"
    with pytest.raises(UserError, match=r"digits: no earlier production version to roll back to \(v1 is the "
                                        r"first that was production\); --to VERSION picks any version"):
        versions.rollback(store, "digits")
    versions.rollback(store, "digits", to=4)  # --to: any version, forward too
    assert states(store, "digits") == {1: "retired", 2: "retired", 3: "candidate", 4: "production"}
    for kwargs, message in (({"to": 4}, "digits v4 is production already"), ({"to": 99}, "digits has no version 99")):
        with pytest.raises(UserError, match=message):
            versions.rollback(store, "digits", **kwargs)
    with pytest.raises(UserError, match=r"no model named 'nope' \(models: digits\)"):
        versions.rollback(store, "nope")


def test_a_rollback_with_no_earlier_version_is_a_clear_error(store_location):
    store = RunStore.open(store_location)
    passing_run(store, 0.9)
    with pytest.raises(UserError) as caught:
        versions.rollback(store, "digits")
    assert str(caught.value) == ("digits: no earlier production version to roll back to (v1 is the first that "
                                 "was production); --to VERSION picks any version")
    assert states(store, "digits") == {1: "production"}


def test_a_tampered_artifact_is_never_registered_nor_rolled_back_to(store_location, actor):
    store = RunStore.open(store_location)
    passing_run(store, 0.9)
    passing_run(store, 0.95)
    v1 = store.get_model_version("digits", 1)
    Path(v1["artifact_path"]).write_bytes(b"someone else's model")
    with pytest.raises(UserError, match=r"digits v1: .*model.joblib does not match its record \(sha256"):
        versions.rollback(store, "digits")
    assert states(store, "digits") == {1: "retired", 2: "production"}
    # an attempt's artifact changed after it was recorded: the run passes, nothing is registered
    original = store.attempts
    def tampering(run_id):
        for attempt in original(run_id):
            if attempt["artifact_path"] and Path(attempt["artifact_path"]).exists():
                Path(attempt["artifact_path"]).write_bytes(b"swapped")
            yield attempt
    store.attempts = lambda run_id: list(tampering(run_id))
    run_id = passing_run(store, 0.99)
    store.attempts = original
    assert states(store, "digits") == {1: "retired", 2: "production"}
    assert store.model_version_of_run(run_id) is None
    line = versions.production_line(store, run_id)
    assert line.startswith(f"not registered (run {run_id}: ") and "changed after attempt 1 recorded it" in line
    assert line.endswith("; digits v2 stays production")
    assert versions.deployment_of(store, run_id)["status"] == "not registered"


def _register_runs(location: str, count: int) -> None:
    store = RunStore.open(location)
    for i in range(count):
        passing_run(store, 0.5 + i / 100, promote=False)


def test_versions_are_numbered_without_gaps_when_registered_at_once(store_location, tmp_path):
    workers = [multiprocessing.Process(target=_register_runs, args=(store_location, 4)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert all(w.exitcode == 0 for w in workers)
    store = RunStore.open(store_location)
    records = store.model_versions("digits")
    assert [r["version"] for r in records] == list(range(1, 13))
    assert len({r["run_id"] for r in records}) == 12
    assert sorted(p.name for p in (tmp_path / "models" / "digits").iterdir()) == sorted(f"v{n}" for n in range(1, 13))
    for record in records:  # each directory holds its own run's model
        assert Path(record["artifact_path"]).read_bytes().startswith(f"model of run {record['run_id']} ".encode())


def test_a_run_that_did_not_pass_registers_nothing(store_location):
    store = RunStore.open(store_location)
    passing_run(store, 0.9)
    run_id = passing_run(store, 0.6, threshold=0.5)
    store.update_run(run_id, status="below_threshold")
    assert versions.deploy_run(store, run_id) is None
    other = store.create_run(model_path="/m/digits.py", model_name="digits.py", model_sha256="0" * 64,
                             kind="ann", framework="keras", metric="accuracy", mode="max", threshold=0.9,
                             strategy="diagnose", runtime="local", options={}, status="below_threshold")
    with pytest.raises(UserError, match=rf"run {other} did not pass \(below threshold\): only a passing run"):
        versions.promote_run(store, other)
    assert versions.production_line(store, other) == (
        "unchanged: digits v1 stays production (only a passing run registers a version)")


def test_names_are_checked_and_derived_from_the_file(monkeypatch):
    assert re.fullmatch(r"ann-digits-2-[0-9a-f]{10}", versions.default_name("ann digits (2).py"))
    assert re.fullmatch(r"model-[0-9a-f]{10}", versions.default_name("….py"))
    assert versions.default_name("ann_digits.py") == "ann_digits"
    for bad in ("", "a/b", "../x", "-x", "x" * 101, "a b"):
        with pytest.raises(UserError, match="model name"):
            versions.check_name(bad)
    monkeypatch.delenv("PUSHTUNE_ACTOR", raising=False)
    assert versions.actor({"BUILD_USER_ID": "jenkins-bob", "USER": "jenkins"}) == "jenkins-bob"
    assert versions.actor({"LOGNAME": "carol"}) == "carol" and versions.actor({}) == "unknown"


# --- the CLI, over real runs ---------------------------------------------------------------------

SCRIPT = textwrap.dedent("""\
    import joblib
    from sklearn.linear_model import Ridge

    from jobs import kit

    p = kit.params(score=0.9, alpha=1.0)
    model = Ridge(alpha=p["alpha"]).fit([[0.0], [1.0], [2.0]], [0.0, 1.0, 2.0])
    joblib.dump(model, kit.output_dir() / "model.joblib")
    kit.report(accuracy=p["score"])
""")


def test_the_run_summary_says_what_happened_to_production(tmp_path, cli):
    model = tmp_path / "ridge.py"
    model.write_text(SCRIPT)
    first = cli("run", model, "--runtime", "local", "--threshold", "0.5", "--param", "score=0.9")
    assert first.returncode == 0, first.stderr
    assert "production: ridge v1 became production: no production version before it" in first.stdout
    worse = cli("run", model, "--runtime", "local", "--threshold", "0.5", "--param", "score=0.8")
    assert ("production: ridge v2 registered as a candidate, production stays v1: "
            "0.8 does not beat production v1's 0.9") in worse.stdout
    unsaved = tmp_path / "unsaved.py"
    unsaved.write_text(SCRIPT.replace('joblib.dump(model, kit.output_dir() / "model.joblib")', ""))
    nothing = cli("run", unsaved, "--runtime", "local", "--threshold", "0.5", "--no-autolog")  # no model kept
    assert nothing.returncode == 0, nothing.stderr
    assert "production: not registered (run 3: attempt 1 saved no model file" in nothing.stdout
    history = cli("models", "--history").stdout  # a name that never registered is listed with why
    assert "unsaved: no version registered" in history
    assert "not registered: run 3: attempt 1 saved no model file" in history


def test_cli_run_promote_rollback_models_and_bad_input(tmp_path, cli):
    model = tmp_path / "ridge.py"
    model.write_text(SCRIPT)
    other = tmp_path / "other.py"
    other.write_text(SCRIPT)
    env = {"PUSHTUNE_ACTOR": "ada"}
    first = cli("run", model, "--runtime", "local", "--threshold", "0.5", "--param", "score=0.9", "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["deployment"]["status"] == "production"
    second = cli("run", model, "--runtime", "local", "--threshold", "0.5", "--param", "score=0.8",
                 "--no-promote", "--name", "ridge", "--json", env=env)
    run_id = json.loads(second.stdout)["run_id"]
    assert json.loads(second.stdout)["deployment"] == {
        "name": "ridge", "version": 2, "status": "candidate", "reason": versions.NO_PROMOTE, "production": 1}
    listed = json.loads(cli("models", "--json").stdout)
    assert [(m["name"], m["production"], [v["version"] for v in m["versions"]]) for m in listed] == [
        ("ridge", 1, [1, 2])]
    assert listed[0]["versions"][0]["sha256"] and listed[0]["versions"][1]["run_id"] == run_id
    text = cli("models").stdout
    assert "ridge: production v1" in text and "accuracy 0.8" in text
    kept = cli("promote", run_id, env=env)
    assert kept.returncode == 3
    assert kept.stdout.strip() == ("ridge v2 is a candidate: 0.8 does not beat production v1's 0.9; "
                                   "production stays v1")
    forced = cli("promote", run_id, "--force", "--reason", "smaller model", env=env)
    assert forced.returncode == 0 and forced.stdout.startswith("ridge: production is now v2 (was v1)")
    assert cli("deploy", run_id).returncode == 0
    back = cli("rollback", "ridge", env=env)
    assert back.returncode == 0
    assert back.stdout.strip() == "ridge: production is now v1 (was v2): rolled back"
    again = cli("rollback", "ridge", "--to", "v2", env=env)  # `v2` as `pushtune models` shows it, or `2`
    assert again.returncode == 0 and again.stdout.strip() == "ridge: production is now v2 (was v1): rolled back"
    assert cli("rollback", "ridge", "--to", "1", env=env).returncode == 0
    history = cli("models", "ridge", "--history").stdout
    assert "UTC  ada: rolled back v1 (was v2): rolled back" in history
    assert "│ accuracy 0.8000 │" in cli("models").stdout  # four decimals, as everywhere
    for args, message in (
        (("rollback", "ridge"), "pushtune: error: ridge: no earlier production version to roll back to"),
        (("rollback", "a/b"), "pushtune: error: model name 'a/b'"),
        (("rollback", "ridge", "--to", "7"), "pushtune: error: ridge has no version 7"),
        (("rollback", "ridge", "--to", "latest"), "pushtune rollback: error: argument --to: 'latest' is not a version"),
        (("promote", "12345"), "pushtune: error: no run 12345"),
        (("promote", "x"), "pushtune promote: error: argument RUN_ID: invalid int value"),
        (("models", "nope"), "pushtune: error: no model named 'nope' (models: ridge)"),
        (("run", model, "--name", "../up"), "pushtune: error: model name '../up'"),
        (("run", other, "--name", "ridge"),
         "pushtune: error: model name 'ridge' is registered from ridge.py, not other.py: give another --name, "
         "or --force to make other.py its new source"),
        (("serve", "--port", "70000"), "pushtune: error: --port 70000"),
    ):
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, (args, result.stderr)
    taken = cli("run", other, "--runtime", "local", "--threshold", "0.5", "--param", "score=0.95",
                "--name", "ridge", "--force", "--json", env=env)
    assert taken.returncode == 0, taken.stderr
    assert json.loads(taken.stdout)["deployment"] == {
        "name": "ridge", "version": 3, "status": "production",
        "reason": "0.95 beats production v1's 0.9", "production": 3}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}).stdout.strip()


def test_retrain_reruns_the_production_file_from_its_recorded_commit(tmp_path, cli):
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    model = repo / "models" / "ridge.py"
    model.write_text(SCRIPT)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "ridge")
    commit = git(repo, "rev-parse", "HEAD")
    first = cli("run", model, "--runtime", "local", "--threshold", "0.5", "--param", "score=0.9", "--json")
    assert first.returncode == 0, first.stderr
    [entry] = json.loads(cli("models", "--json").stdout)
    assert entry["versions"][0]["git_commit"] == commit and entry["versions"][0]["source_path"] == "models/ridge.py"
    model.write_text(SCRIPT.replace("score=0.9", "score=0.1"))  # uncommitted: the retrain must not see it
    retrained = cli("retrain", "--repo", repo, "--json", env={"PUSHTUNE_ACTOR": "cron"})
    assert retrained.returncode == 0, retrained.stderr
    assert f"ridge v1: retraining models/ridge.py @ {commit[:12]}" in retrained.stderr
    [result] = json.loads(retrained.stdout)
    assert (result["name"], result["retrained"], result["status"]) == ("ridge", 1, "passed")
    # the same score (0.9, as committed) does not beat production: a candidate with the reason
    assert result["production"] == ("ridge v2 registered as a candidate, production stays v1: "
                                    "0.9 does not beat production v1's 0.9")
    [entry] = json.loads(cli("models", "--json").stdout)
    v2 = entry["versions"][1]
    assert (v2["git_commit"], v2["source_path"], v2["status"]) == (commit, "models/ridge.py", "candidate")
    shown = json.loads(cli("show", str(result["run_id"]), "--json").stdout)
    assert Path(shown["report"]).parent.joinpath("pushed.py").read_text() == SCRIPT
    none = cli("retrain", "nope")
    assert none.returncode == 2 and "nope has no production version to retrain" in none.stderr


def test_the_mail_says_what_happened_to_production(store_location, actor):
    from notify.message import render_html, render_text
    from notify.summary import load_summary

    store = RunStore.open(store_location)
    first = passing_run(store, 0.95)
    better = passing_run(store, 0.986)
    worse = passing_run(store, 0.958)
    lines = {run_id: [line for line in render_text(load_summary(store, run_id)).splitlines()
                      if line.startswith("production:")] for run_id in (first, better, worse)}
    assert lines == {
        first: ["production:     digits v1 became production: no production version before it; "
                "now retired: replaced by v2: 0.986 beats production v1's 0.95"],
        better: ["production:     digits v2 became production (was v1): 0.986 beats production v1's 0.95"],
        worse: ["production:     digits v3 registered as a candidate, production stays v2: "
                "0.958 does not beat production v2's 0.986"],
    }
    html = render_html(load_summary(store, worse), "cid")
    assert "production</th>" in html and "0.958 does not beat production v2&#39;s 0.986" in html


def test_jenkins_deploy_and_retrain_jobs_are_thin_shells():
    import xml.etree.ElementTree as ET

    from jobs.ci.jenkins import render_jobs

    jobs = {name: ET.fromstring(xml) for name, xml in render_jobs().items()}
    notify_triggers = jobs["pushtune-notify"].findall(
        ".//hudson.plugins.parameterizedtrigger.BuildTriggerConfig")
    triggers = [(c.findtext("projects"), c.findtext("condition")) for c in notify_triggers]
    assert triggers == [("pushtune-deploy", "SUCCESS")]
    deploy = jobs["pushtune-deploy"]
    assert [c.text for c in deploy.findall("./builders/hudson.tasks.Shell/command")] == [
        'pushtune deploy "$RUN_ID"\npushtune results "$RUN_ID" --to pushtune-results\n']  # then archived
    retrain = jobs["pushtune-retrain"]
    assert retrain.findtext("./triggers/hudson.triggers.TimerTrigger/spec") == "H H * * 0"  # weekly
    assert [c.text for c in retrain.findall("./builders/hudson.tasks.Shell/command")] == [
        'pushtune retrain --repo . --runtime "$RUNTIME" --notify "$NOTIFY"']
    assert retrain.find("./scm").get("class") == "hudson.plugins.git.GitSCM"  # the commits to `git show`
    smtp = retrain.find(".//org.jenkinsci.plugins.credentialsbinding.impl.UsernamePasswordMultiBinding")
    assert smtp.findtext("passwordVariable") == "PUSHTUNE_SMTP_PASSWORD"


def test_a_passing_run_without_a_model_file_deploys_nothing_and_says_why(store_location, actor):
    store = RunStore.open(store_location)
    run_id = store.create_run(files={"pushed.py": "x = 1\n"}, model_path="/m/digits.py", model_name="digits.py",
                              model_sha256="0" * 64, kind="ann", framework="keras", metric="accuracy", mode="max",
                              threshold=0.5, strategy="diagnose", runtime="local", options={})
    run_dir = Path(store.get_run(run_id)["run_dir"])
    store.add_attempt(run_id, dir_of=lambda n: str(run_dir / f"attempt-{n}"), source_sha256="s", config_key="k")
    (run_dir / "attempt-1").mkdir()
    store.update_attempt(run_id, 1, status="ok", metric_value=0.9, seconds=1.0)
    assert finish_run(store, run_id, "threshold met")["status"] == "passed"  # registration never fails a run
    assert store.model_versions() == []
    assert versions.production_line(store, run_id) == (
        f"not registered (run {run_id}: attempt 1 saved no model file (model.keras, model.joblib, model.pt … "
        f"in $PUSHTUNE_OUTPUT): nothing to register); digits has no production version")
    with pytest.raises(versions.NothingToRegister):
        versions.deploy_run(store, run_id)
