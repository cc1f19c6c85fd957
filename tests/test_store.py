"""The run store: real SQLite, several writers at once, nothing recorded is lost."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from jobs.errors import UserError
from jobs.store import RunStore


def new_run(store: RunStore, **extra) -> int:
    fields = dict(model_path="/m.py", model_name="m.py", model_sha256="0" * 64, kind="ann",
                  framework="keras", metric="accuracy", mode="max", threshold=0.9,
                  strategy="ladder", runtime="local", options={"threshold": 0.9})
    return store.create_run(**{**fields, **extra})


def test_runs_and_attempts_round_trip(tmp_path):
    store = RunStore.open(tmp_path / "s.db")
    run_id = new_run(store)
    n1 = store.add_attempt(run_id, source_sha256="a", config_key="k1", dir="/d1", params={"lr": 0.1})
    n2 = store.add_attempt(run_id, source_sha256="b", config_key="k2", dir="/d2", tweaks=["x"])
    store.update_attempt(run_id, n2, status="ok", metric_value=0.5, metrics={"accuracy": 0.5})
    assert (n1, n2) == (1, 2)
    attempts = store.attempts(run_id)
    assert attempts[0]["params"] == {"lr": 0.1} and attempts[1]["tweaks"] == ["x"]
    assert attempts[1]["metrics"] == {"accuracy": 0.5} and attempts[1]["status"] == "ok"
    assert store.get_run(run_id)["options"] == {"threshold": 0.9}


def test_restarts_count_on_the_attempt(tmp_path):
    store = RunStore.open(tmp_path / "s.db")
    run_id = new_run(store)
    store.add_attempt(run_id, source_sha256="a", config_key="k", dir="/d")
    store.add_restart(run_id, 1, "killed by SIGKILL", exit_code=-9, resumed_epoch=3)
    assert store.get_attempt(run_id, 1)["restarts"] == 1
    assert store.restarts(run_id, 1)[0]["resumed_epoch"] == 3


def test_unknown_run_is_a_user_error(tmp_path):
    store = RunStore.open(tmp_path / "s.db")
    with pytest.raises(UserError, match="no run 42"):
        store.get_run(42)


def test_unwritable_store_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot open the run store"):
        RunStore.open(blocker / "s.db")


def _add_attempts(path: str, run_id: int, count: int) -> None:
    store = RunStore(path=__import__("pathlib").Path(path))
    for i in range(count):
        store.add_attempt(run_id, source_sha256=str(i), config_key=str(i), dir="/d")


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    store = RunStore.open(tmp_path / "s.db")
    run_id = new_run(store)
    workers = [multiprocessing.Process(target=_add_attempts, args=(str(store.path), run_id, 40))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert all(w.exitcode == 0 for w in workers)
    numbers = [a["n"] for a in store.attempts(run_id)]
    assert numbers == list(range(1, 81))


def test_store_is_plain_sqlite(tmp_path):
    store = RunStore.open(tmp_path / "s.db")
    new_run(store)
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT model_name FROM runs").fetchone() == ("m.py",)
