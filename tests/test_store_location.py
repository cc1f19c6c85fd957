"""Where the run store is, seen from where the user stands: a git work tree has one store at its
top (every subdirectory and the git hook share it), read-only commands never create one, and the
store says where it is when it gets its first run. Real git, real processes, real SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from jobs.store.run_store import RunStore
from test_hook import wait_for
from test_monitor import TRIVIAL
from test_steps import git


def pushtune_in(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`pushtune ARGS` run from `cwd` with none of pushtune's settings: the default store."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PUSHTUNE_")}
    full.update(PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "jobs", *map(str, args)], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git work tree with a model in a subdirectory."""
    top = tmp_path / "repo"
    (top / "models").mkdir(parents=True)
    git(top, "init", "-q", "-b", "main")
    (top / "models" / "trivial.py").write_text(TRIVIAL)
    return top


def test_read_only_commands_never_create_a_store(tmp_path):
    here = tmp_path / "elsewhere"
    here.mkdir()
    store = here / ".pushtune"

    runs, models = pushtune_in(here, "runs"), pushtune_in(here, "models")
    as_json = pushtune_in(here, "runs", "--json")
    show = pushtune_in(here, "show", "1")

    for listing in (runs, models):
        assert (listing.returncode, listing.stdout, listing.stderr) == (
            0, f"no runs yet (no run store at {store})\n", "")
    assert (as_json.returncode, as_json.stdout) == (0, "[]\n")
    assert show.returncode == 2
    assert show.stderr == f"pushtune: error: no run 1: no runs yet (no run store at {store})\n"
    assert not store.exists()


def test_a_work_tree_has_one_store_at_its_top_announced_once_and_kept_out_of_git(repo):
    store = repo / ".pushtune"
    first = pushtune_in(repo / "models", "run", "trivial.py", "--runtime", "local", "--threshold", "0.5")
    again = pushtune_in(repo / "models", "run", "trivial.py", "--runtime", "local", "--threshold", "0.5")

    assert first.returncode == 0, first.stderr
    assert first.stderr.count("new run store") == 1
    assert f"pushtune: new run store at {store}\n" in first.stderr
    assert again.returncode == 0 and "new run store" not in again.stderr
    assert (store / ".gitignore").read_text().splitlines()[-1] == "*"
    git(repo, "add", "-A")
    assert git(repo, "diff", "--cached", "--name-only").splitlines() == ["models/trivial.py"]

    (repo / "docs" / "deep").mkdir(parents=True)
    listed = pushtune_in(repo / "docs" / "deep", "runs", "--json")
    assert [run["run_id"] for run in json.loads(listed.stdout)] == [2, 1]


def test_the_hook_and_a_subdirectory_see_the_same_store(repo):
    installed = pushtune_in(repo / "models", "hook", "install", repo, "--run-args", "--runtime local --threshold 0.5")
    assert installed.returncode == 0, installed.stderr
    assert f"runs go to the store at {repo / '.pushtune'} " in installed.stdout

    git(repo, "add", "models/trivial.py")
    git(repo, "commit", "-qm", "a model")  # post-commit: the hook trains it in the background

    def finished() -> list[dict]:
        db = repo / ".pushtune" / "pushtune.db"
        return db.exists() and [r for r in RunStore.open(db).list_runs() if r["status"] != "running"]

    (run,) = wait_for(finished)
    seen = pushtune_in(repo / "models", "show", str(run["id"]), "--json")
    assert seen.returncode == 0, seen.stderr
    assert git(repo, "status", "--porcelain") == ""  # the store and the hook's checkouts stay out of git


def test_an_existing_nearer_store_and_pushtune_home_are_kept(repo, tmp_path):
    (repo / "models" / ".pushtune").mkdir()  # made before stores moved to the top: its runs stay visible
    nearer = pushtune_in(repo / "models", "run", "trivial.py", "--runtime", "local", "--threshold", "0.5")
    assert f"new run store at {repo / 'models' / '.pushtune'}\n" in nearer.stderr
    assert not (repo / ".pushtune").exists()

    chosen = repo / "mine"  # PUSHTUNE_HOME is the user's directory: used as is, no .gitignore written
    home = pushtune_in(repo / "models", "run", "trivial.py", "--runtime", "local", "--threshold", "0.5",
                       env={"PUSHTUNE_HOME": str(chosen)})
    assert home.returncode == 0, home.stderr
    assert f"new run store at {chosen}\n" in home.stderr
    assert (chosen / "pushtune.db").exists() and not (chosen / ".gitignore").exists()
