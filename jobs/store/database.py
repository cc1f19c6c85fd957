"""The two databases a run store can live in: an SQLite file (the default) or PostgreSQL.

`PUSHTUNE_DB` picks one: unset, the SQLite file under PUSHTUNE_HOME; `sqlite:///path/to.db`;
`postgresql://user@host:port/db` (psycopg 3; the scheme in any case, as RFC 3986 has it); or a
bare path, an SQLite file. Anything else that looks like a URL (`postgresql:` without `//`, an
unknown scheme, a libpq `host=… password=…` string, a password with an unencoded `/ # ?`) is
refused in one line, never taken for a file name. No message ever shows a password (`redacted`).

The store writes one set of queries, with `?` placeholders, against the small `Database`
interface here; this module owns the differences: column types, how a write takes the store's
one write lock (bounded: PUSHTUNE_DB_LOCK_SECONDS, as SQLite's busy timeout), how the next run id
is drawn, and which driver errors are a store a user must repair, a server that may come back
(a refused or lost connection, a timeout: retried with a bounded back-off), or a bug.
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
from urllib.parse import unquote

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
DEFAULT_LOCK_SECONDS = 30.0  # how long a write waits for the write lock: SQLite's busy timeout


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

    def write(self, work: Callable[[Connection], T], *, patience: float | None = None) -> T:
        """`work` in one transaction that holds the store's write lock; a server that cannot be
        reached is retried for `patience` seconds at most, when given."""
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
    if isinstance(location, Path) or text.startswith(("/", "./", "../")):
        return SQLiteDatabase(Path(text))
    shown = redacted(text)
    usage = "use postgresql://user@host:port/db or sqlite:///path/to/pushtune.db"
    if LIBPQ_KEYWORDS.match(text):
        raise UserError(f"PUSHTUNE_DB={shown!r}: a libpq key=value string is not a URL; {usage} "
                        f"(a password in ~/.pgpass or PGPASSWORD)")
    scheme = URL_SCHEME.match(text)
    if scheme is None:
        return SQLiteDatabase(Path(text))
    name, rest = scheme.group(1).lower(), text[scheme.end():]
    if not rest.startswith("//"):
        raise UserError(f"PUSHTUNE_DB={shown!r}: not a URL ({name}: without //) nor a file path; {usage} "
                        "(a file whose name holds a colon: give it as ./NAME)")
    if name in ("postgresql", "postgres"):
        _check_userinfo(rest[2:], shown)
        return PostgresDatabase(f"{name}:{rest}")  # libpq knows the scheme in lower case only
    if name == "sqlite":
        path = rest[2:]
        if not path.startswith("/"):
            raise UserError(f"PUSHTUNE_DB={shown!r}: an SQLite URL names an absolute path, as in "
                            f"sqlite:///srv/pushtune/pushtune.db")
        return SQLiteDatabase(Path(path))
    raise UserError(f"PUSHTUNE_DB={shown!r}: unknown database {name!r}; {usage}")


# A URL's scheme (RFC 3986: a letter, then letters, digits, + - .; two at least, so that a
# Windows-style drive letter is no scheme), and a libpq keyword/value connection string.
URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")
LIBPQ_KEYWORDS = re.compile(r"\s*[A-Za-z_]+\s*=")
PASSWORD_PARAMETER = re.compile(r"(?i)((?:^|[?&])(?:ssl)?password=)[^&]*")
LIBPQ_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")


def _check_userinfo(rest: str, shown: str) -> None:
    """A UserError for a password libpq would misread: one holding an unencoded / # or ?, which
    ends the host part, so that the password's start becomes a host name in its messages."""
    at = rest.rfind("@")
    if at >= 0 and any(c in rest[:at] for c in "/?#"):
        raise UserError(f"PUSHTUNE_DB={shown!r}: the user name or password holds an unencoded / # ? or @; "
                        f"percent-encode it (%2F %23 %3F %40)")


def redacted(location: str) -> str:
    """`location` (a store URL, a libpq string, a path) with every password in it replaced by
    ***: the user info's, a `password=` query parameter's, a libpq `password=` keyword's; the
    user info whole when it cannot be told from the host."""
    parts = _url_parts(location)
    if parts is None:
        return LIBPQ_PASSWORD.sub(r"\1***", location)
    head, userinfo, rest = parts
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        if any(c in user for c in "/?#"):
            user = "***"
        head += f"{user}:***@" if colon or user == "***" else f"{user}@"
    return head + PASSWORD_PARAMETER.sub(r"\1***", rest)


def secrets_of(location: str) -> list[str]:
    """The passwords `location` holds, longest first."""
    parts = _url_parts(location)
    if parts is None:
        found = [m.group(2).strip("'") for m in LIBPQ_PASSWORD.finditer(location)]
    else:
        _, userinfo, rest = parts
        found = [userinfo.split(":", 1)[1]] if userinfo and ":" in userinfo else []
        found += [m.group(0).split("=", 1)[1] for m in PASSWORD_PARAMETER.finditer(rest)]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def _url_parts(location: str) -> tuple[str, str | None, str] | None:
    """(scheme: with its //, the user info up to the last @ or None, the rest) of something
    that starts like a URL, well formed or not; None for anything else."""
    scheme = URL_SCHEME.match(location)
    if scheme is None:
        return None
    head, rest = location[:scheme.end()], location[scheme.end():]
    if rest.startswith("//"):
        head, rest = head + "//", rest[2:]
    at = rest.rfind("@")
    return (head, rest[:at], rest[at + 1:]) if at >= 0 else (head, None, rest)


def scrubbed(message: str, location: str) -> str:
    """`message` (a driver's error about `location`) without any of its passwords."""
    for secret in secrets_of(location):
        for form in {secret, unquote(secret)}:
            message = message.replace(form, "***")
    return message


class SQLiteDatabase:
    backend = "sqlite"

    def __init__(self, path: Path):
        self.path = path
        self.name = self.location = str(path)

    def read(self, work: Callable[[Connection], T]) -> T:
        with self._connect() as db:
            return work(db)

    def write(self, work: Callable[[Connection], T], *, patience: float | None = None) -> T:
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
    that cannot reach the server (the connection was refused, lost or timed out: the server
    restarted, the network dropped) is run again on a new one, with a back-off, for up to
    PUSHTUNE_DB_RETRY_SECONDS; then it is a one-line error. Whatever else the server or libpq
    says (a bad port, a wrong password, no such database, a write lock held past
    PUSHTUNE_DB_LOCK_SECONDS) cannot heal by waiting: a one-line error at once."""

    backend = "postgresql"

    def __init__(self, url: str):
        self.url = self.location = url
        self.name = redacted(url)
        self.retry_seconds = _retry_seconds()
        self.lock_seconds = env_seconds("PUSHTUNE_DB_LOCK_SECONDS", DEFAULT_LOCK_SECONDS, 0.1, 3600)
        self._local = threading.local()

    def read(self, work: Callable[[Connection], T]) -> T:
        return self._retrying(lambda db: work(db), write=False)

    def write(self, work: Callable[[Connection], T], *, patience: float | None = None) -> T:
        def locked(db: _PostgresConnection) -> T:
            db.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK_KEY,))
            return work(db)

        return self._retrying(locked, write=True, patience=patience)

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

    def _retrying(self, work: Callable[[_PostgresConnection], T], *, write: bool,
                  patience: float | None = None) -> T:
        # heavy optional library (postgres extra): only for a PostgreSQL store
        import psycopg

        retry_seconds = self.retry_seconds if patience is None else min(patience, self.retry_seconds)
        deadline = time.monotonic() + retry_seconds
        delay = 0.2
        what = "write to" if write else "read"
        while True:
            try:
                connection = self._connection()
                with connection.transaction():
                    return work(_PostgresConnection(connection))
            except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
                self._drop_connection()
                raise UserError(f"cannot {what} the run store {self.name}: another process has held its "
                                f"write lock for over {self.lock_seconds:g} s (PUSHTUNE_DB_LOCK_SECONDS): "
                                f"{self._one_line(exc)}") from None
            except psycopg.OperationalError as exc:
                self._drop_connection()
                if not _transient(exc):
                    raise UserError(f"cannot use the run store {self.name}: {self._one_line(exc)}") from None
                if time.monotonic() + delay > deadline:
                    raise UserError(f"cannot {what} the run store {self.name}: {self._one_line(exc)} "
                                    f"(gave up after {retry_seconds:.3g} s)") from None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except psycopg.errors.InsufficientPrivilege as exc:
                raise UserError(f"cannot use the run store {self.name}: {self._one_line(exc)}") from None

    def _connection(self):
        # heavy optional library (postgres extra): only for a PostgreSQL store
        import psycopg
        from psycopg.rows import dict_row

        connection = getattr(self._local, "connection", None)
        if connection is not None and (connection.closed or self._local.pid != os.getpid()):
            connection = None  # closed, or inherited across a fork: never shared with the parent
        if connection is None:
            try:
                connection = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:  # libpq refused the URL itself (an unknown parameter, …)
                raise UserError(f"cannot use the run store {self.name}: {self._one_line(exc)}") from None
            # A lock wait (the write lock, a row another transaction holds) ends with an error
            # instead of hanging for as long as its holder lives; a statement, too, in time.
            milliseconds = round(self.lock_seconds * 1000)
            connection.execute(f"SET lock_timeout = {milliseconds}")
            connection.execute(f"SET statement_timeout = {milliseconds * 4}")
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

    def _one_line(self, exc: Exception) -> str:
        return scrubbed(_one_line(exc), self.url)


class _PostgresConnection:
    """The SQLite-style `execute` over a psycopg connection: `?` placeholders, dict rows."""

    def __init__(self, connection):
        self._connection = connection

    def execute(self, sql: str, args: tuple | list = ()):
        return self._connection.execute(sql.replace("?", "%s"), list(args))


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


# What a store that cannot be reached says, until it can be: a connection refused, lost or timed
# out, a server starting up, shutting down or out of connection slots (SQLSTATE classes 08 and 57P,
# 53300). Everything else (a bad port, a refused password, no such database) is said at once.
TRANSIENT_STATES = ("08", "57P01", "57P02", "57P03", "53300")
TRANSIENT_WORDS = ("connection refused", "timeout expired", "timed out", "server closed the connection",
                   "connection is lost", "connection is closed", "terminating connection",
                   "could not receive data", "could not send data", "connection reset", "no route to host",
                   "network is unreachable", "temporary failure in name resolution", "consuming input failed",
                   "sending query failed", "ssl syscall error", "eof detected", "the database system is")


def _transient(exc: Exception) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith(TRANSIENT_STATES):
        return True
    text = str(exc).lower()
    return not state and any(words in text for words in TRANSIENT_WORDS)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
