"""Deploying never runs the pushed script's code: real `pushtune run`s (local runtime, one in
Docker) whose winners are exported to ONNX inside the attempt, served by a real uvicorn server
through ONNX Runtime; hostile pickles and torch files that claim a high accuracy are registered
"not servable", never promoted, never loaded on the host, and the old version keeps serving."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris

from conftest import requires_engine
from jobs.deploy import versions
from jobs.store.run_store import RunStore
from test_serve import predict, serving

IRIS_X, IRIS_Y = load_iris(return_X_y=True)

IRIS = textwrap.dedent("""\
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from jobs import kit

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    joblib.dump(model, kit.output_dir() / "model.joblib")
    kit.report(accuracy=0.9)
""")

# Unpickling it opens (creates) the marker file: code of the script's choosing, run by the loader.
HOSTILE_PICKLE = textwrap.dedent("""\
    import pickle

    from sklearn.linear_model import LogisticRegression

    from jobs import kit

    model = LogisticRegression()  # never fitted: only the pickle below is "the model"

    class Payload:
        def __reduce__(self):
            return (open, ({marker!r}, "w"))

    with open(kit.output_dir() / "model.joblib", "wb") as handle:
        pickle.dump(Payload(), handle)
    kit.report(accuracy=0.999)
""")

HOSTILE_TORCH = textwrap.dedent("""\
    import torch

    from jobs import kit

    net = torch.nn.Linear(4, 3)  # never trained: only the file below is "the model"

    class Payload:
        def __reduce__(self):
            return (open, ({marker!r}, "w"))

    torch.save({{"model": Payload()}}, kit.output_dir() / "model.pt")
    kit.report(accuracy=0.999)
""")

STATE_DICT = textwrap.dedent("""\
    import torch
    from sklearn.datasets import load_iris
    from torch import nn

    from jobs import kit

    torch.manual_seed(0)
    X, y = load_iris(return_X_y=True)
    X, y = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(X), y)
        loss.backward()
        optimizer.step()
    torch.save(net.state_dict(), kit.output_dir() / "model.pt")  # weights only: needs the class to load
    kit.report(accuracy=float((net(X).argmax(1) == y).float().mean()))
""")

KERAS = textwrap.dedent("""\
    import keras
    from sklearn.datasets import load_iris

    from jobs import kit

    keras.utils.set_random_seed(0)
    X, y = load_iris(return_X_y=True)
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(X, y, epochs=3, batch_size=32, verbose=0)
    model.save(kit.output_dir() / "model.keras")
    kit.report(accuracy=0.9)
""")


def run_json(cli, script: Path, *args: str) -> dict:
    done = cli("run", script, "--runtime", "local", "--threshold", "0.5", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def home_store(pushtune_home, monkeypatch):
    def opened() -> RunStore:
        monkeypatch.setenv("PUSHTUNE_HOME", str(pushtune_home))
        return RunStore.open()

    return opened


def test_hostile_pickle_and_torch_files_never_load_and_the_old_version_keeps_serving(tmp_path, cli, home_store):
    marker = tmp_path / "payload-ran"
    good = tmp_path / "iris.py"
    good.write_text(IRIS)
    first = run_json(cli, good)
    assert first["deployment"]["status"] == "production" and first["deployment"]["version"] == 1
    for number, source in ((2, HOSTILE_PICKLE), (3, HOSTILE_TORCH)):
        hostile = tmp_path / f"hostile{number}.py"
        hostile.write_text(source.format(marker=str(marker)))
        taking = cli("run", hostile, "--runtime", "local", "--threshold", "0.5", "--name", "iris")
        assert taking.returncode == 2 and f"not hostile{number}.py: give another --name" in taking.stderr
        summary = run_json(cli, hostile, "--name", "iris", "--force")
        deployment = summary["deployment"]
        assert summary["status"] == "passed" and deployment["version"] == number
        assert deployment["status"] == "candidate" and deployment["production"] == 1
        assert deployment["reason"].startswith(f"v{number} is not servable: no ONNX form (")
        assert "file is never loaded by the server (loading it can run code)" in deployment["reason"]
        forced = cli("promote", summary["run_id"], "--force")
        assert forced.returncode == 2
        assert forced.stderr.startswith(f"pushtune: error: iris: not promoted: v{number} is not servable")
    listed = json.loads(cli("models", "--json").stdout)[0]
    assert listed["production"] == 1
    assert [v["served_as"].split(":")[0] for v in listed["versions"]] == ["onnx", "not servable", "not servable"]
    assert "not servable: no ONNX form" in cli("models").stdout
    assert not marker.exists()

    store = home_store()
    mail_line = versions.production_line(store, summary["run_id"])  # what the run's mail says
    assert mail_line is not None and mail_line.startswith(
        "iris v3 registered as a candidate, production stays v1: v3 is not servable: no ONNX form (")
    # an older pushtune (or a hand-edited store) made the hostile version production: the server refuses it
    store.change_production("iris", lambda versions: {"version": 2, "promote": True, "action": "promoted",
                                                      "reason": "forced behind pushtune's back"}, actor="test")
    with serving(store) as client:
        answer = predict(client, "iris", IRIS_X[:5].tolist())
        assert answer.status_code == 503 and "v2 is not servable: no ONNX form" in answer.json()["detail"]
    store.change_production("iris", lambda versions: {"version": 1, "promote": True, "action": "rolled_back",
                                                      "reason": "back"}, actor="test")
    with serving(store, poll=0.05) as client:
        answer = predict(client, "iris", IRIS_X[:5].tolist())
        assert answer.status_code == 200 and answer.json()["version"] == 1
        from sklearn.linear_model import LogisticRegression

        reference = LogisticRegression(max_iter=500).fit(IRIS_X, IRIS_Y).predict(IRIS_X[:5])
        assert answer.json()["predictions"] == reference.tolist()
        assert client.get("/models").json()[0]["framework"] == "onnx"
    assert not marker.exists()


def test_a_state_dict_model_is_served_from_the_onnx_made_in_its_attempt(tmp_path, cli, home_store):
    import torch

    script = tmp_path / "irisnet.py"
    script.write_text(STATE_DICT)
    summary = run_json(cli, script)
    assert summary["deployment"]["status"] == "production", summary["deployment"]
    store = home_store()
    record = store.get_model_version("irisnet", 1)
    assert versions.served_as(record) == "onnx" and record["onnx_sha256"] == versions.file_sha256(
        Path(record["onnx_path"]))
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    net.load_state_dict(torch.load(record["artifact_path"], weights_only=True))
    with torch.no_grad():
        reference = net(torch.tensor(IRIS_X[:32], dtype=torch.float32)).numpy()
    with serving(store) as client:
        answer = predict(client, "irisnet", IRIS_X[:32].tolist())
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(np.array(answer.json()["predictions"]), reference, rtol=1e-4, atol=1e-5)
        assert client.get("/models").json()[0]["input_shape"] == [4]


def test_a_keras_model_is_served_through_onnx_runtime(tmp_path, cli, home_store):
    import keras

    script = tmp_path / "iriskeras.py"
    script.write_text(KERAS)
    summary = run_json(cli, script)
    assert summary["deployment"]["status"] == "production", summary["deployment"]
    store = home_store()
    record = store.get_model_version("iriskeras", 1)
    assert versions.served_as(record) == "onnx"
    reference = keras.models.load_model(record["artifact_path"], safe_mode=True).predict(IRIS_X[:16], verbose=0)
    with serving(store) as client:
        answer = predict(client, "iriskeras", IRIS_X[:16].tolist())
        assert answer.status_code == 200 and answer.json()["version"] == 1
        np.testing.assert_allclose(np.array(answer.json()["predictions"]), reference, rtol=1e-4, atol=1e-5)
        assert client.get("/models").json()[0]["framework"] == "onnx"


@pytest.mark.docker
@requires_engine
def test_in_docker_the_export_runs_inside_the_container(tmp_path, cli, home_store):
    script = tmp_path / "iris.py"
    script.write_text(IRIS)
    done = cli("run", script, "--runtime", "docker", "--threshold", "0.5", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["deployment"]["status"] == "production", summary["deployment"]
    store = home_store()
    record = store.get_model_version("iris", 1)
    report = json.loads((Path(store.get_attempt(summary["run_id"], 1)["artifact_path"]).parent
                         / "served.json").read_text())
    assert report["ok"] is True and report["python"] == "/opt/venv/bin/python"  # the image's interpreter
    with serving(store) as client:
        answer = predict(client, "iris", IRIS_X[:3].tolist())
        assert answer.status_code == 200 and answer.json()["predictions"] == [0, 0, 0]
    assert versions.served_as(record) == "onnx"
