"""The run store: a SQLite file that is the single source of truth for runs and attempts.

Every write is its own short transaction in WAL mode with a busy timeout, so several processes
(a `pushtune run`, a Jenkins step, the monitor) can write to the same file at once.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from jobs.errors import UserError

SCHEMA = """
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
);
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
    curve           TEXT,
    reason          TEXT,
    warm_from       INTEGER,
    warm_epoch      INTEGER,
    PRIMARY KEY (run_id, n)
);
CREATE TABLE IF NOT EXISTS restarts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    at              REAL NOT NULL,
    reason          TEXT NOT NULL,
    exit_code       INTEGER,
    resumed_epoch   INTEGER,
    actor           TEXT NOT NULL DEFAULT 'run'
);
CREATE TABLE IF NOT EXISTS notifications (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER NOT NULL,
    at              REAL NOT NULL,
    channel         TEXT NOT NULL,
    recipients      TEXT NOT NULL DEFAULT '[]',
    status          TEXT NOT NULL,
    error           TEXT
);
"""

# Columns added after the first release, for stores created before them: (table, column, type).
ADDED_COLUMNS = (
    ("attempts", "curve", "TEXT"),  # the kit's history.json: per-epoch loss and metrics
    ("attempts", "reason", "TEXT"),  # why the strategy chose this attempt
    ("attempts", "warm_from", "INTEGER"),  # continued from this attempt's checkpoint …
    ("attempts", "warm_epoch", "INTEGER"),  # … at this epoch
)

JSON_COLUMNS = {"options", "tweaks", "params", "metrics", "recipients", "curve"}
RUN_STATUSES = ("running", "passed", "below_threshold", "failed", "interrupted")
MAX_ID = 2**63 - 1  # SQLite's largest INTEGER: no run or attempt has a bigger id
# SQLite result codes that mean the file is no (longer a) database, and those a user can fix
# (permissions, a full disk, a lock held too long): both become one-line errors.
DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
ENVIRONMENT = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR,
               sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM}


def home() -> Path:
    """Where pushtune keeps its store and run directories: $PUSHTUNE_HOME or ./.pushtune."""
    return Path(os.environ.get("PUSHTUNE_HOME") or ".pushtune").resolve()


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


def _decode(row: sqlite3.Row, store: Path) -> dict[str, Any]:
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


def _insert(db: sqlite3.Connection, table: str, fields: dict[str, Any]) -> int:
    values = _encode(fields)
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    cursor = db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(values.values()))
    return int(cursor.lastrowid)


def _update(db: sqlite3.Connection, table: str, fields: dict[str, Any], where: str, key: list) -> None:
    values = _encode(fields)
    assignments = ", ".join(f"{k} = ?" for k in values)
    db.execute(f"UPDATE {table} SET {assignments} WHERE {where}", [*values.values(), *key])


def _add_missing_columns(db: sqlite3.Connection) -> None:
    for table, column, kind in ADDED_COLUMNS:
        present = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            try:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise


@dataclass
class RunStore:
    path: Path

    @classmethod
    def open(cls, path: Path | str | None = None) -> "RunStore":
        store = cls(Path(path) if path else home() / "pushtune.db")
        try:
            store.path.parent.mkdir(parents=True, exist_ok=True)
            existed = store.path.exists()
            if existed and store.path.stat().st_size == 0:  # before SQLite writes a header into it
                store._check_own(set(), existed)
            with store._connect() as db:
                tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
                store._check_own({row["name"] for row in tables}, existed)
                db.executescript(SCHEMA)
                _add_missing_columns(db)
        except (OSError, sqlite3.Error) as exc:
            raise UserError(f"cannot open the run store {store.path}: {exc}") from None
        return store

    @property
    def runs_dir(self) -> Path:
        return self.path.parent.absolute() / "runs"

    def _check_own(self, tables: set[str], existed: bool) -> None:
        """A store file that is someone else's database, or an empty one beside recorded runs
        (emptied by accident?), is not silently made a new store."""
        if tables and "runs" not in tables:
            raise UserError(f"{self.path} is not a pushtune run store (it has other tables): "
                            f"move it aside or set PUSHTUNE_HOME to another directory")
        if tables or not existed:
            return
        runs = [p for p in self.runs_dir.glob("*") if p.name.isdigit() and p.is_dir()]
        if runs:
            raise UserError(f"{self.path} is empty but {self.runs_dir} holds {len(runs)} run(s): restore "
                            f"{self.path.name} from a backup, or move both aside to start a new store")

    def _problem(self, exc: sqlite3.Error) -> Exception:
        """The one-line error for a store SQLite cannot use, or `exc` itself (a bug)."""
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code == sqlite3.SQLITE_NOTADB and not self._has_sqlite_header():
            return UserError(f"{self.path} is not an SQLite database: move it aside or set "
                             f"PUSHTUNE_HOME to another directory")
        if code in DAMAGED:
            return UserError(f"{self.path} is damaged ({exc}): restore it from a backup, or move it "
                             f"aside (with its -wal and -shm files) to start a new store")
        if code in ENVIRONMENT:
            return UserError(f"cannot use the run store {self.path}: {exc}")
        return exc

    def _has_sqlite_header(self) -> bool:
        try:
            with open(self.path, "rb") as handle:
                return handle.read(16) == b"SQLite format 3\0"
        except OSError:
            return True  # cannot tell

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._problem(exc) from None
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        except sqlite3.Error as exc:
            problem = self._problem(exc)
            if problem is exc:
                raise
            raise problem from None
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _ids(self, run_id: int, n: int | None = None) -> None:
        """A UserError for an id no SQLite INTEGER can hold (rather than an OverflowError)."""
        if not -MAX_ID <= run_id <= MAX_ID:
            raise UserError(f"no run {run_id} in {self.path}")
        if n is not None and not -MAX_ID <= n <= MAX_ID:
            raise UserError(f"no attempt {n} in run {run_id}")

    # runs

    def create_run(self, files: dict[str, str] | None = None, **fields: Any) -> int:
        """Record a run; returns its id. Unless `run_dir` is given, its directory runs/<id>/ (with
        `files`, name → text) is made in the same transaction: a run is never recorded without
        it, and the id skips every runs/<n> already on disk (a recreated store's too)."""
        fields.setdefault("started_at", time.time())
        with self._write() as db:
            if "run_dir" in fields:  # laid out by the caller
                return _insert(db, "runs", fields)
            (next_id,) = db.execute(
                "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'runs'), 0),"
                " COALESCE((SELECT MAX(id) FROM runs), 0)) + 1").fetchone()
            path = self._new_run_dir(next_id, files or {})
            try:
                return _insert(db, "runs", {**fields, "id": int(path.name), "run_dir": str(path)})
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)  # a run not recorded leaves no directory
                raise

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
        with self._write() as db:
            _update(db, "runs", fields, "id = ?", [run_id])

    def note_running(self, run_id: int, note: str | None) -> None:
        """Why a running run is stuck, kept as its stop_reason until it finishes; a finished
        run's stop_reason is never touched."""
        self._ids(run_id)
        with self._write() as db:
            db.execute("UPDATE runs SET stop_reason = ? WHERE id = ? AND status = 'running'", (note, run_id))

    def get_run(self, run_id: int) -> dict[str, Any]:
        self._ids(run_id)
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UserError(f"no run {run_id} in {self.path}")
        return _decode(row, self.path)

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last `limit` runs, newest first (a negative limit: all of them)."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?",
                              (max(min(limit, MAX_ID), -1),)).fetchall()
        return [_decode(r, self.path) for r in rows]

    def run_ids(self, status: str) -> list[int]:
        """The runs with this status, oldest first (ids only: one bad row spoils no listing)."""
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT id FROM runs WHERE status = ? ORDER BY id", (status,))]

    # attempts

    def add_attempt(self, run_id: int, dir_of: Callable[[int], str] | None = None, **fields: Any) -> int:
        """Record a new attempt, numbered after the run's last one; returns its number.
        `dir_of(n)` names its directory in the same write, so no attempt is ever without one."""
        fields.setdefault("started_at", time.time())
        self._ids(run_id)
        with self._write() as db:
            (last,) = db.execute(
                "SELECT COALESCE(MAX(n), 0) FROM attempts WHERE run_id = ?", (run_id,)
            ).fetchone()
            if dir_of is not None:
                fields["dir"] = dir_of(last + 1)
            _insert(db, "attempts", {"run_id": run_id, "n": last + 1, **fields})
            return last + 1

    def update_attempt(self, run_id: int, n: int, **fields: Any) -> None:
        self._ids(run_id, n)
        with self._write() as db:
            _update(db, "attempts", fields, "run_id = ? AND n = ?", [run_id, n])

    def attempts(self, run_id: int) -> list[dict[str, Any]]:
        self._ids(run_id)
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM attempts WHERE run_id = ? ORDER BY n", (run_id,)
            ).fetchall()
        return [_decode(r, self.path) for r in rows]

    def get_attempt(self, run_id: int, n: int) -> dict[str, Any]:
        self._ids(run_id, n)
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM attempts WHERE run_id = ? AND n = ?", (run_id, n)
            ).fetchone()
        if row is None:
            raise UserError(f"no attempt {n} in run {run_id}")
        return _decode(row, self.path)

    # restarts and notifications

    def add_restart(self, run_id: int, attempt: int, reason: str, **fields: Any) -> None:
        fields.setdefault("at", time.time())
        self._ids(run_id, attempt)
        with self._write() as db:
            _insert(db, "restarts", {"run_id": run_id, "attempt": attempt, "reason": reason, **fields})
            db.execute(
                "UPDATE attempts SET restarts = restarts + 1 WHERE run_id = ? AND n = ?",
                (run_id, attempt),
            )

    def restarts(self, run_id: int, attempt: int | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM restarts WHERE run_id = ?", [run_id]
        if attempt is not None:
            query, args = query + " AND attempt = ?", [run_id, attempt]
        self._ids(run_id, attempt)
        with self._connect() as db:
            return [_decode(r, self.path) for r in db.execute(query + " ORDER BY id", args).fetchall()]

    def add_notification(self, run_id: int, channel: str, status: str, **fields: Any) -> None:
        fields.setdefault("at", time.time())
        self._ids(run_id)
        with self._write() as db:
            _insert(db, "notifications", {"run_id": run_id, "channel": channel, "status": status, **fields})

    def notifications(self, run_id: int) -> list[dict[str, Any]]:
        self._ids(run_id)
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM notifications WHERE run_id = ? ORDER BY id", (run_id,)
            ).fetchall()
        return [_decode(r, self.path) for r in rows]
