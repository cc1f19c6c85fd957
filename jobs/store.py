"""The run store: a SQLite file that is the single source of truth for runs and attempts.

Every write is its own short transaction in WAL mode with a busy timeout, so several processes
(a `pushtune run`, a Jenkins step, the monitor) can write to the same file at once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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


def home() -> Path:
    """Where pushtune keeps its store and run directories: $PUSHTUNE_HOME or ./.pushtune."""
    return Path(os.environ.get("PUSHTUNE_HOME") or ".pushtune").resolve()


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    for key in JSON_COLUMNS & record.keys():
        if record[key] is not None:
            record[key] = json.loads(record[key])
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
            with store._connect() as db:
                db.executescript(SCHEMA)
                _add_missing_columns(db)
        except (OSError, sqlite3.Error) as exc:
            raise UserError(f"cannot open the run store {store.path}: {exc}") from None
        return store

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # runs

    def create_run(self, **fields: Any) -> int:
        fields.setdefault("started_at", time.time())
        with self._write() as db:
            return _insert(db, "runs", fields)

    def update_run(self, run_id: int, **fields: Any) -> None:
        with self._write() as db:
            _update(db, "runs", fields, "id = ?", [run_id])

    def get_run(self, run_id: int) -> dict[str, Any]:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UserError(f"no run {run_id} in {self.path}")
        return _decode(row)

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_decode(r) for r in rows]

    # attempts

    def add_attempt(self, run_id: int, **fields: Any) -> int:
        """Record a new attempt, numbered after the run's last one; returns its number."""
        fields.setdefault("started_at", time.time())
        with self._write() as db:
            (last,) = db.execute(
                "SELECT COALESCE(MAX(n), 0) FROM attempts WHERE run_id = ?", (run_id,)
            ).fetchone()
            _insert(db, "attempts", {"run_id": run_id, "n": last + 1, **fields})
            return last + 1

    def update_attempt(self, run_id: int, n: int, **fields: Any) -> None:
        with self._write() as db:
            _update(db, "attempts", fields, "run_id = ? AND n = ?", [run_id, n])

    def attempts(self, run_id: int) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM attempts WHERE run_id = ? ORDER BY n", (run_id,)
            ).fetchall()
        return [_decode(r) for r in rows]

    def get_attempt(self, run_id: int, n: int) -> dict[str, Any]:
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM attempts WHERE run_id = ? AND n = ?", (run_id, n)
            ).fetchone()
        if row is None:
            raise UserError(f"no attempt {n} in run {run_id}")
        return _decode(row)

    # restarts and notifications

    def add_restart(self, run_id: int, attempt: int, reason: str, **fields: Any) -> None:
        fields.setdefault("at", time.time())
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
        with self._connect() as db:
            return [_decode(r) for r in db.execute(query + " ORDER BY id", args).fetchall()]

    def add_notification(self, run_id: int, channel: str, status: str, **fields: Any) -> None:
        fields.setdefault("at", time.time())
        with self._write() as db:
            _insert(db, "notifications", {"run_id": run_id, "channel": channel, "status": status, **fields})

    def notifications(self, run_id: int) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM notifications WHERE run_id = ? ORDER BY id", (run_id,)
            ).fetchall()
        return [_decode(r) for r in rows]
