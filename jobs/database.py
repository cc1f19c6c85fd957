"""The two databases a run store can live in: an SQLite file (the default) or PostgreSQL.

`PUSHTUNE_DB` picks one: unset, the SQLite file under PUSHTUNE_HOME; `sqlite:///path/to.db`;
or `postgresql://user@host:port/db` (psycopg 3). The store writes one set of queries, with `?`
placeholders, against the small `Database` interface here; this module owns the differences:
column types, how a write takes the store's one write lock, how the next run id is drawn, and
which driver errors are a store a user must repair, a server that may come back (PostgreSQL is
retried with a bounded back-off), or a bug.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from jobs.errors import UserError

T = TypeVar("T")

# SQLite result codes that mean the file is no (longer a) database, and those a user can fix
# (permissions, a full disk, a lock held too long): both become one-line errors.
DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
ENVIRONMENT = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR,
               sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM}
# Every write of every pushtune process takes this PostgreSQL advisory lock for its transaction:
# the same one-writer-at-a-time rule as SQLite's BEGIN IMMEDIATE, so both backends behave alike.
WRITE_LOCK_KEY = 0x70757368  # "push"
DEFAULT_RETRY_SECONDS = 60.0


class Connection(Protocol):
    # positional-only, as sqlite3.Connection.execute takes them
    def execute(self, sql: str, args: tuple | list = (), /) -> Cursor: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list: ...

    def __iter__(self) -> Iterator[Any]: ...


class Database(Protocol):
    name: str  # what messages call it: a file path, or a URL without its password
    location: str  # what PUSHTUNE_DB says to reach it again (a child process)
    backend: str  # "sqlite" or "postgresql"

    def read(self, work: Callable[[Connection], T]) -> T: ...

    def write(self, work: Callable[[Connection], T]) -> T:
        """`work` in one transaction that holds the store's write lock."""
        ...

    def tables(self, db: Connection) -> set[str]: ...

    def ddl(self, statement: str) -> str:
        """A CREATE/ALTER statement written for SQLite, in this database's types."""
        ...

    def next_run_id(self, db: Connection) -> int:
        """A run id never handed out before (inside a write)."""
        ...


def database_url() -> str | None:
    return os.environ.get("PUSHTUNE_DB") or None


def open_database(location: str | Path, default_file: Path) -> Database:
    """The database `location` names: a URL, a file path, or None for `default_file`."""
    text = str(location) if location else ""
    if not text:
        return SQLiteDatabase(default_file)
    scheme = urlsplit(text).scheme if "://" in text else ""
    if scheme in ("postgresql", "postgres"):
        return PostgresDatabase(text)
    if scheme == "sqlite":
        path = text[len("sqlite://"):]
        if not path.startswith("/"):
            raise UserError(f"PUSHTUNE_DB={text!r}: an SQLite URL names an absolute path, as in "
                            f"sqlite:///srv/pushtune/pushtune.db")
        return SQLiteDatabase(Path(path))
    if scheme:
        raise UserError(f"PUSHTUNE_DB={text!r}: unknown database {scheme!r}; use "
                        f"postgresql://user@host:port/db or sqlite:///path/to/pushtune.db")
    return SQLiteDatabase(Path(text))


class SQLiteDatabase:
    backend = "sqlite"

    def __init__(self, path: Path):
        self.path = path
        self.name = self.location = str(path)

    def read(self, work: Callable[[Connection], T]) -> T:
        with self._connect() as db:
            return work(db)

    def write(self, work: Callable[[Connection], T]) -> T:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

    def tables(self, db: Connection) -> set[str]:
        return {row["name"] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def ddl(self, statement: str) -> str:
        return statement

    def next_run_id(self, db: Connection) -> int:
        row = db.execute(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'runs'), 0),"
            " COALESCE((SELECT MAX(id) FROM runs), 0)) + 1 AS next_id").fetchone()
        return int(row["next_id"])

    def is_empty_file(self) -> bool:
        return self.path.exists() and self.path.stat().st_size == 0

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except OSError as exc:
            raise UserError(f"cannot open the run store {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise self._problem(exc) from None
        db.row_factory = _dict_row
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


def _dict_row(cursor: sqlite3.Cursor, row: tuple) -> dict:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class PostgresDatabase:
    """PostgreSQL through psycopg 3: one connection per thread, kept open between calls. A call
    that loses its connection (the server restarted, the network dropped) is run again on a new
    one, with a back-off, for up to PUSHTUNE_DB_RETRY_SECONDS; then it is a one-line error."""

    backend = "postgresql"

    def __init__(self, url: str):
        self.url = self.location = url
        self.name = _without_password(url)
        self.retry_seconds = _retry_seconds()
        self._local = threading.local()

    def read(self, work: Callable[[Connection], T]) -> T:
        return self._retrying(lambda db: work(db), write=False)

    def write(self, work: Callable[[Connection], T]) -> T:
        def locked(db: _PostgresConnection) -> T:
            db.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK_KEY,))
            return work(db)

        return self._retrying(locked, write=True)

    def tables(self, db: Connection) -> set[str]:
        rows = db.execute("SELECT table_name AS name FROM information_schema.tables "
                          "WHERE table_schema = current_schema()").fetchall()
        return {row["name"] for row in rows}

    def ddl(self, statement: str) -> str:
        statement = statement.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
        statement = re.sub(r"\bREAL\b", "DOUBLE PRECISION", statement)  # PostgreSQL's REAL is 4 bytes
        return re.sub(r"\bINTEGER\b", "BIGINT", statement)

    def next_run_id(self, db: Connection) -> int:
        row = db.execute("SELECT nextval(pg_get_serial_sequence('runs', 'id')) AS next_id").fetchone()
        return int(row["next_id"])

    def _retrying(self, work: Callable[[_PostgresConnection], T], *, write: bool) -> T:
        import psycopg

        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                connection = self._connection()
                with connection.transaction():
                    return work(_PostgresConnection(connection))
            except psycopg.OperationalError as exc:
                self._drop_connection()
                if _permanent(exc):
                    raise UserError(f"cannot use the run store {self.name}: {_one_line(exc)}") from None
                if time.monotonic() + delay > deadline:
                    what = "write to" if write else "read"
                    raise UserError(f"cannot {what} the run store {self.name}: {_one_line(exc)} "
                                    f"(gave up after {self.retry_seconds:g} s)") from None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except psycopg.errors.InsufficientPrivilege as exc:
                raise UserError(f"cannot use the run store {self.name}: {_one_line(exc)}") from None

    def _connection(self):
        import psycopg
        from psycopg.rows import dict_row

        connection = getattr(self._local, "connection", None)
        if connection is not None and (connection.closed or self._local.pid != os.getpid()):
            connection = None  # closed, or inherited across a fork: never shared with the parent
        if connection is None:
            connection = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None and self._local.pid == os.getpid():
            try:
                connection.close()
            except Exception:
                pass


class _PostgresConnection:
    """The SQLite-style `execute` over a psycopg connection: `?` placeholders, dict rows."""

    def __init__(self, connection):
        self._connection = connection

    def execute(self, sql: str, args: tuple | list = ()):
        return self._connection.execute(sql.replace("?", "%s"), list(args))


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc[1]}"))


def _retry_seconds() -> float:
    return env_seconds("PUSHTUNE_DB_RETRY_SECONDS", DEFAULT_RETRY_SECONDS, 0, 3600)


def env_seconds(name: str, default: float, low: float, high: float) -> float:
    """A number of seconds from the environment variable `name`, from `low` to `high`."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise UserError(f"{name}={text!r}: give a number of seconds from {low:g} to {high:g}")
    return value


# A server that answers but refuses us (no such database or role, a wrong password): retrying
# cannot help. A server restarting says "the database system is starting up" and is retried.
PERMANENT_REFUSALS = ("does not exist", "authentication failed", "password", "pg_hba.conf")


def _permanent(exc: Exception) -> bool:
    text = str(exc)
    return "FATAL" in text and any(words in text for words in PERMANENT_REFUSALS)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
