"""Push to train without Jenkins: a real `git push` to a real bare repository with the hook."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from jobs.store.run_store import RunStore
from test_jenkins_client import pushtune
from test_steps import LOGISTIC, NOT_A_MODEL, git


def wait_for(condition, timeout: float = 120.0, every: float = 0.5):
    """Poll until condition() is truthy (its value), at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s")


@pytest.fixture
def bare(tmp_path) -> Path:
    repo = tmp_path / "models.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], check=True)
    return repo


def clone(bare: Path, where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(bare), str(where)], check=True, capture_output=True)
    return where


def finished_runs(home: Path) -> list[dict]:
    if not (home / "pushtune.db").exists():
        return []
    return [r for r in RunStore.open(home / "pushtune.db").list_runs() if r["status"] != "running"]


def test_a_push_trains_the_changed_model_in_the_background(tmp_path, pushtune_home, bare):
    installed = pushtune(pushtune_home, "hook", "install", bare,
                         "--run-args", "--threshold 0.94 --max-attempts 3 --runtime local")
    assert installed.returncode == 0, installed.stderr
    hook = bare / "hooks" / "post-receive"
    assert hook.stat().st_mode & 0o111 and str(pushtune_home) in hook.read_text()

    work = clone(bare, tmp_path / "work")
    (work / "logistic.py").write_text(LOGISTIC)
    (work / "notes.py").write_text(NOT_A_MODEL)
    git(work, "add", ".")
    git(work, "commit", "-qm", "a model")
    pushed = subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, capture_output=True, text=True,
                            timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    commit = git(work, "rev-parse", "HEAD")

    (run,) = wait_for(lambda: finished_runs(pushtune_home))
    assert (run["model_name"], run["git_commit"], run["status"]) == ("logistic.py", commit, "passed")
    assert run["threshold"] == 0.94
    assert len(RunStore.open(pushtune_home / "pushtune.db").attempts(run["id"])) == 2
    exited = "exited 0 (done: the threshold was met)"  # the exit code and what it means
    log = wait_for(lambda: (lambda t: exited in t and t)((pushtune_home / "hooks" / "hook.log").read_text()))
    assert "skipped notes.py" in log and "pushtune run logistic.py" in log


def test_an_existing_hook_is_kept_chained_or_replaced_only_when_asked(tmp_path, pushtune_home, bare):
    hook = bare / "hooks" / "post-receive"
    marker = tmp_path / "old-hook-ran"
    hook.write_text(f"#!/bin/sh\ncat > {marker}\n")
    hook.chmod(0o755)

    refused = pushtune(pushtune_home, "hook", "install", bare)
    assert refused.returncode == 2 and "--chain" in refused.stderr and "--force" in refused.stderr
    assert hook.read_text().startswith("#!/bin/sh\ncat")

    assert pushtune(pushtune_home, "hook", "install", bare, "--chain").returncode == 0
    assert (bare / "hooks" / "post-receive.pushtune-chained").read_text().startswith("#!/bin/sh\ncat")
    work = clone(bare, tmp_path / "work")
    (work / "notes.py").write_text(NOT_A_MODEL)
    git(work, "add", ".")
    git(work, "commit", "-qm", "no model")
    assert subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, capture_output=True).returncode == 0
    assert "refs/heads/main" in marker.read_text()  # the old hook still got the pushed refs
    log = wait_for(lambda: (lambda p: p.exists() and "skipped notes.py" in p.read_text())(
        pushtune_home / "hooks" / "hook.log"))
    assert log
    assert finished_runs(pushtune_home) == []

    assert pushtune(pushtune_home, "hook", "install", bare).returncode == 0  # ours: updated in place
    hook.write_text("#!/bin/sh\nexit 0\n")
    assert pushtune(pushtune_home, "hook", "install", bare, "--force").returncode == 0
    assert "pushtune hook install" in hook.read_text()


def test_the_push_succeeds_whatever_happens_to_pushtune(tmp_path, bare):
    broken_home = tmp_path / "not-a-directory"
    broken_home.write_text("a file where PUSHTUNE_HOME should be\n")
    assert pushtune(broken_home, "hook", "install", bare).returncode == 0
    work = clone(bare, tmp_path / "work")
    (work / "logistic.py").write_text(LOGISTIC)
    git(work, "add", ".")
    git(work, "commit", "-qm", "a model")
    pushed = subprocess.run(["git", "push", "origin", "main"], cwd=work, capture_output=True, text=True, timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    assert git(bare, "rev-parse", "main") == git(work, "rev-parse", "HEAD")


def test_a_working_repository_gets_a_post_commit_hook(tmp_path, pushtune_home):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    assert pushtune(pushtune_home, "hook", "install", repo).returncode == 0
    assert (repo / ".git" / "hooks" / "post-commit").exists()
    (repo / "notes.py").write_text(NOT_A_MODEL)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    wait_for(lambda: (lambda p: p.exists() and "skipped notes.py" in p.read_text())(
        pushtune_home / "hooks" / "hook.log"))


def test_bad_input_is_refused_at_install(tmp_path, pushtune_home, bare):
    bad_args = pushtune(pushtune_home, "hook", "install", bare, "--run-args", "--threshold many")
    assert bad_args.returncode == 2 and "--run-args" in bad_args.stderr
    assert not (bare / "hooks" / "post-receive").exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    not_git = pushtune(pushtune_home, "hook", "install", plain)
    assert not_git.returncode == 2 and "not a git repository" in not_git.stderr


def test_control_characters_are_refused_and_nothing_is_injected(tmp_path, bare):
    injected = tmp_path / "injected"
    home = tmp_path / f"home\ntouch {injected}\n#"
    refused = pushtune(home, "hook", "install", bare)
    assert refused.returncode == 2 and "PUSHTUNE_HOME" in refused.stderr and "control characters" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (bare / "hooks" / "post-receive").exists()

    tabbed = pushtune(tmp_path / "home", "hook", "install", bare, "--run-args", "--metric 'a\tb'")
    assert tabbed.returncode == 2 and "control characters" in tabbed.stderr

    # what the shell would read as code is quoted: it stays a file name
    odd_home = tmp_path / "it's $(touch injected) `touch injected` home"
    assert pushtune(odd_home, "hook", "install", bare).returncode == 0
    work = clone(bare, tmp_path / "work")
    (work / "notes.py").write_text(NOT_A_MODEL)
    git(work, "add", ".")
    git(work, "commit", "-qm", "no model")
    assert subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, capture_output=True).returncode == 0
    wait_for(lambda: (lambda p: p.exists() and "skipped notes.py" in p.read_text())(odd_home / "hooks" / "hook.log"))
    assert not list(tmp_path.rglob("injected"))


@pytest.mark.parametrize("run_args, fragment", [
    ("--notify 'x", "No closing quotation"),
    ("--max-attempts 0", "--max-attempts must be at least 1"),
    ("--threshold nan", "--threshold must be a finite number"),
    ("--cpus 0.0001", "--cpus 0.0001"),
    ("--param lr", "expected KEY=VALUE"),
    ("--help", "--help"),
    ("--threshold 95", "--threshold 95: accuracy = 95 is outside its range [0, 1]"),
])
def test_run_options_that_would_fail_every_push_are_refused_at_install(pushtune_home, bare, run_args, fragment):
    refused = pushtune(pushtune_home, "hook", "install", bare, f"--run-args={run_args}")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("pushtune: error: --run-args") and fragment in line
    assert not (bare / "hooks" / "post-receive").exists()


def test_hook_log_says_what_each_exit_code_means():
    from jobs import exit_codes

    assert exit_codes.meaning(exit_codes.BELOW_THRESHOLD) == "trained, but the best metric misses the threshold"
    assert all(exit_codes.meaning(code) for code in exit_codes.RUN_STATUS_EXIT_CODES.values())
    assert exit_codes.meaning(-9) == "killed by a signal"


def test_a_root_level_file_named_like_an_option_is_trained(tmp_path, pushtune_home, bare):
    installed = pushtune(pushtune_home, "hook", "install", bare, "--run-args",
                         "--threshold 0.5 --max-attempts 1 --runtime local")
    assert installed.returncode == 0, installed.stderr
    work = clone(bare, tmp_path / "work")
    (work / "-dash.py").write_text(LOGISTIC)
    git(work, "add", "--", "-dash.py")
    git(work, "commit", "-qm", "a model named like an option")
    assert subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, capture_output=True).returncode == 0

    (run,) = wait_for(lambda: finished_runs(pushtune_home))
    assert (run["model_name"], run["status"]) == ("-dash.py", "passed")


def test_a_symbolic_link_out_of_the_repository_is_not_trained(tmp_path, pushtune_home, bare):
    outside = tmp_path / "outside" / "logistic.py"  # a model of this machine's, not of the push
    outside.parent.mkdir()
    outside.write_text(LOGISTIC)
    installed = pushtune(pushtune_home, "hook", "install", bare, "--run-args",
                         "--threshold 0.5 --max-attempts 1 --runtime local")
    assert installed.returncode == 0, installed.stderr
    work = clone(bare, tmp_path / "work")
    (work / "absolute.py").symlink_to(outside)
    # from the hook's checkout, $PUSHTUNE_HOME/checkouts/<commit>/, three levels up is tmp_path
    (work / "upwards.py").symlink_to(Path("..", "..", "..", "outside", "logistic.py"))
    (work / "metadata.py").symlink_to(Path(".git", "config"))
    (work / "real").mkdir()
    (work / "real" / "logistic.model").write_text(LOGISTIC)
    (work / "alias.py").symlink_to(Path("real", "logistic.model"))  # within the push: followed
    git(work, "add", ".")
    git(work, "commit", "-qm", "links")
    assert subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, capture_output=True).returncode == 0
    commit = git(work, "rev-parse", "HEAD")[:10]

    log_file = pushtune_home / "hooks" / "hook.log"
    log = wait_for(lambda: (lambda p: p.exists() and "alias.py@" in p.read_text() and " exited " in p.read_text()
                            and p.read_text())(log_file))
    assert f"skipped absolute.py@{commit}: a symbolic link to {str(outside)!r}, which leads out of the " \
           "repository\n" in log
    assert f"skipped upwards.py@{commit}: a symbolic link to '../../../outside/logistic.py', which leads " \
           "out of the repository\n" in log
    assert f"skipped metadata.py@{commit}: a symbolic link to '.git/config', which leads out of the " \
           "repository\n" in log
    assert f"pushtune run alias.py@{commit} exited 0" in log
    assert [run["model_name"] for run in finished_runs(pushtune_home)] == ["alias.py"]
