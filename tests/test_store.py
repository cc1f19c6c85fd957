"""The run store, against real SQLite and a real PostgreSQL (the `store_location` fixture runs
each suite test on both): several writers at once, nothing recorded is lost, ids never repeat,
and a store this code does not understand is refused."""

from __future__ import annotations

import multiprocessing
import sqlite3

import psycopg
import pytest

from jobs.errors import UserError
from jobs.store.run_store import SCHEMA, RunStore


def new_run(store: RunStore, **extra) -> int:
    fields = dict(model_path="/m.py", model_name="m.py", model_sha256="0" * 64, kind="ann",
                  framework="keras", metric="accuracy", mode="max", threshold=0.9,
                  strategy="ladder", runtime="local", options={"threshold": 0.9})
    return store.create_run(**{**fields, **extra})


def test_runs_and_attempts_round_trip(store_location):
    store = RunStore.open(store_location)
    run_id = new_run(store)
    n1 = store.add_attempt(run_id, source_sha256="a", config_key="k1", dir="/d1", params={"lr": 0.1})
    n2 = store.add_attempt(run_id, source_sha256="b", config_key="k2", dir="/d2", tweaks=["x"])
    store.update_attempt(run_id, n2, status="ok", metric_value=0.5, metrics={"accuracy": 0.5})
    assert (n1, n2) == (1, 2)
    attempts = store.attempts(run_id)
    assert attempts[0]["params"] == {"lr": 0.1} and attempts[1]["tweaks"] == ["x"]
    assert attempts[1]["metrics"] == {"accuracy": 0.5} and attempts[1]["status"] == "ok"
    assert store.get_run(run_id)["options"] == {"threshold": 0.9}


def test_restarts_count_on_the_attempt(store_location):
    store = RunStore.open(store_location)
    run_id = new_run(store)
    store.add_attempt(run_id, source_sha256="a", config_key="k", dir="/d")
    store.add_restart(run_id, 1, "killed by SIGKILL", exit_code=-9, resumed_epoch=3)
    assert store.get_attempt(run_id, 1)["restarts"] == 1
    assert store.restarts(run_id, 1)[0]["resumed_epoch"] == 3


def test_unknown_run_is_a_user_error(store_location):
    store = RunStore.open(store_location)
    with pytest.raises(UserError, match="no run 42"):
        store.get_run(42)


def test_unwritable_store_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot open the run store"):
        RunStore.open(blocker / "s.db")


def _add_attempts_and_runs(location: str, run_id: int, count: int) -> None:
    store = RunStore.open(location)
    for i in range(count):
        store.add_attempt(run_id, source_sha256=str(i), config_key=str(i), dir="/d")
        new_run(store)


def test_several_processes_writing_at_once_lose_nothing(store_location):
    store = RunStore.open(store_location)
    run_id = new_run(store)
    workers = [multiprocessing.Process(target=_add_attempts_and_runs, args=(store_location, run_id, 25))
               for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert all(w.exitcode == 0 for w in workers)
    assert [a["n"] for a in store.attempts(run_id)] == list(range(1, 76))
    runs = store.list_runs(limit=-1)
    assert sorted(r["id"] for r in runs) == list(range(1, 77))  # no run lost, no id twice
    assert sorted(r["run_dir"] for r in runs) == sorted({r["run_dir"] for r in runs})


def test_store_is_plain_sqlite(tmp_path):
    store = RunStore.open(tmp_path / "s.db")
    new_run(store)
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT model_name FROM runs").fetchone() == ("m.py",)


def test_a_run_and_its_directory_are_made_in_one_step(store_location, tmp_path):
    store = RunStore.open(store_location)
    run_id = new_run(store, files={"pushed.py": "print(1)\n"})
    run_dir = tmp_path / "runs" / str(run_id)
    assert store.get_run(run_id)["run_dir"] == str(run_dir)
    assert (run_dir / "pushed.py").read_text() == "print(1)\n"
    with pytest.raises((sqlite3.OperationalError, psycopg.errors.UndefinedColumn)):  # a run that
        new_run(store, no_such_column=1)  # cannot be recorded leaves no directory
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


def test_ids_too_big_for_an_integer_column_are_no_such_run(store_location):
    store = RunStore.open(store_location)
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


def test_run_ids_never_repeat_on_postgresql_even_when_runs_are_deleted(postgres_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PUSHTUNE_ARTIFACTS", str(tmp_path))
    store = RunStore.open(postgres_url)
    first = new_run(store, files={"pushed.py": "first"})
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DELETE FROM runs")
    (tmp_path / "runs" / str(first + 2)).mkdir()  # an older store's run directory
    second, third = new_run(store), new_run(store)
    assert (first, second, third) == (1, 2, 4)
    assert (tmp_path / "runs" / "1" / "pushed.py").read_text() == "first"


def test_a_store_of_a_newer_schema_is_refused_untouched(store_location):
    store = RunStore.open(store_location)
    run_id = new_run(store)
    _sql(store_location, "UPDATE schema_version SET version = ?", (SCHEMA + 1,))
    with pytest.raises(UserError, match=rf"run store of schema {SCHEMA + 1}, newer than this pushtune "
                                        rf"understands \({SCHEMA}\): upgrade pushtune"):
        RunStore.open(store_location)
    _sql(store_location, "UPDATE schema_version SET version = ?", (SCHEMA,))
    assert RunStore.open(store_location).get_run(run_id)["model_name"] == "m.py"


def test_a_damaged_schema_version_is_refused(store_location):
    RunStore.open(store_location)
    _sql(store_location, "INSERT INTO schema_version (version) VALUES (?)", (1,))
    with pytest.raises(UserError, match="damaged schema_version table"):
        RunStore.open(store_location)


def test_a_foreign_postgresql_database_is_refused_untouched(postgres_url):
    _sql(postgres_url, "CREATE TABLE photos (id INTEGER)")
    with pytest.raises(UserError, match="is not a pushtune run store .*PUSHTUNE_DB"):
        RunStore.open(postgres_url)
    with psycopg.connect(postgres_url) as db:
        tables = db.execute("SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = 'public'").fetchall()
    assert tables == [("photos",)]


def test_an_empty_postgresql_database_beside_recorded_runs_is_refused(postgres_server, tmp_path, monkeypatch):
    monkeypatch.setenv("PUSHTUNE_ARTIFACTS", str(tmp_path))
    new_run(RunStore.open(postgres_server.new_database()), files={"pushed.py": "x"})
    with pytest.raises(UserError, match=rf"is empty but {tmp_path / 'runs'} holds 1 run"):
        RunStore.open(postgres_server.new_database())  # PUSHTUNE_DB pointed at the wrong database?


def test_the_password_never_appears_in_messages(postgres_server):
    url = postgres_server.url.replace("pushtune@", "pushtune:s3cret@").rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(UserError) as raised:
        RunStore.open(url)
    assert "s3cret" not in str(raised.value) and "pushtune:***@" in str(raised.value)
    assert 'database "no_such_db" does not exist' in str(raised.value)


def test_a_store_from_before_schema_versions_is_migrated_keeping_its_runs(tmp_path):
    with sqlite3.connect(tmp_path / "s.db") as db:  # as pushtune 0.1 left it: no curve, no version
        db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, model_path TEXT NOT NULL,"
                   " model_name TEXT NOT NULL, model_sha256 TEXT NOT NULL, kind TEXT NOT NULL,"
                   " framework TEXT NOT NULL, git_commit TEXT, metric TEXT NOT NULL, mode TEXT NOT NULL,"
                   " threshold REAL NOT NULL, strategy TEXT NOT NULL, runtime TEXT NOT NULL,"
                   " options TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL DEFAULT 'running',"
                   " best_attempt INTEGER, run_dir TEXT NOT NULL DEFAULT '', started_at REAL NOT NULL,"
                   " finished_at REAL, stop_reason TEXT)")
        db.execute("CREATE TABLE attempts (run_id INTEGER NOT NULL, n INTEGER NOT NULL,"
                   " status TEXT NOT NULL DEFAULT 'running', parent INTEGER, tweak_name TEXT, tweak TEXT,"
                   " tweaks TEXT NOT NULL DEFAULT '[]', params TEXT NOT NULL DEFAULT '{}',"
                   " source_sha256 TEXT NOT NULL, config_key TEXT NOT NULL, diff TEXT NOT NULL DEFAULT '',"
                   " dir TEXT NOT NULL, metric_value REAL, metrics TEXT, artifact_path TEXT,"
                   " artifact_sha256 TEXT, error TEXT, log_tail TEXT, exit_code INTEGER,"
                   " oom_killed INTEGER NOT NULL DEFAULT 0, container TEXT, restarts INTEGER NOT NULL DEFAULT 0,"
                   " started_at REAL NOT NULL, finished_at REAL, seconds REAL, PRIMARY KEY (run_id, n))")
        db.execute("INSERT INTO runs (model_path, model_name, model_sha256, kind, framework, metric, mode,"
                   " threshold, strategy, runtime, started_at) VALUES ('/m.py', 'old.py', '0', 'ann', 'keras',"
                   " 'accuracy', 'max', 0.9, 'ladder', 'local', 1.0)")
        db.execute("INSERT INTO attempts (run_id, n, source_sha256, config_key, dir, started_at)"
                   " VALUES (1, 1, 'a', 'k', '/d', 1.0)")
    store = RunStore.open(tmp_path / "s.db")
    assert store.get_run(1)["model_name"] == "old.py"
    assert store.get_attempt(1, 1)["curve"] is None and store.get_attempt(1, 1)["warm_from"] is None
    assert _sql(str(tmp_path / "s.db"), "SELECT version FROM schema_version") == [(SCHEMA,)]
    assert store.acquire_lease("x", "me", 30)  # the leases table came with the migration


def _sql(location: str, query: str, args: tuple = ()) -> list:
    if location.startswith("postgresql://"):
        with psycopg.connect(location, autocommit=True) as db:
            cursor = db.execute(query.replace("?", "%s"), args)
            return cursor.fetchall() if cursor.description else []
    with sqlite3.connect(location) as db:
        return db.execute(query, args).fetchall()


# Store URLs (PUSHTUNE_DB): every password form is kept out of messages, what is not a URL of a
# supported scheme is refused in one line, and what cannot heal is not retried.
SECRET = "hunter2"


@pytest.mark.parametrize("url, says", [
    ("host=127.0.0.1 password=hunter2 dbname=pushtune", "a libpq key=value string is not a URL"),
    ("postgresql:pushtune:hunter2@127.0.0.1/pushtune", "not a URL (postgresql: without //)"),
    ("POSTGRESQL:pushtune:hunter2@127.0.0.1/pushtune", "not a URL (postgresql: without //)"),
    ("postgresql://pushtune:hun/ter2@127.0.0.1/pushtune", "holds an unencoded / # ? or @"),
    ("postgresql://pushtune:hun#ter2@127.0.0.1/pushtune", "holds an unencoded / # ? or @"),
    ("postgresql://pushtune:hun?ter2@127.0.0.1/pushtune", "holds an unencoded / # ? or @"),
    ("mysql://pushtune:hunter2@127.0.0.1/pushtune", "unknown database 'mysql'"),
    ("postgresql://pushtune@127.0.0.1:99999/pushtune?password=hunter2", 'invalid port number: "99999"'),
    ("postgresql://pushtune@127.0.0.1:5432/pushtune?password=hun#ter2&colour=red", "invalid URI query parameter"),
])
def test_a_store_url_that_cannot_work_is_one_line_without_its_password(cli, tmp_path, url, says):
    result = cli("runs", cwd=tmp_path, env={"PUSHTUNE_DB": url, "PUSHTUNE_DB_RETRY_SECONDS": "600"})
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("pushtune: error: ") and says in line, line
    assert "ter2" not in result.stdout + result.stderr and "***" in line
    assert "gave up after" not in line  # said at once, not retried for PUSHTUNE_DB_RETRY_SECONDS
    assert list(tmp_path.iterdir()) == []  # never an SQLite file named after the URL


def test_a_store_url_scheme_is_case_insensitive_and_a_bare_path_is_an_sqlite_file(cli, tmp_path, postgres_url):
    upper = "POSTGRESQL" + postgres_url[len("postgresql"):]
    assert cli("runs", cwd=tmp_path, env={"PUSHTUNE_DB": upper}).returncode == 0
    with psycopg.connect(postgres_url) as db:  # that PostgreSQL database became the store
        assert db.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA,)
    assert cli("runs", cwd=tmp_path, env={"PUSHTUNE_DB": f"SQLite://{tmp_path}/s.db"}).returncode == 0
    relative = cli("runs", cwd=tmp_path, env={"PUSHTUNE_DB": "store.db"})
    assert relative.returncode == 0 and f"no run store at {tmp_path / 'store.db'}" in relative.stdout
    assert list(tmp_path.iterdir()) == []  # read-only commands create no store


@pytest.mark.parametrize("refusal", ["no such database", "no such role"])
def test_a_server_that_refuses_us_is_not_retried(postgres_server, monkeypatch, refusal):
    monkeypatch.setenv("PUSHTUNE_DB_RETRY_SECONDS", "600")
    base, _ = postgres_server.url.rsplit("/", 1)
    url = f"{base}/no_such_db" if refusal == "no such database" else \
        base.replace("pushtune@", f"nobody:{SECRET}@") + "/pushtune"
    with pytest.raises(UserError) as raised:
        RunStore.open(url)
    message = str(raised.value)
    assert "does not exist" in message and "gave up after" not in message and SECRET not in message


def test_a_password_in_the_query_never_appears_in_messages(postgres_server):
    url = postgres_server.url.rsplit("/", 1)[0] + f"/no_such_db?password={SECRET}"
    with pytest.raises(UserError) as raised:
        RunStore.open(url)
    assert SECRET not in str(raised.value) and "?password=***" in str(raised.value)


def test_a_held_write_lock_is_a_one_line_error_after_the_lock_timeout(postgres_url, monkeypatch, tmp_path):
    from jobs.store.database import WRITE_LOCK_KEY

    monkeypatch.setenv("PUSHTUNE_ARTIFACTS", str(tmp_path))
    monkeypatch.setenv("PUSHTUNE_DB_LOCK_SECONDS", "1")
    store = RunStore.open(postgres_url)
    with psycopg.connect(postgres_url) as holder:  # a writer that hangs while holding the lock
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        with pytest.raises(UserError, match=r"^cannot write to the run store .*: another process has held "
                                            r"its write lock for over 1 s \(PUSHTUNE_DB_LOCK_SECONDS\)"):
            new_run(store)
        holder.rollback()
    assert store.get_run(new_run(store))["status"] == "running"  # the store works once it is let go
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["1"]  # the refused write left nothing


def test_a_write_by_a_driver_whose_lease_was_taken_is_refused(store_location, monkeypatch):
    from jobs.store.lease import Lease
    from jobs.store.run_store import LeaseLost

    monkeypatch.setenv("PUSHTUNE_LEASE_SECONDS", "30")
    store = RunStore.open(store_location)
    run_id = new_run(store)
    lease = Lease(store, f"run/{run_id}")
    with lease.held():
        store.update_run(run_id, stop_reason="mine")  # its own lease: written
        assert store.acquire_lease(lease.name, "b/1/other", 30, stale=lease.holder)  # taken over
        with pytest.raises(LeaseLost, match=rf"^lost the lease run/{run_id} \(b/1/other holds it now\)"):
            store.update_run(run_id, status="failed", stop_reason="stale")
        with pytest.raises(LeaseLost):
            store.add_restart(run_id, 1, "stale")
    assert store.get_run(run_id)["status"] == "running" and store.get_run(run_id)["stop_reason"] == "mine"
    assert store.restarts(run_id) == [] and store.lease(lease.name)["holder"] == "b/1/other"
    store.update_run(run_id, stop_reason="outside")  # writes outside a held lease are not fenced
