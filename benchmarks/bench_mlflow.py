"""The cost of the MLflow mirror (issue 24): what mirroring adds per attempt, and at a run's end,
against a local `mlflow server` (SQLite backend, local artifact root, 127.0.0.1), for real runs of
a scikit-learn script as people write it (3 attempts each); and what a server that refuses costs.

The server comes from its own venv (scripts/mlflow-server-venv.sh; PUSHTUNE_MLFLOW_SERVER names
its `mlflow`). Each call of `mirror_run` that the loop makes is timed where the loop makes it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

from jobs import loop
from jobs.loop import RunOptions, run_model
from jobs.mirror import mlflow as mirror
from jobs.store.run_store import RunStore
from jobs.train.runtimes import get_runtime

ROOT = Path(__file__).resolve().parent.parent
SERVER = Path(os.environ.get("PUSHTUNE_MLFLOW_SERVER") or ROOT / ".venv-mlflow" / "bin" / "mlflow")
RUNS = 4
SCRIPT = textwrap.dedent("""\
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    clf = LogisticRegression(max_iter=1)
    clf.fit(X_train, y_train)
    print("accuracy:", clf.score(X_test, y_test))
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [str(SERVER), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination",
         str(folder / "artifacts")], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(900):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.2)
    raise SystemExit("mlflow server did not answer /health")


def timed_runs(url: str, home: Path) -> dict[str, list[float]]:
    """Real runs with the mirror on, timing (a) the mirror's work for each attempt (in its thread,
    while the next attempt trains) and at each run's end (parent run, registry, alias), and (b) how
    long the loop waits on the mirror after each attempt and at each run's end."""
    seconds: dict[str, list[float]] = {"work first": [], "work later": [], "work finish": [],
                                       "wait attempt": [], "wait finish": []}
    sync_run, loop_mirror = mirror.sync_run, loop.mirror_run

    def timed_sync(store: RunStore, run_id: int) -> None:
        phase = "later" if len(store.attempts(run_id)) > 1 else "first"  # the first makes the parent run
        if store.get_run(run_id)["status"] != "running":
            phase = "finish"
        started = time.perf_counter()
        sync_run(store, run_id)
        seconds[f"work {phase}"].append(time.perf_counter() - started)

    def timed_wait(store: RunStore, run_id: int, *, wait: bool = True) -> None:
        started = time.perf_counter()
        loop_mirror(store, run_id, wait=wait)
        seconds["wait finish" if wait else "wait attempt"].append(time.perf_counter() - started)

    mirror.sync_run, loop.mirror_run = timed_sync, timed_wait
    try:
        os.environ["PUSHTUNE_HOME"] = str(home)
        home.mkdir(parents=True, exist_ok=True)
        model = home.parent / "iris.py"
        model.write_text(SCRIPT)
        for _ in range(RUNS):
            options = RunOptions(threshold=0.97, max_attempts=3, runtime="local", mlflow=url)
            run_model(model, options, get_runtime("local"), RunStore.open())
    finally:
        mirror.sync_run, loop.mirror_run = sync_run, loop_mirror
    return seconds


def quiet_seconds(home: Path) -> list[float]:
    """The mirror's work per attempt with nothing training beside it: each finished run mirrored
    afresh from a copy of the store (another store, so MLflow has none of it), its seconds over its
    attempts (the parent run and the registry included)."""
    copy = home.parent / "copy"
    copy.mkdir()
    shutil.copyfile(home / "pushtune.db", copy / "pushtune.db")
    store = RunStore.open(copy / "pushtune.db")
    seconds = []
    for run in store.list_runs(-1):
        started = time.perf_counter()
        mirror.sync_run(store, run["id"])
        seconds.append((time.perf_counter() - started) / len(store.attempts(run["id"])))
    return seconds


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import mlflow.tracking; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def refused_seconds(home: Path) -> float:
    """One mirror call to a port nothing listens on (MLflow's retries as the mirror sets them)."""
    os.environ["PUSHTUNE_HOME"] = str(home)
    store = RunStore.open()
    run = store.list_runs(1)[0]
    run_id = run["id"]
    (Path(run["run_dir"]) / mirror.FAILED_FILE).unlink(missing_ok=True)
    store.update_run(run_id, options={**run["options"], "mlflow": f"http://127.0.0.1:{free_port()}"})
    started = time.perf_counter()
    mirror.mirror_run(store, run_id)  # prints the run's one warning
    return time.perf_counter() - started


def main() -> str:
    os.environ.setdefault("MPLBACKEND", "Agg")
    importlib.import_module("mlflow.tracking")  # the client's import, once per process, is timed apart
    if not SERVER.is_file():
        raise SystemExit(f"no MLflow server at {SERVER}: scripts/mlflow-server-venv.sh")
    folder = Path(tempfile.mkdtemp(prefix="bench-mlflow-"))
    server, url = start_server(folder)
    try:
        seconds = timed_runs(url, folder / "home")
        quiet = quiet_seconds(folder / "home")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    refused = refused_seconds(folder / "home")
    first, later = seconds["work first"], seconds["work later"]
    waits = seconds["wait attempt"]
    met = "met" if statistics.median(waits) < 0.2 else "MISSED"
    quiet_met = "met" if statistics.median(quiet) < 0.2 else "MISSED"

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f} ms ({len(values)})"

    return textwrap.dedent(f"""\
        ## MLflow mirror

        | measure: median / max (count) | result | goal |
        | --- | --- | --- |
        | the loop's wait on the mirror after an attempt | {ms(waits)} | < 200 ms: {met} |
        | the mirror's work for an attempt, in its thread: a run's first (+ parent run) | {ms(first)} | |
        | … a later attempt (search, nested run, params, metrics, curve, 4 files) | {ms(later)} | |
        | … with nothing training beside it (a run mirrored afresh, per attempt) | {ms(quiet)} | < 200 ms: {quiet_met} |
        | the loop's wait at a run's end (queue drained, parent run, registry, alias) | {ms(seconds["wait finish"])} | |
        | importing the MLflow client (once per process that mirrors) | {import_seconds():.1f} s | |
        | a server that refuses: the run's one failing call | {refused:.1f} s | bounded |

        {RUNS} real runs (`pushtune run`'s loop, local runtime) of a scikit-learn script as people
        write it, 3 attempts each, mirrored to `mlflow server` 3.18.0 on 127.0.0.1 (SQLite backend,
        local artifact root); each attempt uploads its diff, log, model and ONNX file. After an
        attempt the loop queues the mirror (its thread searches the run's mirrored attempts by tag
        and adds the new one) and goes on; at the run's end it waits for it. The work while the
        next attempt trains shares 2 cores with that training (and here with other test suites);
        the quiet row mirrors the finished runs again from a copy of the store. After a failing
        call the run is not mirrored again.""")
