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


def test_a_run_and_its_directory_are_made_in_one_step(tmp_path):
    store = RunStore.open(tmp_path / "s.db")
    run_id = new_run(store, files={"pushed.py": "print(1)\n"})
    run_dir = tmp_path / "runs" / str(run_id)
    assert store.get_run(run_id)["run_dir"] == str(run_dir)
    assert (run_dir / "pushed.py").read_text() == "print(1)\n"
    with pytest.raises(sqlite3.OperationalError):  # a run that cannot be recorded leaves no directory
        new_run(store, no_such_column=1)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [str(run_id)]
    assert [r["id"] for r in store.list_runs()] == [run_id]


def test_a_recreated_or_emptied_store_never_reuses_a_run_directory(tmp_path):
    store = RunStore.open(tmp_path / "s.db")
    first = new_run(store, files={"pushed.py": "first"})
    store.path.unlink()  # recreated: ids would start at 1 again
    store = RunStore.open(tmp_path / "s.db")
    second = new_run(store, files={"pushed.py": "second"})
    with sqlite3.connect(store.path) as db:  # emptied, sequence and all
        db.execute("DELETE FROM runs")
        db.execute("DELETE FROM sqlite_sequence")
    (tmp_path / "runs" / "3").write_text("not even a directory")
    third = new_run(store, files={"pushed.py": "third"})
    assert (first, second, third) == (1, 2, 4)
    for n, text in ((1, "first"), (2, "second"), (4, "third")):
        assert (tmp_path / "runs" / str(n) / "pushed.py").read_text() == text


def test_an_empty_store_file_beside_runs_is_a_user_error(tmp_path):
    (tmp_path / "s.db").write_bytes(b"")
    RunStore.open(tmp_path / "s.db")  # nothing to lose yet: a new store
    new_run(RunStore.open(tmp_path / "s.db"))
    for name in ("s.db", "s.db-wal", "s.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / "s.db").write_bytes(b"")
    with pytest.raises(UserError, match=rf"{tmp_path / 's.db'} is empty but {tmp_path / 'runs'} holds 1 run.*backup"):
        RunStore.open(tmp_path / "s.db")
    assert (tmp_path / "s.db").read_bytes() == b"" and (tmp_path / "runs" / "1").is_dir()


def test_a_foreign_store_file_is_a_user_error_saying_what_to_do(tmp_path):
    (tmp_path / "text.db").write_text("hello\n" * 100)
    with pytest.raises(UserError, match=r"text.db is not an SQLite database.*move it aside or set PUSHTUNE_HOME"):
        RunStore.open(tmp_path / "text.db")
    with sqlite3.connect(tmp_path / "other.db") as db:
        db.execute("CREATE TABLE photos (id INTEGER)")
    with pytest.raises(UserError, match=r"other.db is not a pushtune run store.*PUSHTUNE_HOME"):
        RunStore.open(tmp_path / "other.db")
    with sqlite3.connect(tmp_path / "other.db") as db:  # left as it was
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["photos"]


def test_ids_too_big_for_sqlite_are_no_such_run(tmp_path):
    store = RunStore.open(tmp_path / "s.db")
    run_id = new_run(store)
    huge = 10**30
    with pytest.raises(UserError, match=f"no run {huge}"):
        store.get_run(huge)
    with pytest.raises(UserError, match=f"no attempt {huge} in run {run_id}"):
        store.get_attempt(run_id, huge)
    for call in (lambda: store.attempts(-huge), lambda: store.restarts(huge),
                 lambda: store.update_run(huge, status="failed"), lambda: store.notifications(huge)):
        with pytest.raises(UserError, match="no run"):
            call()
    assert [r["id"] for r in store.list_runs(limit=huge)] == [run_id]


def test_a_corrupt_json_column_names_the_run_and_the_column(tmp_path):
    store = RunStore.open(tmp_path / "s.db")
    run_id = new_run(store)
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET options = '{\"threshold\": ' WHERE id = ?", (run_id,))
    with pytest.raises(UserError, match=f"the options column of run {run_id} in {store.path} is not valid JSON"):
        store.get_run(run_id)
