"""Shared fixtures. Tests use real components: real SQLite, real processes, real git."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import NoReturn

import docker
import pytest
from docker.errors import DockerException

ROOT = Path(__file__).resolve().parent.parent
# Under CI=true, where .ci/run sets up everything the suite needs (engine, images, face data,
# PostgreSQL, Compose, the Groovy linter), a test that would skip fails instead: a green CI run
# cannot hide a part of the suite that never ran. Elsewhere such a test skips with its reason
# (`make test` prints them: pytest -rs).
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test for want of `reason`; under CI=true, fail it."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: .ci/run must set this up)", pytrace=False)
    raise pytest.skip.Exception(reason, _use_item_location=True)  # -rs names the test, not this line


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "requires_engine: needs a Docker engine that answers (conftest.py)")


def pytest_runtest_setup(item) -> None:
    if ENGINE_PROBLEM is not None and item.get_closest_marker("requires_engine"):
        unavailable(f"no Docker engine answers: {ENGINE_PROBLEM}")


def pytest_sessionfinish(session, exitstatus) -> None:
    """Under CI=true any skip left (a module's importorskip, a skipif) fails the run too."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if IN_CI and skipped and exitstatus == pytest.ExitCode.OK:
        reporter.ensure_newline()
        reporter.write_line(f"CI=true: {skipped} test(s) skipped, which CI does not allow (-rs says why)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def pushtune_home(tmp_path, monkeypatch) -> Path:
    """A fresh PUSHTUNE_HOME (run store and run directories) for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("PUSHTUNE_HOME", str(home))
    for shared in ("PUSHTUNE_DB", "PUSHTUNE_ARTIFACTS", "PUSHTUNE_AGENT", "PUSHTUNE_LEASE_SECONDS"):
        monkeypatch.delenv(shared, raising=False)  # one machine's store, unless a test shares it
    return home


@pytest.fixture
def cli(pushtune_home):
    """Run `python -m jobs ARGS…` in a subprocess, as a user would; returns CompletedProcess."""

    def run(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
        full_env = {**os.environ, "PUSHTUNE_HOME": str(pushtune_home), "PYTHONPATH": str(ROOT)}
        for shared in ("PUSHTUNE_DB", "PUSHTUNE_ARTIFACTS", "PUSHTUNE_AGENT", "PUSHTUNE_LEASE_SECONDS",
                       "PUSHTUNE_DATA"):  # the shell's data directory would be every run's --data
            full_env.pop(shared, None)
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "jobs", *map(str, args)],
            cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The ORL faces (PUSHTUNE_DATA, else ../shared/data/att_faces); skip when absent."""
    path = Path(os.environ.get("PUSHTUNE_DATA") or ROOT.parent / "shared/data/att_faces")
    if not (path / "s1").is_dir():
        unavailable(f"face data not found at {path} (set PUSHTUNE_DATA)")
    return path


def _engine_problem() -> str | None:
    try:
        docker.from_env(timeout=5).ping()
    except DockerException as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


ENGINE_PROBLEM = _engine_problem()
# Tests that need a real Docker engine (`.ci/run` starts one): skipped without one, failed under CI.
requires_engine = pytest.mark.requires_engine


class PostgresServer:
    """A throwaway PostgreSQL server on 127.0.0.1 (scripts/throwaway-postgres.sh), or the one
    `.ci/run` started ($PUSHTUNE_TEST_POSTGRES). Each test gets a database of its own."""

    def __init__(self, url: str, directory: Path | None):
        self.url, self.directory = url, directory

    def new_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def restart(self) -> None:
        """Restart the server (fast shutdown): every connection to it is cut."""
        if self.directory is None:
            unavailable("the server $PUSHTUNE_TEST_POSTGRES names has no $PUSHTUNE_TEST_POSTGRES_DIR to restart it")
        subprocess.run([str(ROOT / "scripts/throwaway-postgres.sh"), "restart", str(self.directory)], check=True)


@pytest.fixture(scope="session")
def postgres_server():
    if os.environ.get("PUSHTUNE_TEST_POSTGRES"):  # .ci/run's, with its directory (to restart it)
        given = os.environ.get("PUSHTUNE_TEST_POSTGRES_DIR")
        yield PostgresServer(os.environ["PUSHTUNE_TEST_POSTGRES"], Path(given) if given else None)
        return
    if not (Path("/usr/lib/postgresql").is_dir() or shutil.which("pg_ctl")):
        unavailable("no PostgreSQL server here (apt-get install -y postgresql)")
    directory = Path(tempfile.mkdtemp(prefix="pushtune-pg-")) / "server"
    directory.parent.chmod(0o755)  # the server runs as the postgres user when the tests run as root
    started = subprocess.run([str(ROOT / "scripts/throwaway-postgres.sh"), "start", str(directory)],
                             capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"could not start PostgreSQL: {started.stderr.strip()}")
    try:
        yield PostgresServer(started.stdout.strip().splitlines()[-1], directory)
    finally:
        subprocess.run([str(ROOT / "scripts/throwaway-postgres.sh"), "stop", str(directory)])
        shutil.rmtree(directory.parent, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A new, empty PostgreSQL database for this test."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path, monkeypatch) -> str:
    """Where a store suite's test keeps its store: an SQLite file, then a PostgreSQL database.
    Either way the run directories go to tmp_path (PUSHTUNE_ARTIFACTS)."""
    monkeypatch.setenv("PUSHTUNE_ARTIFACTS", str(tmp_path))
    if request.param == "sqlite":
        return str(tmp_path / "s.db")
    return request.getfixturevalue("postgres_url")
