"""PyTorch models end to end: the torch examples classified, trained and tuned past their
thresholds with the local runtime and in the torch image, a SIGKILLed training resumed from the
kit's checkpoint through the monitor, and more epochs warm-started from the parent's checkpoint.
Real training (torch on the CPU), real processes, containers and store; nothing is mocked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import docker
import pytest

from conftest import ROOT, requires_engine
from jobs.loop import RunOptions, attempt_spec, history_of, run_model, warm_start_epoch
from jobs.store.run_store import RunStore
from jobs.train import images, profiles
from jobs.train.runtime import LocalRuntime
from jobs.tune import diagnosis, tweaks
from jobs.tune.strategies import Candidate, History, LadderStrategy
from test_monitor import env_for, epoch_of, kill_training, monitor_once, wait_for


def _examples() -> dict[str, list[str]]:
    """`make run`'s examples (scripts/run_examples.py) and their options: the thresholds tested
    are the ones `make run` uses."""
    spec = importlib.util.spec_from_file_location("run_examples", ROOT / "scripts" / "run_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.EXAMPLES)


EXAMPLES = _examples()
TORCH_EXAMPLES = [("models/torch_digits_cnn.py", "cnn"), ("models/torch_digits_mlp.py", "ann")]
# What tunes each as pushed: the CNN has too few epochs, the MLP's SGD rate is far too high.
EXPECTED_FIRST_MOVE = {"models/torch_digits_cnn.py": "double_epochs",
                       "models/torch_digits_mlp.py": "divide_learning_rate_by_10"}
PYTORCH_TWEAKS = {name for name, t in tweaks.TWEAKS.items() if "pytorch" in t.rewrites}


def threshold_of(model: str) -> float:
    args = EXAMPLES[model]
    return float(args[args.index("--threshold") + 1])


def test_the_torch_examples_are_in_make_run_with_thresholds():
    for model, _ in TORCH_EXAMPLES:
        assert model in EXAMPLES and 0.8 <= threshold_of(model) < 1


# --- (a, b) each example tuned past its threshold: locally, then in the torch image ------------------


def check_tuned_run(result: subprocess.CompletedProcess, model: str, kind: str) -> tuple[dict, list[dict]]:
    """The `run --json` result of an example: passed, after PyTorch tweaks; (summary, attempts)."""
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    threshold = threshold_of(model)
    assert summary["kind"] == kind and summary["status"] == "passed", summary
    assert summary["best"]["accuracy"] >= threshold
    first, *tuned = summary["attempts"]
    assert first["tweak"] is None and first["accuracy"] < threshold  # under-trained as pushed
    assert tuned, "passed without tuning"

    store = RunStore.open()
    run = store.get_run(summary["run_id"])
    assert (run["kind"], run["framework"]) == (kind, "pytorch")
    attempts = store.attempts(run["id"])
    names = [a["tweak_name"] for a in attempts[1:]]
    assert names[0] == EXPECTED_FIRST_MOVE[model], [a["reason"] for a in attempts]
    assert set(names) <= PYTORCH_TWEAKS
    for attempt in attempts:
        assert attempt["status"] == "ok", attempt["error"]
        assert Path(attempt["artifact_path"]).name == "model.pt"
        curve = attempt["curve"]  # written by kit.torch_epoch_end, read as a Keras curve is
        assert curve["epochs"] == len(curve["history"]) and curve["steps"] == 22
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(curve["history"][-1])
    # the rewrites are the PyTorch ones, on this script's torch code
    described = " ".join(a["tweak"] for a in attempts[1:])
    if model.endswith("cnn.py"):
        assert "double epochs EPOCHS 3 → 6" in described
        warm = [a for a in attempts if a["warm_from"]]
        assert warm and all(a["tweak_name"] == "double_epochs" for a in warm)
        for a in warm:
            assert f"kit: resumed at epoch {a['warm_epoch']}" in (Path(a["dir"]) / "log.txt").read_text()
    else:
        assert "divide learning rate by 10 1.0 → 0.1" in described
        rewritten = (Path(attempts[1]["dir"]) / "model.py").read_text()
        assert "optim.SGD(model.parameters(), lr=0.1, momentum=0.9)" in rewritten
        assert attempts[1]["reason"].startswith("attempt 1: diverged: loss did not fall")
    return summary, attempts


@pytest.mark.slow
@pytest.mark.parametrize(("model", "kind"), TORCH_EXAMPLES)
def test_torch_example_is_tuned_past_its_threshold_locally(cli, pushtune_home, model, kind):
    classified = cli("classify", ROOT / model, "--json")
    assert classified.returncode == 0, classified.stderr
    assert '"framework": "pytorch"' in classified.stdout and f'"kind": "{kind}"' in classified.stdout

    result = cli("run", ROOT / model, "--runtime", "local", "--json", *EXAMPLES[model], timeout=300)
    check_tuned_run(result, model, kind)


@pytest.fixture(scope="session")
def torch_image() -> str:
    """The torch image, built now when missing or out of date (offline from the local base image
    when it is there), so no run of a test waits for it."""
    client = images.connect(timeout=None)
    try:
        return images.ensure_image("torch", client, echo=lambda text: None)
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.docker
@requires_engine
@pytest.mark.parametrize(("model", "kind"), TORCH_EXAMPLES)
def test_torch_example_is_tuned_past_its_threshold_in_the_torch_image(cli, pushtune_home, torch_image, model, kind):
    assert torch_image == f"pushtune/torch:{images.__version__}"
    result = cli("run", ROOT / model, "--runtime", "docker", "--keep", "--json", *EXAMPLES[model], timeout=600)
    client = docker.from_env(timeout=60)
    kept = client.containers.list(all=True, filters={"label": ["pushtune.role=train",
                                                               f"pushtune.model={Path(model).name}"]})
    kept = [c for c in kept if c.labels["pushtune.workdir"].startswith(str(pushtune_home.resolve()))]
    try:
        _, attempts = check_tuned_run(result, model, kind)
        ran_in = {c.labels["pushtune.workdir"]: c.image.tags for c in kept}  # every attempt, the torch image
        assert ran_in == {str(Path(a["dir"]).resolve()): [torch_image] for a in attempts}
    finally:
        for container in kept:
            container.remove(force=True, v=True)
        client.close()


# --- (c) a SIGKILLed PyTorch training resumes from its checkpoint through the monitor ----------------

SLOW_TORCH = textwrap.dedent("""\
    import time
    import torch
    from torch import nn
    from jobs import kit

    EPOCHS = 12
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    start = kit.torch_resume(model, optimizer)
    print(f"training starts at epoch {start}", flush=True)
    for epoch in range(start, EPOCHS):
        for i in range(0, 256, 64):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            loss.backward()
            optimizer.step()
        time.sleep(0.4)
        with torch.no_grad():
            accuracy = (model(x).argmax(1) == y).float().mean()
        kit.torch_epoch_end(epoch, model, optimizer, epochs=EPOCHS, steps=4, loss=loss, accuracy=accuracy)
    with torch.no_grad():
        kit.report(accuracy=float((model(x).argmax(1) == y).float().mean()))
    torch.save(model.state_dict(), kit.output_dir() / "model.pt")
""")

RUNTIMES = ["local", pytest.param("docker", marks=[requires_engine, pytest.mark.docker])]


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_killed_torch_training_resumes_from_its_checkpoint_through_the_monitor(tmp_path, request, runtime):
    if runtime == "docker":
        request.getfixturevalue("torch_image")
    home = tmp_path / "home"
    model = tmp_path / "slow_torch.py"
    model.write_text(SLOW_TORCH)
    driver = subprocess.Popen(
        [sys.executable, "-m", "jobs", "run", str(model), "--threshold", "0", "--max-attempts", "1",
         "--runtime", runtime],
        cwd=ROOT, env=env_for(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    attempt = home / "runs" / "1" / "attempt-1"
    wait_for(lambda: epoch_of(attempt / "output") >= 3, 240, "a checkpoint at epoch 3")
    driver.kill()
    driver.wait()
    kill_training(runtime, attempt)
    killed_at = epoch_of(attempt / "output")
    assert 3 <= killed_at < 12
    store = RunStore.open(home / "pushtune.db")
    assert store.get_run(1)["status"] == "running" and store.get_run(1)["framework"] == "pytorch"

    result = monitor_once(home)
    assert result.returncode == 0, result.stderr
    gone = "killed by SIGKILL" if runtime == "docker" else "training process gone"
    assert f"run 1 attempt 1: resumed ({gone}; from epoch {killed_at})" in result.stdout

    wait_for(lambda: store.get_run(1)["status"] != "running", 180, "the resumed run to end")
    run, row = store.get_run(1), store.get_attempt(1, 1)
    assert run["status"] == "passed" and row["status"] == "ok", row["error"]
    restarts = store.restarts(1, 1)
    assert len(restarts) == 1 and restarts[0]["actor"] == "monitor"
    assert restarts[0]["resumed_epoch"] == killed_at
    log = (attempt / "log.txt").read_text()
    assert "training starts at epoch 0" in log
    assert f"kit: resumed at epoch {killed_at}" in log and f"training starts at epoch {killed_at}" in log
    # one curve, every epoch once: the resumed training went on from the checkpoint, not from 0
    assert [e["epoch"] for e in row["curve"]["history"]] == list(range(1, 13))
    assert Path(row["artifact_path"]).name == "model.pt"


# --- (e) more epochs continue the parent's PyTorch training from its checkpoint ----------------------

TORCH_DIGITS = textwrap.dedent("""\
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from torch import nn
    from jobs import kit

    EPOCHS = 2
    torch.manual_seed(3)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    x_train, y_train, x_val, y_val = x[:1300], y[:1300], x[1300:], y[1300:]
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.002)
    start = kit.torch_resume(model, optimizer)
    for epoch in range(start, EPOCHS):
        model.train()
        order = torch.randperm(len(x_train))  # torch's global RNG: the checkpoint carries it
        for i in range(0, len(order), 100):
            batch = order[i:i + 100]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
        val_accuracy = (logits.argmax(1) == y_val).float().mean()
        kit.torch_epoch_end(epoch, model, optimizer, epochs=EPOCHS, steps=13, loss=loss,
                            val_loss=nn.functional.cross_entropy(logits, y_val), val_accuracy=val_accuracy)
    np.save(kit.output_dir() / "weights.npy", np.concatenate([p.detach().numpy().ravel() for p in model.parameters()]))
    np.save(kit.output_dir() / "optimizer.npy", np.concatenate(
        [v.numpy().ravel() for s in optimizer.state_dict()["state"].values() for v in s.values()]))
    kit.report(accuracy=float(val_accuracy))
""")


@pytest.mark.slow
def test_a_warm_started_torch_epoch_doubling_is_the_model_trained_from_scratch(tmp_path, pushtune_home):
    import numpy as np

    script = tmp_path / "torch_digits.py"
    script.write_text(TORCH_DIGITS)
    options = RunOptions(threshold=1.0, max_attempts=2, runtime="local")  # only a perfect score: two attempts
    summary = run_model(script, options, LocalRuntime(), RunStore.open())
    store = RunStore.open()
    first, second = store.attempts(summary["run_id"])
    assert second["tweak_name"] == "double_epochs" and "EPOCHS 2 → 4" in second["tweak"]
    assert (second["warm_from"], second["warm_epoch"]) == (1, 2)
    copied = Path(second["dir"]) / "output" / "checkpoints"
    assert sorted(p.name for p in copied.iterdir()) == ["torch.pt", "training_metadata.json"]
    assert "kit: resumed at epoch 2" in (Path(second["dir"]) / "log.txt").read_text()
    assert [e["epoch"] for e in second["curve"]["history"]] == [1, 2, 3, 4]
    assert second["curve"]["history"][:2] == first["curve"]["history"]

    # The same source trained from scratch, four epochs in one go: the same weights and Adam state.
    scratch = tmp_path / "scratch"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHTUNE_")}
    subprocess.run([sys.executable, str(Path(second["dir"]) / "model.py")], check=True, cwd=tmp_path,
                   env={**env, "PUSHTUNE_OUTPUT": str(scratch), "PYTHONPATH": str(ROOT)}, timeout=300)
    warm = Path(second["dir"]) / "output"
    for name in ("weights.npy", "optimizer.npy"):
        assert np.array_equal(np.load(warm / name), np.load(scratch / name)), name
    assert json.loads((scratch / "metrics.json").read_text())["accuracy"] == second["metric_value"]


def _torch_parent(tmp_path: Path, weights: str | None) -> dict:
    output = tmp_path / "attempt-1" / "output"
    (output / "checkpoints").mkdir(parents=True)
    if weights:
        (output / "checkpoints" / weights).write_bytes(b"state")
    (output / "checkpoints" / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    (tmp_path / "attempt-1" / "model.py").write_text("EPOCHS = 2\n")
    return {"n": 1, "status": "ok", "dir": str(tmp_path / "attempt-1"), "params": {},
            "curve": {"epochs": 2, "steps": 10, "history": [{"epoch": 1}, {"epoch": 2}]}}


def test_warm_start_takes_the_kits_torch_checkpoint(tmp_path):
    more_epochs = Candidate("EPOCHS = 4\n", {}, "double_epochs", parent=1)
    assert warm_start_epoch(_torch_parent(tmp_path / "a", "torch.pt"), more_epochs) == 2
    assert warm_start_epoch(_torch_parent(tmp_path / "b", None), more_epochs) is None
    assert warm_start_epoch(_torch_parent(tmp_path / "c", "other.pt"), more_epochs) is None


# --- the profile downstream: runtime spec, strategies, diagnosis --------------------------------------


def test_a_torch_runs_spec_and_history_carry_its_profile(tmp_path, pushtune_home):
    script = tmp_path / "torch_digits.py"
    script.write_text(TORCH_DIGITS)
    summary = run_model(script, RunOptions(threshold=0.0, max_attempts=1, runtime="local"), LocalRuntime(),
                        RunStore.open())
    store = RunStore.open()
    run = store.get_run(summary["run_id"])
    spec = attempt_spec(store, run, store.attempts(run["id"])[0])
    assert (spec.kind, spec.framework) == ("ann", "pytorch")
    assert spec.profile is profiles.get("ann", "pytorch") and spec.profile.image == "torch"
    assert images.image_tag(spec.profile) == f"pushtune/torch:{images.__version__}"
    assert history_of(store, run).framework == "pytorch"


MLP_SGD = textwrap.dedent("""\
    import torch
    from torch import nn, optim

    EPOCHS = 3
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    for epoch in range(EPOCHS):
        pass
""")


def _attempt(source: str, metric: float) -> dict:
    from jobs.tune.strategies import config_key

    return {"n": 1, "status": "ok", "metric_value": metric, "parent": None, "tweak_name": None,
            "tweak": None, "tweaks": [], "params": {}, "config_key": config_key(source, {}),
            "source": source, "curve": None, "log": "", "metrics": {}, "error": None}


def test_the_ladder_strategy_climbs_the_pytorch_ladder():
    assert tweaks.ladder_of("ann", "pytorch") == tweaks.PROFILE_LADDERS[("ann", "pytorch")]
    assert tweaks.ladder_of("ann", "pytorch")[:3] == ("double_epochs", "use_adam", "multiply_learning_rate_by_10")
    history = History("ann", "max", MLP_SGD, {}, [_attempt(MLP_SGD, 0.5)], framework="pytorch")
    seen = []
    for n in range(2, 5):
        candidate = LadderStrategy().next_candidate(history)
        seen.append(candidate.tweak_name)
        attempt = {**_attempt(candidate.source, 0.4), "n": n, "parent": 1, "tweak_name": candidate.tweak_name}
        history.attempts.append(attempt)  # none helped: the next rung each time
    assert seen == ["double_epochs", "use_adam", "multiply_learning_rate_by_10"]
    # without the framework the kind's (Keras) ladder is climbed: add_dense comes first there
    keras_order = LadderStrategy().next_candidate(History("ann", "max", MLP_SGD, {}, [_attempt(MLP_SGD, 0.5)]))
    assert keras_order.tweak_name == "add_dense"


def test_diagnosis_falls_back_to_the_pytorch_moves():
    moves = diagnosis.moves_for("cnn", "pytorch")
    assert moves[:3] == ("use_adam", "double_epochs", "multiply_learning_rate_by_10") and "use_sgd" in moves
    assert set(moves) <= PYTORCH_TWEAKS
    assert diagnosis.moves_for("ann", "keras") == diagnosis.moves_for("ann") == diagnosis.FALLBACK_MOVES["keras"]
    assert diagnosis.moves_for("regression", "sklearn") == diagnosis.FALLBACK_MOVES["regression"]
    assert "use_adam" not in diagnosis.moves_for("cnn", "keras")


def test_the_chain_builds_the_image_of_each_files_profile(monkeypatch, pushtune_home):
    from jobs import steps

    wanted: list[str] = []
    monkeypatch.setattr(steps, "build_image", wanted.append)  # which images, not the build itself
    files = [ROOT / "models/torch_digits_cnn.py", ROOT / "models/torch_digits_mlp.py", ROOT / "models/ann_digits.py"]
    started, _ = steps.start_runs(RunStore.open(), files, RunOptions(runtime="docker"), with_image=True)
    assert wanted == ["torch", "ann"]  # once per image, in the order of the files
    frameworks = [RunStore.open().get_run(s.run_id)["framework"] for s in started]
    assert frameworks == ["pytorch", "pytorch", "keras"]


@pytest.mark.docker
@requires_engine
def test_start_with_build_image_makes_the_torch_image_current(cli, pushtune_home):
    result = cli("start", ROOT / "models/torch_digits_cnn.py", "--runtime", "docker", "--build-image", timeout=900)
    assert result.returncode == 0, result.stderr
    assert RunStore.open().get_run(int(result.stdout))["framework"] == "pytorch"
    client = images.connect()
    try:
        assert images.is_current(client, "cnn/pytorch")
    finally:
        client.close()
