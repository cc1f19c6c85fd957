"""`pushtune serve`: uvicorn on 127.0.0.1 with an ephemeral port and real HTTP requests (httpx).

Models are trained here, quickly, and exported to ONNX as an attempt does: scikit-learn on iris,
a torch net; a tiny Keras Dense net on digits is served from its .keras file in safe mode. Pickles
and torch files are never loaded. Bad input, unknown models, models that cannot load, a tampered
artifact, /metrics, and hot reload under load: 2,000 requests or more from 8 threads while
production is promoted and rolled back 10 times, with zero failures and every answer carrying a
version the server had read as production. Hardening: idle, half-sent and trickling connections
closed, oversized bodies refused, hostile numbers and nesting 4xx, the bearer token, and
predictions answered while the run store is locked. Ordering is by events (a model held in
flight, the server's /models showing what it read), never by sleeps."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression

from jobs.deploy import versions
from jobs.serve import server as serve
from jobs.serve.server import create_app, listen
from jobs.store.run_store import RunStore
from test_versions import constant_onnx, passing_run

ROOT = Path(__file__).resolve().parent.parent
IRIS_X, IRIS_Y = load_iris(return_X_y=True)


def iris_onnx(model) -> bytes:
    from skl2onnx import to_onnx

    return to_onnx(model, IRIS_X[:1].astype(np.float32)).SerializeToString()


def constant(version: float) -> bytes:
    """A model over 4 features whose every prediction is `version`: an answer shows which model made it."""
    return constant_onnx(version)


def force_production(store: RunStore, name: str, version: int) -> None:
    """Make a version production behind pushtune's back (as an older pushtune or a hand-edited
    store could): the server must refuse what it cannot load safely."""
    store.change_production(name, lambda versions: {"version": version, "promote": True, "action": "promoted",
                                                    "reason": "by hand"}, actor="test")




@pytest.fixture(scope="module")
def iris_model() -> LogisticRegression:
    return LogisticRegression(max_iter=500).fit(IRIS_X, IRIS_Y)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    digits = load_digits()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(digits.data / 16.0, digits.target, epochs=2, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory) -> dict[str, Path]:
    """A torch net: pickled whole, as a state_dict, and as the ONNX an attempt exports."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    where = tmp_path_factory.mktemp("torch")
    torch.save(net, where / "whole.pt")
    torch.save(net.state_dict(), where / "weights.pt")
    torch.onnx.export(net, (torch.zeros(2, 4),), str(where / "net.onnx"), dynamo=False, input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}})
    return {"whole": where / "whole.pt", "weights": where / "weights.pt", "onnx": where / "net.onnx"}


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    monkeypatch.setenv("PUSHTUNE_ARTIFACTS", str(tmp_path))
    monkeypatch.setenv("PUSHTUNE_ACTOR", "tester")
    return RunStore.open(tmp_path / "s.db")


@contextmanager
def serving(store: RunStore, poll: float = 0.2, *, token: str = "", read_timeout: float = serve.READ_TIMEOUT,
            connections: int | None = None):
    """The app under uvicorn on 127.0.0.1, an ephemeral port, in a thread, configured as `pushtune
    serve` configures it; yields an httpx client."""
    app = create_app(store, poll=poll, token=token, read_timeout=read_timeout)
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(serve.server_config(app, read_timeout=read_timeout, connections=connections))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = sock.getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"authorization": f"Bearer {token}"} if token else None) as client:
            client.model_host = app.state.host  # type: ignore[attr-defined]  # to make the poll read now
            yield client
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def predict(client: httpx.Client, name: str, instances) -> httpx.Response:
    return client.post(f"/models/{name}/predict", json={"instances": instances})


def until_production(client: httpx.Client, name: str, version: int) -> None:
    """Wait until the server has read that `version` of `name` is production (its poll ran)."""
    deadline = time.monotonic() + 60
    while {m["name"]: m["production"] for m in client.get("/models").json()}.get(name) != version:
        assert time.monotonic() < deadline, f"the server never saw {name} v{version} become production"
        time.sleep(0.02)


def test_serves_onnx_and_keras_models(store, iris_model, keras_file, torch_files):
    import keras
    import torch

    passing_run(store, 0.97, model="iris.py", onnx=iris_onnx(iris_model))
    passing_run(store, 0.9, model="digits.py", artifact="model.keras", content=keras_file.read_bytes(), onnx=False)
    passing_run(store, 0.9, model="torchnet.py", artifact="model.pt", content=torch_files["whole"].read_bytes(),
                onnx=torch_files["onnx"].read_bytes())
    digits = load_digits().data[:32] / 16.0
    with serving(store) as client:
        assert client.get("/health").json() == {
            "status": "ok", "models": {"digits": 1, "iris": 1, "torchnet": 1}, "problems": {}}
        listed = {m["name"]: m for m in client.get("/models").json()}
        assert {n: (m["production"], m["version"], m["framework"], m["input_shape"]) for n, m in listed.items()} == {
            "digits": (1, 1, "keras", [64]), "iris": (1, 1, "onnx", [4]), "torchnet": (1, 1, "onnx", [4])}
        one = predict(client, "iris", IRIS_X[:1].tolist())
        assert one.status_code == 200, one.text
        assert one.json() == {"predictions": iris_model.predict(IRIS_X[:1]).tolist(), "version": 1}
        batch = predict(client, "iris", IRIS_X[:32].tolist()).json()
        assert batch["predictions"] == iris_model.predict(IRIS_X[:32]).tolist()
        answer = predict(client, "digits", digits.tolist()).json()
        expected = keras.models.load_model(keras_file).predict(digits.astype("float32"), verbose=0)
        assert answer["version"] == 1 and np.allclose(answer["predictions"], expected, atol=1e-5)
        net = torch.load(torch_files["whole"], weights_only=False)
        with torch.no_grad():
            reference = net(torch.tensor(IRIS_X[:32], dtype=torch.float32)).numpy()
        got = predict(client, "torchnet", IRIS_X[:32].tolist()).json()
        assert got["version"] == 1 and np.allclose(got["predictions"], reference, atol=1e-5)


@pytest.mark.parametrize("body, status, says", [
    (b"{not json", 400, "the body is not JSON"),
    (b"[1, 2]", 422, 'expected a JSON object {"instances": [[…], …]} (each instance of shape (4,))'),
    (b'{"rows": [[1, 2, 3, 4]]}', 422, 'expected a JSON object {"instances"'),
    (b'{"instances": []}', 422, "instances must be a non-empty list of instances (each instance of shape (4,))"),
    (b'{"instances": "1,2,3,4"}', 422, "instances must be a non-empty list"),
    (b'{"instances": [1, 2, 3, 4]}', 422,
     "each instance must be a list of numbers (each instance of shape (4,)); got int"),
    (b'{"instances": [[1, 2]]}', 422, "expected instances of shape (4,); got (2,) (1 instance)"),
    (b'{"instances": [[[1, 2, 3, 4]]]}', 422, "expected instances of shape (4,); got (1, 4) (1 instance)"),
    (b'{"instances": [[1, 2, 3, 4], [1, 2]]}', 422, "instances must be rectangular"),
    (b'{"instances": [["1", 2, 3, 4]]}', 422, 'instances must hold numbers, not text ("1")'),
    (b'{"instances": [[true, 2, 3, 4]]}', 422, "instances must hold numbers, not true/false"),
    (b'{"instances": [[null, 2, 3, 4]]}', 422, "instances must hold numbers, not null"),
    (b'{"instances": [[NaN, 2, 3, 4]]}', 422, "instances must hold finite numbers"),
])
def test_bad_input_gets_400_or_422_saying_what_was_expected(store, iris_model, body, status, says):
    passing_run(store, 0.97, model="iris.py", onnx=iris_onnx(iris_model))
    with serving(store) as client:
        answer = client.post("/models/iris/predict", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == status
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["detail"].startswith(says), answer.json()


def test_unknown_models_are_404_and_a_model_that_cannot_load_is_503(store, iris_model, torch_files):
    passing_run(store, 0.97, model="iris.py", onnx=iris_onnx(iris_model))
    passing_run(store, 0.9, model="weights.py", artifact="model.pt", content=torch_files["weights"].read_bytes(),
                onnx=False)
    passing_run(store, 0.9, model="whole.py", artifact="model.pt", content=torch_files["whole"].read_bytes(),
                onnx=False)
    passing_run(store, 0.9, model="broken.py", onnx=b"not an ONNX model at all")
    passing_run(store, 0.9, model="waiting.py", promote=False, onnx=iris_onnx(iris_model))
    for name in ("weights", "whole", "broken"):  # none serves, so none was promoted: made production by hand
        assert store.get_model_version(name, 1)["status"] == "candidate"
        force_production(store, name, 1)
    with serving(store) as client:
        for name, says in (("nope", "no model named 'nope' (served: broken, iris, waiting"),
                           ("waiting", "waiting has no production version (promote one: pushtune promote RUN_ID)"),
                           ("-x", "no model named '-x'")):
            answer = predict(client, name, [[1, 2, 3, 4]])
            assert (answer.status_code == 404
                    and answer.json()["detail"].startswith(says.replace(", waiting", ""))), answer.json()
        assert client.get("/no/such/page").json() == {"detail": "Not Found"}
        assert client.get("/models/iris/predict").status_code == 405
        for name in ("weights", "whole"):  # a torch file is never loaded: no torch.load on the server
            answer = predict(client, name, [[1, 2, 3, 4]])
            assert answer.status_code == 503
            assert answer.json()["detail"] == (
                f"{name}: v1 is not servable: no ONNX form (the attempt left no ONNX export), and its .pt file "
                f"is never loaded by the server (loading it can run code)")
        broken = predict(client, "broken", [[1, 2, 3, 4]])
        assert broken.status_code == 503 and "onnx cannot load served.onnx" in broken.json()["detail"]
        health = client.get("/health").json()
        assert health["status"] == "degraded" and set(health["problems"]) == {"weights", "whole", "broken"}
        assert predict(client, "iris", [[1, 2, 3, 4]]).status_code == 200  # the others serve on


def test_a_tampered_artifact_is_refused_and_the_old_version_keeps_serving(store, tmp_path):
    passing_run(store, 0.90, model="const.py", onnx=constant(1.0))
    second = passing_run(store, 0.80, model="const.py", onnx=constant(2.0))
    with serving(store, poll=3600) as client:  # the poll reads when the test says so
        assert predict(client, "const", [[0, 0, 0, 0]]).json() == {"predictions": [1.0], "version": 1}
        versions.promote_run(store, second, force=True)
        v2 = Path(store.get_model_version("const", 2)["onnx_path"])
        good = v2.read_bytes()
        v2.write_bytes(constant(666.0))  # replaced behind the store's back
        client.model_host.refresh()  # the poll's read: production is v2, whose file is refused
        for _ in range(3):
            answer = predict(client, "const", [[0, 0, 0, 0]])
            assert answer.status_code == 200 and answer.json() == {"predictions": [1.0], "version": 1}
        health = client.get("/health").json()
        assert health["status"] == "degraded"
        assert str(tmp_path) not in health["problems"]["const"]  # no path of the server's in answers
        assert re.fullmatch(r"v2 refused: served\.onnx has sha256 \w{12}…, its record says \w{12}… \(changed or "
                            r"damaged since it was registered\); v1 keeps serving", health["problems"]["const"])
        [listed] = client.get("/models").json()
        assert (listed["production"], listed["version"], listed["problem"]) == (2, 1, health["problems"]["const"])
        metrics = client.get("/metrics").text
        assert 'pushtune_model_load_failures_total{model="const",kind="sha256"} 1' in metrics  # tried once
        assert 'pushtune_model_up{model="const"} 0' in metrics
        v2.write_bytes(good)  # repaired: the next request loads it
        assert predict(client, "const", [[0, 0, 0, 0]]).json() == {"predictions": [2.0], "version": 2}
        assert client.get("/health").json()["status"] == "ok"


def test_a_tampered_artifact_with_nothing_else_to_serve_is_503(store):
    passing_run(store, 0.90, model="const.py", onnx=constant(1.0))
    Path(store.get_model_version("const", 1)["onnx_path"]).write_bytes(constant(5.0))
    with serving(store) as client:
        answer = predict(client, "const", [[0, 0, 0, 0]])
        assert answer.status_code == 503 and answer.json()["detail"].startswith("const: v1 refused: ")


def test_a_request_in_flight_finishes_on_the_model_it_started_with(store, monkeypatch):
    in_flight, release = threading.Event(), threading.Event()
    real_load = serve.load_version

    def holding_v1(name: str, record) -> serve.Loaded:
        """v1 as loaded, whose predictions say they are in flight and wait for the test."""
        loaded = real_load(name, record)
        if loaded.version != 1:
            return loaded

        def held(x):
            if x.any():  # the warm-up's zeros are not held
                in_flight.set()
                assert release.wait(60)
            return loaded.predict(x)
        return dataclasses.replace(loaded, predict=held)

    monkeypatch.setattr(serve, "load_version", holding_v1)
    passing_run(store, 0.90, model="slow.py", onnx=constant(1.0))
    second = passing_run(store, 0.80, model="slow.py", onnx=constant(2.0))
    with serving(store) as client:
        answers = {}
        first = threading.Thread(target=lambda: answers.setdefault("first", predict(client, "slow", [[1, 1, 1, 1]])))
        first.start()
        try:
            assert in_flight.wait(60)  # in v1's predict, held there
            versions.promote_run(store, second, force=True)
            until_production(client, "slow", 2)
            answers["second"] = predict(client, "slow", [[1, 1, 1, 1]])
        finally:
            release.set()
            first.join(30)
    assert answers["second"].json() == {"predictions": [2.0], "version": 2}
    assert answers["first"].json() == {"predictions": [1.0], "version": 1}


def parse_metrics(text: str) -> dict[str, dict[tuple, float]]:
    """Prometheus text format: {metric name: {sorted label pairs: value}}; every line is checked."""
    families: dict[str, dict[tuple, float]] = {}
    line_pattern = re.compile(r'([a-z_]+)(?:\{((?:[a-z_]+="(?:[^"\\]|\\.)*",?)*)\})? (-?[0-9.e+-]+|\+Inf)')
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = line_pattern.fullmatch(line)
        assert match, line
        labels = tuple(sorted(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', match.group(2) or "")))
        families.setdefault(match.group(1), {})[labels] = float(match.group(3))
    return families


def test_metrics_are_prometheus_text(store, iris_model):
    passing_run(store, 0.97, model="iris.py", onnx=iris_onnx(iris_model))
    with serving(store) as client:
        for _ in range(5):
            assert predict(client, "iris", IRIS_X[:2].tolist()).status_code == 200
        assert predict(client, "iris", [[1]]).status_code == 422
        assert predict(client, "ghost", [[1]]).status_code == 404
        answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = answer.text
    for family, kind in (("pushtune_requests_total", "counter"), ("pushtune_request_errors_total", "counter"),
                         ("pushtune_request_duration_seconds", "histogram"),
                         ("pushtune_model_loaded_version", "gauge")):
        assert f"# TYPE {family} {kind}\n" in text
    metrics = parse_metrics(text)
    route = "/models/{name}/predict"
    requests = metrics["pushtune_requests_total"]
    assert requests[(("code", "200"), ("endpoint", route), ("model", "iris"))] == 5
    assert requests[(("code", "422"), ("endpoint", route), ("model", "iris"))] == 1
    # unknown names get no label of their own
    assert requests[(("code", "404"), ("endpoint", route), ("model", ""))] == 1
    assert metrics["pushtune_request_errors_total"] == {
        (("code", "422"), ("endpoint", route), ("model", "iris")): 1,
        (("code", "404"), ("endpoint", route), ("model", "")): 1}
    buckets = sorted(((float("inf") if dict(k)["le"] == "+Inf" else float(dict(k)["le"])), v)
                     for k, v in metrics["pushtune_request_duration_seconds_bucket"].items()
                     if dict(k)["model"] == "iris")
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == 6  # cumulative, and +Inf holds them all
    count = metrics["pushtune_request_duration_seconds_count"][(("endpoint", route), ("model", "iris"))]
    assert count == 6
    assert 0 < metrics["pushtune_request_duration_seconds_sum"][(("endpoint", route), ("model", "iris"))] < 6
    assert metrics["pushtune_model_loaded_version"] == {(("model", "iris"),): 1}
    assert metrics["pushtune_model_up"] == {(("model", "iris"),): 1}


def test_hot_reload_under_load_never_fails_and_answers_with_a_production_version(store_location, monkeypatch):
    monkeypatch.setenv("PUSHTUNE_ACTOR", "tester")
    store = RunStore.open(store_location)
    passing_run(store, 0.90, model="const.py", onnx=constant(1.0))
    second = passing_run(store, 0.80, model="const.py", onnx=constant(2.0))
    changes: list[tuple[float, float, int]] = []  # (before, seen by the server, version made production)
    answers: list[tuple[float, float, int, object]] = []
    failures: list[str] = []
    changed = threading.Event()  # every change made: the load goes on at least until then

    def client_loop(base_url: str, count: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            done = 0
            while done < count or not changed.is_set():
                done += 1
                started = time.time()
                try:
                    response = client.post("/models/const/predict", json={"instances": [[0, 0, 0, 0]]})
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                ended = time.time()
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text}")
                    continue
                body = response.json()
                answers.append((started, ended, body["version"], body["predictions"]))

    with serving(store) as client:
        base_url = str(client.base_url)
        threads = [threading.Thread(target=client_loop, args=(base_url, 250)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for _ in range(10):
            for change in (lambda: versions.promote_run(store, second, force=True),
                           lambda: versions.rollback(store, "const")):
                before = time.time()
                made = change()
                until_production(client, "const", made.version)  # the poll has read it
                changes.append((before, time.time(), made.version))
        changed.set()
        for thread in threads:
            thread.join(120)
    assert not failures, failures[:5]
    assert len(answers) >= 2000
    assert [c[2] for c in changes] == [2, 1] * 10
    # what the server answers with, over time: v1 until it has read the first change, then each
    # change's version from its write (after `before`) until the server has read the next change
    spans = [(float("-inf"), changes[0][1], 1)]
    spans += [(c[0], (changes[i + 1][1] if i + 1 < len(changes) else float("inf")), c[2])
              for i, c in enumerate(changes)]
    for started, ended, version, predictions in answers:
        assert predictions == [float(version)]  # the answer came from that version's model
        assert any(v == version and lo <= ended and started <= hi for lo, hi, v in spans), \
            (started, ended, version)
    assert {a[2] for a in answers} == {1, 2}
    events = store.model_events("const")
    assert [e["action"] for e in events[-20:]] == ["promoted", "rolled_back"] * 10


def test_pushtune_serve_on_an_ephemeral_port_and_a_busy_one(tmp_path, cli, pushtune_home, iris_model):
    store = RunStore.open(pushtune_home / "pushtune.db")
    passing_run(store, 0.97, model="iris.py", onnx=iris_onnx(iris_model))
    env = {**os.environ, "PUSHTUNE_HOME": str(pushtune_home), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "jobs", "serve", "--port", "0"], env=env,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        match = re.search(r"on http://127\.0\.0\.1:(\d+) ", line)
        assert match, line
        port = int(match.group(1))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    health = client.get("/health")
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert health.json()["models"] == {"iris": 1}
            predictions = predict(client, "iris", IRIS_X[:3].tolist()).json()["predictions"]
            assert predictions == iris_model.predict(IRIS_X[:3]).tolist()
        busy = cli("serve", "--port", str(port))
        assert busy.returncode == 2
        assert busy.stderr.startswith(f"pushtune: error: cannot listen on 127.0.0.1:{port}: ")
        assert busy.stderr.count("\n") == 1
    finally:
        process.send_signal(signal.SIGTERM)  # a graceful shutdown, then uvicorn ends as the signal asked
        assert process.wait(30) in (0, -signal.SIGTERM)
        rest = process.stderr.read()
        process.stderr.close()
    assert "Traceback" not in rest, rest


# --- hardening: slow clients, oversized bodies, hostile input, tokens, a store that hangs ----------


def raw_request(port: int, data: bytes, *, close_after: bool = False) -> socket.socket:
    """A socket to the server that has sent `data` (maybe half a request) and nothing more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    if data:
        sock.sendall(data)
    if close_after:
        sock.close()
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Read until the server closes the connection (True), or answers something (False)."""
    try:
        while chunk := sock.recv(65536):
            if chunk.startswith(b"HTTP/1.1 "):
                return False
        return True
    except ConnectionResetError:
        return True
    finally:
        sock.close()


def status_of(sock: socket.socket) -> int:
    """The status code of the answer on `sock`."""
    answer = b""
    while b"\r\n" not in answer:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without an answer ({answer!r})"
        answer += chunk
    sock.close()
    return int(answer.split(b" ", 2)[1])


def port_of(client: httpx.Client) -> int:
    return int(client.base_url.port)


HALF_SENT = [b"", b"POST /models/iris/predict HTTP/1.1\r\nHost: x\r\nContent-Le", b"GET /health HTTP/1.1\r\n"]


def test_idle_and_half_sent_connections_are_closed_and_do_not_stop_answers(store, iris_model):
    passing_run(store, 0.97, model="iris.py", onnx=iris_onnx(iris_model))
    with serving(store, read_timeout=1.0, connections=8) as client:
        port = port_of(client)
        held = [raw_request(port, HALF_SENT[i % len(HALF_SENT)]) for i in range(24)]  # 3 × the limit
        # until the server closes the held connections, the limit may answer 503; then it answers
        deadline = time.monotonic() + 60
        while (answer := predict(client, "iris", IRIS_X[:1].tolist())).status_code == 503:
            assert time.monotonic() < deadline, "held connections kept the server from answering"
            time.sleep(0.05)
        assert answer.status_code == 200, answer.text
        assert all(closed_by_server(sock) for sock in held)  # timed out by the server, not by us
        # a body that never comes: the headers are complete, the body is not
        stalled = raw_request(port, b"POST /models/iris/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                                    b'{"instances"')
        assert status_of(stalled) == 408
        # a client trickling its headers a byte at a time is cut off too (the deadline is not renewed)
        trickle, closed = raw_request(port, b""), False
        for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 10_000:  # 100 s at this pace
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if _readable(trickle) and not trickle.recv(65536):
                closed = True
                break
            time.sleep(0.01)
        trickle.close()
        assert closed, "a request trickled in a byte at a time held its connection"
        assert client.get("/health").status_code == 200


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def test_oversized_bodies_are_refused_from_content_length_and_while_streaming(store, iris_model):
    passing_run(store, 0.97, model="iris.py", onnx=iris_onnx(iris_model))
    with serving(store) as client:
        port = port_of(client)
        declared = raw_request(port, b"POST /models/iris/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                     b"\r\nContent-Length: %d\r\n\r\n" % (65 << 20))  # and not one byte of it
        assert status_of(declared) == 413
        streamed = raw_request(port, b"POST /models/iris/predict HTTP/1.1\r\nHost: x\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
        try:
            for _ in range(70):  # 70 MiB of spaces, never said in advance
                streamed.sendall(chunk)
            streamed.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may stop reading once it has answered
        assert status_of(streamed) == 413
        metrics = parse_metrics(client.get("/metrics").text)["pushtune_requests_total"]
        assert metrics[(("code", "413"), ("endpoint", "/models/{name}/predict"), ("model", ""))] == 2
        assert predict(client, "iris", IRIS_X[:1].tolist()).status_code == 200


@pytest.mark.parametrize("body, status, says", [
    (b'{"instances": [[1' + b"0" * 400 + b', 1, 1, 1]]}', 422, "instances must hold finite numbers: 100000000000"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "the body is JSON nested too deeply"),
    (b'{"instances": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}", 422, "instances are nested more than 32 deep"),
    (b'{"instances": [[1e39, 1, 1, 1]]}', 422, "instances must hold numbers the model's float32 can hold"),
    (b'{"instances": [[1e400, 1, 1, 1]]}', 422, "instances must hold finite numbers (no NaN or Infinity)"),
])
def test_hostile_numbers_and_nesting_are_4xx(store, torch_files, body, status, says):
    passing_run(store, 0.9, model="torchnet.py", artifact="model.pt", content=torch_files["whole"].read_bytes(),
                onnx=torch_files["onnx"].read_bytes())
    with serving(store) as client:
        answer = client.post("/models/torchnet/predict", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == status, answer.text
        assert answer.json()["detail"].startswith(says), answer.json()


def test_text_labels_are_answered_and_a_client_gone_mid_body_is_a_400(store):
    from skl2onnx import to_onnx

    labels = np.array(["setosa", "versicolor", "virginica"])[IRIS_Y]
    named = LogisticRegression(max_iter=500).fit(IRIS_X, labels)
    passing_run(store, 0.9, model="bytes.py", onnx=to_onnx(named, IRIS_X[:1].astype(np.float32)).SerializeToString())
    with serving(store) as client:
        answer = predict(client, "bytes", [IRIS_X[0].tolist(), IRIS_X[-1].tolist()])
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": named.predict(IRIS_X[[0, -1]]).tolist(), "version": 1}
        raw_request(port_of(client), b"POST /models/bytes/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                                     b'{"instances": [[1', close_after=True)
        route = (("endpoint", "/models/{name}/predict"), ("model", ""))
        deadline = time.monotonic() + 60
        while (("code", "400"), *route) not in (
                counts := parse_metrics(client.get("/metrics").text)["pushtune_requests_total"]):
            assert time.monotonic() < deadline, "the server never answered the request whose client left"
            time.sleep(0.05)
        assert not [key for key in counts if ("code", "500") in key]


def test_a_token_guards_predictions_and_models_but_not_health(store, iris_model):
    passing_run(store, 0.97, model="iris.py", onnx=iris_onnx(iris_model))
    with serving(store, token="s3cret-token") as client:
        assert predict(client, "iris", IRIS_X[:1].tolist()).status_code == 200
        assert client.get("/models").status_code == 200
        base = str(client.base_url)
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic czNjcmV0LXRva2Vu"},
                        {"authorization": "Bearer s3cret-token-and-more"}, {"authorization": "Bearer"}):
            with httpx.Client(base_url=base, timeout=30, headers=headers) as other:
                for answer in (other.post("/models/iris/predict", json={"instances": IRIS_X[:1].tolist()}),
                               other.get("/models")):
                    assert answer.status_code == 401, (headers, answer.text)
                    assert answer.headers["www-authenticate"] == "Bearer"
                    assert "s3cret" not in answer.text
                assert other.get("/health").json()["models"] == {"iris": 1}


def test_a_store_that_stops_answering_does_not_delay_predictions(store_location, monkeypatch, iris_model):
    monkeypatch.setenv("PUSHTUNE_ACTOR", "tester")
    store = RunStore.open(store_location)
    passing_run(store, 0.97, model="iris.py", onnx=iris_onnx(iris_model))
    with serving(store) as client, held_store(store_location):
        # the server's poll is stuck on the store now; answers come from what it read before
        with httpx.Client(base_url=str(client.base_url), timeout=20) as impatient:  # < the store's 30 s waits
            for _ in range(20):
                answer = impatient.post("/models/iris/predict", json={"instances": IRIS_X[:2].tolist()})
                assert answer.status_code == 200, answer.text
                assert answer.json()["version"] == 1
            assert impatient.get("/health").json()["status"] == "ok"


@contextmanager
def held_store(location: str):
    """The store's model tables locked by another connection until the block ends: PostgreSQL
    (ACCESS EXCLUSIVE, once a read of the server waits on it) or SQLite (an exclusive transaction
    in exclusive locking mode: readers wait for it too, even in WAL mode)."""
    if location.startswith("postgresql"):
        import psycopg

        with psycopg.connect(location) as db:
            db.execute("LOCK TABLE model_versions IN ACCESS EXCLUSIVE MODE")
            deadline = time.monotonic() + 60
            with psycopg.connect(location, autocommit=True) as watcher:
                while not watcher.execute("SELECT 1 FROM pg_locks WHERE NOT granted "
                                          "AND relation = 'model_versions'::regclass").fetchall():
                    assert time.monotonic() < deadline, "the server's poll never reached the store"
                    time.sleep(0.02)
            try:
                yield
            finally:
                db.rollback()
        return
    import sqlite3

    db = sqlite3.connect(location, isolation_level=None)
    try:
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("BEGIN EXCLUSIVE")
        db.execute("UPDATE model_versions SET reason = reason")
        yield
    finally:
        db.execute("ROLLBACK")
        db.close()
