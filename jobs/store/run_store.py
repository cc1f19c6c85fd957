"""The run store: the single source of truth for runs, attempts and driver leases.

It lives in an SQLite file under PUSHTUNE_HOME (the default) or in PostgreSQL (`PUSHTUNE_DB`,
see jobs.store.database), with one schema and one set of queries for both. Every write is its own short
transaction holding the store's write lock, so several processes on several machines (a `pushtune
run`, Jenkins steps on any agent, monitors) can write at once. The schema is versioned: a store
is migrated forward on open, and one from a newer pushtune is refused rather than misread.

Run directories (each attempt's output, checkpoints, artifact and the report) live under
`PUSHTUNE_ARTIFACTS` (default: beside the SQLite file, or PUSHTUNE_HOME), which every agent of a
shared store must mount at the same path.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jobs.errors import UserError
from jobs.exit_codes import FAILED
from jobs.paths import work_tree_root
from jobs.store.database import Connection, Database, SQLiteDatabase, database_url, open_database

RUNS = """
CREATE TABLE IF NOT EXISTS runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    model_path      TEXT NOT NULL,
    model_name      TEXT NOT NULL,
    model_sha256    TEXT NOT NULL,
    kind            TEXT NOT NULL,
    framework       TEXT NOT NULL,
    git_commit      TEXT,
    metric          TEXT NOT NULL,
    mode            TEXT NOT NULL,
    threshold       REAL NOT NULL,
    strategy        TEXT NOT NULL,
    runtime         TEXT NOT NULL,
    options         TEXT NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL DEFAULT 'running',
    best_attempt    INTEGER,
    run_dir         TEXT NOT NULL DEFAULT '',
    started_at      REAL NOT NULL,
    finished_at     REAL,
    stop_reason     TEXT
)"""
ATTEMPTS = """
CREATE TABLE IF NOT EXISTS attempts (
    run_id          INTEGER NOT NULL REFERENCES runs(id),
    n               INTEGER NOT NULL,
    status          TEXT NOT NULL DEFAULT 'running',
    parent          INTEGER,
    tweak_name      TEXT,
    tweak           TEXT,
    tweaks          TEXT NOT NULL DEFAULT '[]',
    params          TEXT NOT NULL DEFAULT '{}',
    source_sha256   TEXT NOT NULL,
    config_key      TEXT NOT NULL,
    diff            TEXT NOT NULL DEFAULT '',
    dir             TEXT NOT NULL,
    metric_value    REAL,
    metrics         TEXT,
    artifact_path   TEXT,
    artifact_sha256 TEXT,
    error           TEXT,
    log_tail        TEXT,
    exit_code       INTEGER,
    oom_killed      INTEGER NOT NULL DEFAULT 0,
    container       TEXT,
    restarts        INTEGER NOT NULL DEFAULT 0,
    started_at      REAL NOT NULL,
    finished_at     REAL,
    seconds         REAL,
    PRIMARY KEY (run_id, n)
)"""
RESTARTS = """
CREATE TABLE IF NOT EXISTS restarts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    at              REAL NOT NULL,
    reason          TEXT NOT NULL,
    exit_code       INTEGER,
    resumed_epoch   INTEGER,
    actor           TEXT NOT NULL DEFAULT 'run'
)"""
NOTIFICATIONS = """
CREATE TABLE IF NOT EXISTS notifications (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER NOT NULL,
    at              REAL NOT NULL,
    channel         TEXT NOT NULL,
    recipients      TEXT NOT NULL DEFAULT '[]',
    status          TEXT NOT NULL,
    error           TEXT
)"""
LEASES = """
CREATE TABLE IF NOT EXISTS leases (
    name            TEXT PRIMARY KEY,
    holder          TEXT NOT NULL,
    acquired_at     REAL NOT NULL,
    expires_at      REAL NOT NULL
)"""
SCHEMA_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"

# Columns added after the first release (schema 2), for stores created before them: (table, column, type).
ADDED_COLUMNS = (
    ("attempts", "curve", "TEXT"),  # the kit's history.json: per-epoch loss and metrics
    ("attempts", "reason", "TEXT"),  # why the strategy chose this attempt
    ("attempts", "warm_from", "INTEGER"),  # continued from this attempt's checkpoint …
    ("attempts", "warm_epoch", "INTEGER"),  # … at this epoch
)


def _columns(db: Connection, database: Database, table: str) -> set[str]:
    if database.backend == "sqlite":
        return {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
    rows = db.execute("SELECT column_name AS name FROM information_schema.columns "
                      "WHERE table_schema = current_schema() AND table_name = ?", (table,))
    return {row["name"] for row in rows}


def _schema_1(db: Connection, database: Database) -> None:
    for statement in (RUNS, ATTEMPTS, RESTARTS, NOTIFICATIONS):
        db.execute(database.ddl(statement))


def _schema_2(db: Connection, database: Database) -> None:
    for table, column, kind in ADDED_COLUMNS:
        if column not in _columns(db, database, table):  # a store from before versions may have some
            db.execute(database.ddl(f"ALTER TABLE {table} ADD COLUMN {column} {kind}"))


def _schema_3(db: Connection, database: Database) -> None:
    db.execute(database.ddl(LEASES))


# Model versions (jobs.deploy.versions): each passing run's best artifact, numbered per name (1, 2, …,
# never reused), a copy of it under PUSHTUNE_ARTIFACTS/models/<name>/v<N>/, and at most one
# `production` version per name; every change of production is an event (who, when, what, why).
MODEL_VERSIONS = """
CREATE TABLE IF NOT EXISTS model_versions (
    name            TEXT NOT NULL,
    version         INTEGER NOT NULL,
    status          TEXT NOT NULL DEFAULT 'candidate',
    reason          TEXT,
    sha256          TEXT NOT NULL,
    artifact_path   TEXT NOT NULL,
    run_id          INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    metric          TEXT NOT NULL,
    mode            TEXT NOT NULL,
    metric_value    REAL NOT NULL,
    threshold       REAL NOT NULL,
    params          TEXT NOT NULL DEFAULT '{}',
    kind            TEXT,
    framework       TEXT,
    runtime         TEXT,
    image           TEXT,
    git_commit      TEXT,
    source_repo     TEXT,
    source_path     TEXT,
    created_at      REAL NOT NULL,
    promoted_at     REAL,
    PRIMARY KEY (name, version)
)"""
MODEL_EVENTS = """
CREATE TABLE IF NOT EXISTS model_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL,
    version         INTEGER,
    action          TEXT NOT NULL,
    reason          TEXT NOT NULL,
    actor           TEXT NOT NULL,
    at              REAL NOT NULL,
    run_id          INTEGER,
    previous        INTEGER
)"""


def _schema_4(db: Connection, database: Database) -> None:
    db.execute(database.ddl(MODEL_VERSIONS))
    db.execute(database.ddl(MODEL_EVENTS))
    # one production version per name, and one version per run, whatever writes the store
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS model_versions_production ON model_versions (name) "
               "WHERE status = 'production'")
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS model_versions_run ON model_versions (run_id)")


def _schema_5(db: Connection, database: Database) -> None:
    # what the launcher's capture saw of a script (jobs.autolog): frameworks, training facts,
    # where the metric and the artifact came from
    db.execute(database.ddl("ALTER TABLE attempts ADD COLUMN capture TEXT"))


def _schema_6(db: Connection, database: Database) -> None:
    # the form of a version the server loads (jobs.serve.server): its ONNX file, made in the attempt's
    # sandbox, with its sha256; or why the version has no form that is safe to load
    for column in ("onnx_path", "onnx_sha256", "unservable"):
        db.execute(database.ddl(f"ALTER TABLE model_versions ADD COLUMN {column} TEXT"))


# The versioned migrations, oldest first: MIGRATIONS[i] takes a store from version i to i + 1.
# A store without a schema_version table but with runs predates versions: it is version 1.
MIGRATIONS: tuple[Callable[[Connection, Database], None], ...] = (
    _schema_1, _schema_2, _schema_3, _schema_4, _schema_5, _schema_6)
SCHEMA = len(MIGRATIONS)

JSON_COLUMNS = {"options", "tweaks", "params", "metrics", "recipients", "curve", "capture"}
STORE_DIR = ".pushtune"  # the default store's directory
MAX_ID = 2**63 - 1  # the largest INTEGER either database holds: no run or attempt has a bigger id


def home() -> Path:
    """Where pushtune keeps its store and run directories: $PUSHTUNE_HOME; else, inside a git work
    tree, the nearest existing .pushtune from here up to the tree's top, or the top's own (so every
    subdirectory and the git hook share one store); else ./.pushtune."""
    if os.environ.get("PUSHTUNE_HOME"):
        return Path(os.environ["PUSHTUNE_HOME"]).resolve()
    directory = Path.cwd()
    top = work_tree_root(directory) or directory
    while directory != top and not (directory / STORE_DIR).is_dir():
        directory = directory.parent
    return (directory / STORE_DIR).resolve()


def _default_database() -> Database:
    return open_database(database_url() or "", home() / "pushtune.db")


def location_of(database: Database) -> str:
    """Where a store is, for messages: the directory of an SQLite store's pushtune.db (or another
    file's path), a database's URL without its password."""
    if isinstance(database, SQLiteDatabase):
        path = database.path.absolute()
        return str(path.parent if path.name == "pushtune.db" else path)
    return database.name


def no_store_yet() -> str | None:
    """For commands that only read: "no runs yet (no run store at …)" when the store does not
    exist (they must not create one), else None."""
    database = _default_database()
    if isinstance(database, SQLiteDatabase) and not database.path.exists():
        return f"no runs yet (no run store at {location_of(database)})"
    return None


def keep_out_of_git(directory: Path) -> None:
    """A `.gitignore` of `*` in pushtune's own .pushtune directory inside a git work tree, so that
    `git add -A` never commits the store, models or checkouts. Never in a directory of another name:
    PUSHTUNE_HOME may be a directory of the user's."""
    ignore = directory / ".gitignore"
    if directory.name != STORE_DIR or ignore.exists() or work_tree_root(directory.parent) is None:
        return
    try:
        ignore.write_text("# written by pushtune: nothing here belongs in git\n*\n", encoding="utf-8")
    except OSError:
        pass  # a convenience: the store works without it


def run_dir(run: dict[str, Any]) -> Path:
    """The run's directory, or a UserError when it has none (its driver died while starting it,
    before pushtune made both at once) or it is gone: never the current directory."""
    if not run["run_dir"]:
        raise UserError(f"run {run['id']} has no run directory (its driver died while starting it)")
    path = Path(run["run_dir"])
    if not path.is_dir():
        raise UserError(f"run {run['id']}: its directory {path} is missing")
    return path


def attempt_dir(attempt: dict[str, Any]) -> Path:
    """The attempt's directory, or a UserError when it has none yet or it is gone."""
    path = Path(attempt["dir"]) if attempt["dir"] else None
    if path is None or not path.is_dir():
        raise UserError(f"attempt {attempt['n']} of run {attempt['run_id']}: its directory "
                        f"{path or '(none recorded)'} is missing")
    return path


def artifacts_home() -> Path | None:
    """$PUSHTUNE_ARTIFACTS: the shared directory that holds the run directories, if set."""
    text = os.environ.get("PUSHTUNE_ARTIFACTS")
    return Path(text).resolve() if text else None


def _decode(row: dict, store: str) -> dict[str, Any]:
    record = dict(row)
    for key in JSON_COLUMNS & record.keys():
        if record[key] is not None:
            try:
                record[key] = json.loads(record[key])
            except (TypeError, ValueError) as exc:
                whose = f"attempt {record['n']} of run {record['run_id']}" if "n" in record else \
                    f"run {record.get('run_id', record['id'])}"
                raise UserError(f"the {key} column of {whose} in {store} is not valid JSON ({exc}): "
                                f"repair the row, or restore the store from a backup") from None
    return record


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v) if k in JSON_COLUMNS and v is not None else v for k, v in values.items()}


T = TypeVar("T")


class EmptyBesideRuns(UserError):
    """The store has no tables, yet runs are recorded beside it."""


class LeaseLost(UserError):
    """A write refused because the lease its driver holds is no longer its own (jobs.store.lease)."""

    exit_code = FAILED


# The leases this context's driver holds (name, holder): every write it makes checks, in the same
# transaction and under the store's one write lock, that each is still its own (fencing), so a
# driver that was paused or cut off past its lease can record nothing once another has taken over.
_FENCES: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("pushtune_fences", default=())


def _check_fences(db: Connection, fences: tuple[tuple[str, str], ...]) -> None:
    for name, holder in fences:
        row = db.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
        if row is None or row["holder"] != holder:
            taker = f"{row['holder']} holds it now" if row else "it was let go"
            raise LeaseLost(f"lost the lease {name} ({taker}): this driver records nothing more")


def _insert(db: Connection, table: str, fields: dict[str, Any]) -> None:
    values = _encode(fields)
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(values.values()))


def _update(db: Connection, table: str, fields: dict[str, Any], where: str, key: list) -> None:
    values = _encode(fields)
    assignments = ", ".join(f"{k} = ?" for k in values)
    db.execute(f"UPDATE {table} SET {assignments} WHERE {where}", [*values.values(), *key])


@dataclass
class RunStore:
    database: Database
    artifacts: Path  # holds runs/<id>/
    local: Path = field(default_factory=lambda: home())  # this agent's own files (the weights cache)

    @classmethod
    def open(cls, location: Path | str | None = None) -> RunStore:
        """The store at `location` (an SQLite file or a database URL), else $PUSHTUNE_DB, else
        pushtune.db under PUSHTUNE_HOME; migrated to this pushtune's schema."""
        database = open_database(location, home() / "pushtune.db") if location else _default_database()
        if isinstance(database, SQLiteDatabase):
            beside = database.path.parent.absolute()
            store = cls(database, artifacts_home() or beside, beside)
        else:
            store = cls(database, artifacts_home() or home(), home())
        store._migrate()
        return store

    @property
    def path(self) -> Path:
        """The SQLite file (tests and messages about one); a PostgreSQL store has none."""
        if not isinstance(self.database, SQLiteDatabase):
            raise AttributeError("a PostgreSQL run store has no file")
        return self.database.path

    @property
    def name(self) -> str:
        return self.database.name

    @contextmanager
    def fenced(self, lease: str, holder: str) -> Iterator[None]:
        """Within: every write of this context is refused (LeaseLost) unless `holder` still
        holds `lease`, checked in the write's own transaction."""
        token = _FENCES.set((*_FENCES.get(), (lease, holder)))
        try:
            yield
        finally:
            _FENCES.reset(token)

    def _write(self, work: Callable[[Connection], T]) -> T:
        fences = _FENCES.get()
        if not fences:
            return self.database.write(work)

        def fenced(db: Connection) -> T:
            _check_fences(db, fences)
            return work(db)

        return self.database.write(fenced)

    @property
    def runs_dir(self) -> Path:
        return self.artifacts / "runs"

    def _migrate(self) -> None:
        try:
            self._migrate_once()
        except EmptyBesideRuns:
            # Another process may be creating this store right now: it commits its tables before
            # it records a run, so a second look, begun after this one saw the run's folder, sees
            # those tables. A store that really was emptied is refused again.
            self._migrate_once()

    def _migrate_once(self) -> None:
        database = self.database
        if isinstance(database, SQLiteDatabase) and database.is_empty_file():  # before SQLite writes a header
            self._check_own(set(), existed=True)
        existed = not isinstance(database, SQLiteDatabase) or database.path.exists()
        if database.read(lambda db: self._version(db, existed)) == SCHEMA:
            return
        database.write(lambda db: self._migrate_locked(db, existed))

    def _migrate_locked(self, db: Connection, existed: bool) -> None:
        version = self._version(db, existed)  # another process may have migrated it meanwhile
        for migration in MIGRATIONS[version:]:
            migration(db, self.database)
        db.execute(SCHEMA_VERSION_TABLE)
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA,))

    def _version(self, db: Connection, existed: bool) -> int:
        """The store's schema version (0: a new store); a UserError for one this code cannot use."""
        tables = self.database.tables(db)
        self._check_own(tables, existed)
        if "schema_version" not in tables:
            return 1 if "runs" in tables else 0
        rows = db.execute("SELECT version FROM schema_version").fetchall()
        if len(rows) != 1 or not isinstance(rows[0]["version"], int):
            raise UserError(f"{self.name} has a damaged schema_version table: restore the store from a backup")
        version = rows[0]["version"]
        if version > SCHEMA:
            raise UserError(f"{self.name} is a run store of schema {version}, newer than this pushtune "
                            f"understands ({SCHEMA}): upgrade pushtune on this machine")
        return version

    def _check_own(self, tables: set[str], existed: bool) -> None:
        """A store that is someone else's database, or an empty one beside recorded runs (emptied
        by accident? a wrong PUSHTUNE_DB?), is not silently made a new store."""
        if tables and "runs" not in tables:
            raise UserError(f"{self.name} is not a pushtune run store (it has other tables): "
                            f"move it aside or point PUSHTUNE_HOME or PUSHTUNE_DB elsewhere")
        if tables or not existed:
            return
        runs = [p for p in self.runs_dir.glob("*") if p.name.isdigit() and p.is_dir()]
        if runs:
            raise EmptyBesideRuns(f"{self.name} is empty but {self.runs_dir} holds {len(runs)} run(s): restore "
                            f"the store from a backup, or move both aside to start a new store")

    def _ids(self, run_id: int, n: int | None = None) -> None:
        """A UserError for an id no INTEGER column can hold (rather than an OverflowError)."""
        if not -MAX_ID <= run_id <= MAX_ID:
            raise UserError(f"no run {run_id} in {self.name}")
        if n is not None and not -MAX_ID <= n <= MAX_ID:
            raise UserError(f"no attempt {n} in run {run_id}")

    def _rows(self, query: str, args: tuple | list = ()) -> list[dict[str, Any]]:
        rows = self.database.read(lambda db: db.execute(query, args).fetchall())
        return [_decode(row, self.name) for row in rows]

    # runs

    def create_run(self, files: dict[str, str] | None = None, **fields: Any) -> int:
        """Record a run; returns its id. Unless `run_dir` is given, its directory runs/<id>/ (with
        `files`, name → text) is made in the same transaction: a run is never recorded without
        it, and the id skips every runs/<n> already on disk (a recreated store's too)."""
        fields.setdefault("started_at", time.time())
        laid_out = "run_dir" in fields  # by the caller

        first = False

        def create(db: Connection) -> int:
            nonlocal first
            first = db.execute("SELECT COUNT(*) AS n FROM runs").fetchone()["n"] == 0
            run_id = self.database.next_run_id(db)
            if laid_out:
                _insert(db, "runs", {**fields, "id": run_id})
                return run_id
            path = self._new_run_dir(run_id, files or {})
            try:
                _insert(db, "runs", {**fields, "id": int(path.name), "run_dir": str(path)})
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)  # a run not recorded leaves no directory
                raise
            return int(path.name)

        run_id = self._write(create)
        if first:
            self._announce_new_store()
        return run_id

    def _announce_new_store(self) -> None:
        """With its first run, say once where the store is (it depends on where the user stands)."""
        print(f"pushtune: new run store at {location_of(self.database)}", file=sys.stderr, flush=True)
        for directory in {self.local, self.artifacts}:
            keep_out_of_git(directory)

    def _new_run_dir(self, run_id: int, files: dict[str, str]) -> Path:
        """runs/<run_id>/ with the files, or the first runs/<n> after it that does not exist
        yet: never one that does (an older run's, whatever the store says)."""
        path = None
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            while path is None:
                try:
                    (self.runs_dir / str(run_id)).mkdir()
                    path = self.runs_dir / str(run_id)
                except FileExistsError:
                    run_id += 1
            for name, text in files.items():
                (path / name).write_text(text, encoding="utf-8")
        except OSError as exc:
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
            raise UserError(f"cannot make a run directory in {self.runs_dir}: {exc.strerror}") from None
        return path

    def update_run(self, run_id: int, **fields: Any) -> None:
        self._ids(run_id)
        self._write(lambda db: _update(db, "runs", fields, "id = ?", [run_id]))

    def note_running(self, run_id: int, note: str | None) -> None:
        """Why a running run is stuck, kept as its stop_reason until it finishes; a finished
        run's stop_reason is never touched."""
        self._ids(run_id)
        self._write(lambda db: db.execute(
            "UPDATE runs SET stop_reason = ? WHERE id = ? AND status = 'running'", (note, run_id)))

    def get_run(self, run_id: int) -> dict[str, Any]:
        self._ids(run_id)
        rows = self._rows("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise UserError(f"no run {run_id} in {self.name}")
        return rows[0]

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last `limit` runs, newest first (a negative limit: all of them)."""
        if limit < 0:
            return self._rows("SELECT * FROM runs ORDER BY id DESC")
        return self._rows("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (min(limit, MAX_ID),))

    def run_ids(self, status: str) -> list[int]:
        """The runs with this status, oldest first (ids only: one bad row spoils no listing)."""
        rows = self.database.read(lambda db: db.execute(
            "SELECT id FROM runs WHERE status = ? ORDER BY id", (status,)).fetchall())
        return [row["id"] for row in rows]

    # attempts

    def add_attempt(self, run_id: int, dir_of: Callable[[int], str] | None = None, **fields: Any) -> int:
        """Record a new attempt, numbered after the run's last one; returns its number.
        `dir_of(n)` names its directory in the same write, so no attempt is ever without one."""
        fields.setdefault("started_at", time.time())
        self._ids(run_id)

        def add(db: Connection) -> int:
            last = db.execute("SELECT COALESCE(MAX(n), 0) AS last FROM attempts WHERE run_id = ?",
                              (run_id,)).fetchone()["last"]
            if dir_of is not None:
                fields["dir"] = dir_of(last + 1)
            _insert(db, "attempts", {"run_id": run_id, "n": last + 1, **fields})
            return last + 1

        return self._write(add)

    def update_attempt(self, run_id: int, n: int, **fields: Any) -> None:
        self._ids(run_id, n)
        self._write(lambda db: _update(db, "attempts", fields, "run_id = ? AND n = ?", [run_id, n]))

    def attempts(self, run_id: int) -> list[dict[str, Any]]:
        self._ids(run_id)
        return self._rows("SELECT * FROM attempts WHERE run_id = ? ORDER BY n", (run_id,))

    def get_attempt(self, run_id: int, n: int) -> dict[str, Any]:
        self._ids(run_id, n)
        rows = self._rows("SELECT * FROM attempts WHERE run_id = ? AND n = ?", (run_id, n))
        if not rows:
            raise UserError(f"no attempt {n} in run {run_id}")
        return rows[0]

    # restarts and notifications

    def add_restart(self, run_id: int, attempt: int, reason: str, **fields: Any) -> None:
        fields.setdefault("at", time.time())
        self._ids(run_id, attempt)

        def add(db: Connection) -> None:
            _insert(db, "restarts", {"run_id": run_id, "attempt": attempt, "reason": reason, **fields})
            db.execute("UPDATE attempts SET restarts = restarts + 1 WHERE run_id = ? AND n = ?",
                       (run_id, attempt))

        self._write(add)

    def restarts(self, run_id: int, attempt: int | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM restarts WHERE run_id = ?", [run_id]
        if attempt is not None:
            query, args = query + " AND attempt = ?", [run_id, attempt]
        self._ids(run_id, attempt)
        return self._rows(query + " ORDER BY id", args)

    def add_notification(self, run_id: int, channel: str, status: str, **fields: Any) -> None:
        fields.setdefault("at", time.time())
        self._ids(run_id)
        self._write(lambda db: _insert(
            db, "notifications", {"run_id": run_id, "channel": channel, "status": status, **fields}))

    def notifications(self, run_id: int) -> list[dict[str, Any]]:
        self._ids(run_id)
        return self._rows("SELECT * FROM notifications WHERE run_id = ? ORDER BY id", (run_id,))

    # driver leases (jobs.store.lease)

    def acquire_lease(self, name: str, holder: str, seconds: float, *, stale: str | None = None) -> bool:
        """Take the lease `name` for `holder` when it is free, expired, already `holder`'s, or
        held by `stale` (a holder the caller knows is dead, or hands it over): one conditional
        write, so of several callers at once exactly one wins."""
        def take(db: Connection) -> bool:
            now = time.time()
            db.execute(
                "INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "acquired_at = excluded.acquired_at, expires_at = excluded.expires_at "
                "WHERE leases.holder = excluded.holder OR leases.holder = ? OR leases.expires_at < ?",
                (name, holder, now, now + seconds, stale or holder, now))
            row = db.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
            return row["holder"] == holder

        return self.database.write(take)

    def renew_lease(self, name: str, holder: str, seconds: float, *, patience: float | None = None) -> bool:
        """Push the lease's expiry on; False when `holder` no longer holds it. An unreachable
        store is retried for `patience` seconds at most, when given."""
        def renew(db: Connection) -> bool:
            cursor = db.execute("UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?",
                                (time.time() + seconds, name, holder))
            return cursor.rowcount == 1

        return self.database.write(renew, patience=patience)

    def release_lease(self, name: str, holder: str) -> None:
        self.database.write(lambda db: db.execute(
            "DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder)))

    def lease(self, name: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM leases WHERE name = ?", (name,))
        return rows[0] if rows else None

    # model versions (jobs.deploy.versions)

    @property
    def models_dir(self) -> Path:
        """models/<name>/v<N>/: each version's own copy of its artifact, kept when runs are deleted."""
        return self.artifacts / "models"

    def add_model_version(self, name: str, staged: Path, artifact_name: str, *, onnx_name: str | None = None,
                          check: Callable[[Connection], None] | None = None, **fields: Any) -> dict[str, Any]:
        """Record the next version of `name` (its last number + 1: no gap, never reused) and move
        `staged` (a directory inside models/<name>/ holding `artifact_name`, and `onnx_name`) to
        models/<name>/v<N>/ in the same write: a version is never recorded without its files.
        `check(db)` runs first in that write (it raises to refuse). Returns the version's record."""
        fields.setdefault("created_at", time.time())
        moved: list[Path] = []  # where a try that lost its connection put the files

        def add(db: Connection) -> int:
            if moved:  # a retried write (PostgreSQL): the files go back before anything else
                done = db.execute("SELECT version FROM model_versions WHERE run_id = ?",
                                  (fields["run_id"],)).fetchone()
                if done is not None and moved[0].name == f"v{done['version']}":
                    return done["version"]  # that try did commit
                moved.pop().rename(staged)
            if check is not None:
                check(db)
            last = db.execute("SELECT COALESCE(MAX(version), 0) AS last FROM model_versions WHERE name = ?",
                              (name,)).fetchone()["last"]
            version = last + 1
            target = self.models_dir / name / f"v{version}"
            if target.exists():  # left by a registration that died before its write, or a recreated store
                target.rename(target.with_name(f"{target.name}.orphaned-{time.time_ns()}"))
            staged.rename(target)
            moved.append(target)
            try:
                _insert(db, "model_versions", {**fields, "name": name, "version": version,
                                               "artifact_path": str(target / artifact_name),
                                               "onnx_path": str(target / onnx_name) if onnx_name else None})
            except BaseException:
                moved.pop().rename(staged)
                raise
            return version

        version = self._write(add)
        return self.get_model_version(name, version)

    def model_versions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every version (of `name`), by name then number."""
        if name is None:
            return self._rows("SELECT * FROM model_versions ORDER BY name, version")
        return self._rows("SELECT * FROM model_versions WHERE name = ? ORDER BY version", (name,))

    def get_model_version(self, name: str, version: int) -> dict[str, Any]:
        if not -MAX_ID <= version <= MAX_ID:
            raise UserError(f"{name} has no version {version}")
        rows = self._rows("SELECT * FROM model_versions WHERE name = ? AND version = ?", (name, version))
        if not rows:
            raise UserError(f"{name} has no version {version}")
        return rows[0]

    def model_version_of_run(self, run_id: int) -> dict[str, Any] | None:
        """The version the run registered, if any (a run registers at most one)."""
        self._ids(run_id)
        rows = self._rows("SELECT * FROM model_versions WHERE run_id = ?", (run_id,))
        return rows[0] if rows else None

    def model_names(self) -> list[str]:
        rows = self.database.read(lambda db: db.execute(
            "SELECT DISTINCT name FROM model_versions ORDER BY name").fetchall())
        return [row["name"] for row in rows]

    def production_version(self, name: str) -> dict[str, Any] | None:
        """The production version of `name`: its number, sha256 and artifact (a cheap query, made
        by the server on every request), or None."""
        rows = self.database.read(lambda db: db.execute(
            "SELECT version, sha256, artifact_path, onnx_path, onnx_sha256, unservable FROM model_versions "
            "WHERE name = ? AND status = 'production'",
            (name,)).fetchall())
        return dict(rows[0]) if rows else None

    def production_versions(self) -> dict[str, dict[str, Any]]:
        """name → its production version's record, for every name that has one."""
        return {row["name"]: row for row in self._rows(
            "SELECT * FROM model_versions WHERE status = 'production' ORDER BY name")}

    def change_production(self, name: str, decide: Callable[[list[dict[str, Any]]], dict[str, Any] | None],
                          *, actor: str, run_id: int | None = None) -> dict[str, Any] | None:
        """One write that decides and records a change of `name`'s production version.

        `decide(versions)` sees all of the name's versions (oldest first) as they are under the
        write lock and returns None (nothing to record) or {"version": the version concerned,
        "promote": whether it becomes production, "action": what happened, "reason": why,
        "retire_reason": what the replaced version's record says}. It may raise UserError, and
        nothing is written. The replaced production version becomes `retired`; the event (who,
        when, what, why, the previous production version) is recorded and returned."""
        def change(db: Connection) -> dict[str, Any] | None:
            rows = db.execute("SELECT * FROM model_versions WHERE name = ? ORDER BY version", (name,)).fetchall()
            versions = [_decode(row, self.name) for row in rows]
            outcome = decide(versions)
            if outcome is None:
                return None
            now = time.time()
            current = next((v["version"] for v in versions if v["status"] == "production"), None)
            target = outcome.get("version")
            if outcome.get("promote") and target != current:
                if current is not None:
                    db.execute("UPDATE model_versions SET status = 'retired', reason = ? "
                               "WHERE name = ? AND version = ?",
                               (outcome.get("retire_reason") or f"replaced by v{target}", name, current))
                db.execute("UPDATE model_versions SET status = 'production', promoted_at = ?, reason = ? "
                           "WHERE name = ? AND version = ?", (now, outcome["reason"], name, target))
            elif target is not None and not outcome.get("promote"):
                db.execute("UPDATE model_versions SET reason = ? "
                           "WHERE name = ? AND version = ? AND status = 'candidate'",
                           (outcome["reason"], name, target))
            event = {"name": name, "version": target, "action": outcome["action"], "reason": outcome["reason"],
                     "actor": actor, "at": now, "run_id": run_id, "previous": current}
            _insert(db, "model_events", event)
            return event

        return self._write(change)

    def add_model_event(self, name: str, action: str, reason: str, *, actor: str, **fields: Any) -> None:
        fields.setdefault("at", time.time())
        self._write(lambda db: _insert(
            db, "model_events", {"name": name, "action": action, "reason": reason, "actor": actor, **fields}))

    def model_events(self, name: str | None = None, run_id: int | None = None) -> list[dict[str, Any]]:
        """The model events (of `name`, or about run `run_id`), oldest first."""
        if run_id is not None:
            self._ids(run_id)
            return self._rows("SELECT * FROM model_events WHERE run_id = ? ORDER BY id", (run_id,))
        if name is not None:
            return self._rows("SELECT * FROM model_events WHERE name = ? ORDER BY id", (name,))
        return self._rows("SELECT * FROM model_events ORDER BY id")
