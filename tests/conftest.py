"""Shared fixtures. Tests use real components: real SQLite, real processes, real git."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pushtune_home(tmp_path, monkeypatch) -> Path:
    """A fresh PUSHTUNE_HOME (run store and run directories) for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("PUSHTUNE_HOME", str(home))
    return home


@pytest.fixture
def cli(pushtune_home):
    """Run `python -m jobs ARGS…` in a subprocess, as a user would; returns CompletedProcess."""

    def run(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
        full_env = {**os.environ, "PUSHTUNE_HOME": str(pushtune_home), "PYTHONPATH": str(ROOT)}
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
        pytest.skip(f"face data not found at {path} (set PUSHTUNE_DATA)")
    return path


def _engine_problem() -> str | None:
    try:
        docker.from_env(timeout=5).ping()
    except DockerException as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


ENGINE_PROBLEM = _engine_problem()
# Tests that need a real Docker engine; `.ci/run` starts one where it can.
requires_engine = pytest.mark.skipif(
    ENGINE_PROBLEM is not None, reason=f"no Docker engine answers: {ENGINE_PROBLEM}"
)
