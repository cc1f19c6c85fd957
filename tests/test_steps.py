"""The loop one step at a time, as the Jenkins chain runs it: real processes, a real store,
real git, a tiny scikit-learn model, and the fake controller for the retriggers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import test_loop
import test_monitor
from jobs.store.run_store import RunStore
from test_jenkins_client import TRIGGER_TOKEN, fake_jenkins, pushtune  # noqa: F401 (fixture)

# The script of test_loop with C=0.001, which scores ~0.916 on its split; the ladder's first
# tweak (C×10) scores ~0.951
LOGISTIC = test_loop.LOGISTIC.replace("LogisticRegression(C=0.0001", "LogisticRegression(C=0.001")
assert "C=0.001," in LOGISTIC
NOT_A_MODEL = "print('hello')\n"


def job_config() -> str:
    """A job that takes RUN_ID and the trigger token, as the chain's train and notify jobs do."""
    return ("<project><properties><hudson.model.ParametersDefinitionProperty><parameterDefinitions>"
            "<hudson.model.StringParameterDefinition><name>RUN_ID</name></hudson.model.StringParameterDefinition>"
            f"</parameterDefinitions></hudson.model.ParametersDefinitionProperty></properties>"
            f"<authToken>{TRIGGER_TOKEN}</authToken></project>")


def read_properties(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "logistic.py"
    path.write_text(LOGISTIC)
    return path


def test_chain_start_train_tweak_train(tmp_path, pushtune_home, model):
    started = pushtune(pushtune_home, "start", model, "--runtime", "local", "--threshold", "0.94",
                       "--properties", tmp_path / "start.properties")
    assert started.returncode == 0, started.stderr
    run_id = int(started.stdout.strip())
    assert read_properties(tmp_path / "start.properties") == {
        "RUN_ID": str(run_id), "KIND": "regression", "MODEL": str(model)}

    first = pushtune(pushtune_home, "train", run_id)
    assert first.returncode == 3, first.stderr
    assert "below threshold" in first.stdout

    tweak = pushtune(pushtune_home, "tweak", run_id, "--properties", tmp_path / "tweak.properties")
    assert tweak.returncode == 0, tweak.stderr
    assert read_properties(tmp_path / "tweak.properties") == {"RUN_ID": str(run_id), "NEXT": "train"}
    assert "C ×10" in tweak.stdout

    second = pushtune(pushtune_home, "train", run_id)
    assert second.returncode == 0, second.stderr

    store = RunStore.open()
    run = store.get_run(run_id)
    attempts = store.attempts(run_id)
    assert [a["tweak_name"] for a in attempts] == [None, "c_times_10"]
    assert attempts[0]["metric_value"] < 0.94 <= attempts[1]["metric_value"]
    assert (run["status"], run["stop_reason"], run["best_attempt"]) == ("passed", "threshold met", 2)
    assert "C=0.01" in (Path(attempts[1]["dir"]) / "model.py").read_text()

    again = pushtune(pushtune_home, "train", run_id)
    assert again.returncode == 2 and "finished (passed)" in again.stderr
    # finished and not reported yet: the mail comes next
    pushtune(pushtune_home, "tweak", run_id, "--properties", tmp_path / "after.properties")
    assert read_properties(tmp_path / "after.properties")["NEXT"] == "notify"


def test_tweak_inside_jenkins_retriggers_train_then_notify_within_budget(tmp_path, pushtune_home, model, fake_jenkins):
    fake_jenkins.jobs["pushtune-train"] = {"config": job_config(), "builds": []}
    fake_jenkins.jobs["pushtune-notify"] = {"config": job_config(), "builds": []}
    jenkins_env = {"JENKINS_URL": fake_jenkins.url, "BUILD_URL": f"{fake_jenkins.url}job/pushtune-tweak/1/",
                   "PUSHTUNE_TRIGGER_TOKEN": TRIGGER_TOKEN}
    run_id = int(pushtune(pushtune_home, "start", model, "--runtime", "local", "--threshold", "0.99",
                          "--max-attempts", "2").stdout)

    assert pushtune(pushtune_home, "train", run_id).returncode == 3
    tweak = pushtune(pushtune_home, "tweak", run_id, env=jenkins_env)
    assert tweak.returncode == 0, tweak.stderr
    assert "triggered pushtune-train (queue item" in tweak.stdout
    method, path, query = fake_jenkins.requests[-1]
    assert (method, path, query) == ("POST", "/buildByToken/buildWithParameters", {})  # token not in the URL
    assert fake_jenkins.forms[-1] == {"job": "pushtune-train", "RUN_ID": str(run_id), "token": TRIGGER_TOKEN}

    assert pushtune(pushtune_home, "train", run_id).returncode == 3
    # the budget of two attempts is spent: the run is finished and the mail job started
    last = pushtune(pushtune_home, "tweak", run_id, env=jenkins_env)
    assert last.returncode == 0, last.stderr
    assert "finished: below_threshold (attempt budget spent (2))" in last.stdout
    assert "triggered pushtune-notify" in last.stdout
    assert fake_jenkins.forms[-1]["job"] == "pushtune-notify"
    assert len(fake_jenkins.jobs["pushtune-train"]["builds"]) == 1
    for result in (tweak, last):
        assert TRIGGER_TOKEN not in result.stdout + result.stderr

    store = RunStore.open()
    assert store.get_run(run_id)["status"] == "below_threshold"
    assert len(store.attempts(run_id)) == 2
    assert store.get_run(run_id)["options"]["jenkins_build_url"] == jenkins_env["BUILD_URL"]

    no_token = pushtune(pushtune_home, "tweak", run_id, env={**jenkins_env, "PUSHTUNE_TRIGGER_TOKEN": ""})
    assert no_token.returncode == 2 and "PUSHTUNE_TRIGGER_TOKEN" in no_token.stderr


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_changed_lists_the_supported_model_files_between_two_commits(tmp_path, pushtune_home):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "old_model.py").write_text(LOGISTIC)
    (repo / "README.md").write_text("models\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "models").mkdir()
    (repo / "models" / "new_model.py").write_text(LOGISTIC)
    (repo / "helper.py").write_text(NOT_A_MODEL)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "second")
    second = git(repo, "rev-parse", "HEAD")

    props = tmp_path / "changed.properties"
    result = pushtune(pushtune_home, "changed", "--repo", repo, "--from", first, "--to", second, "--properties", props)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["models/new_model.py"]
    assert "skipped helper.py" in result.stderr
    assert read_properties(props) == {"MODEL_FILES": '["models/new_model.py"]', "MODEL_COMMIT": second}

    # a first build (no previous commit): the files of the commit itself
    initial = pushtune(pushtune_home, "changed", "--repo", repo, "--from", "", "--to", first)
    assert initial.stdout.split() == ["old_model.py"]
    # nothing changed: no properties file, so Jenkins triggers nothing
    none = pushtune(pushtune_home, "changed", "--repo", repo, "--from", second, "--to", second, "--properties", props)
    assert none.returncode == 0 and none.stdout == "" and not props.exists()
    bad = pushtune(pushtune_home, "changed", "--repo", repo, "--from", first, "--to", "no-such-rev")
    assert bad.returncode == 2 and "not a commit" in bad.stderr


def test_changed_never_lists_a_symbolic_link_out_of_the_checkout(tmp_path, pushtune_home):
    outside = tmp_path / "outside.py"
    outside.write_text(LOGISTIC)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("models\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "absolute.py").symlink_to(outside)
    (repo / "upwards.py").symlink_to(Path("..", "outside.py"))
    (repo / "real.py").write_text(LOGISTIC)
    (repo / "alias.py").symlink_to("real.py")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "links")
    second = git(repo, "rev-parse", "HEAD")

    result = pushtune(pushtune_home, "changed", "--repo", repo, "--from", first, "--to", second)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["alias.py", "real.py"]
    for name in ("absolute.py", "upwards.py"):
        assert f"skipped {name}" in result.stderr and "leads out of the repository" in result.stderr


def test_start_skips_what_is_no_model_and_writes_one_properties_file_per_run(tmp_path, pushtune_home, model):
    other = tmp_path / "other.py"
    other.write_text(NOT_A_MODEL)
    result = pushtune(pushtune_home, "start", model, other, "--skip-unsupported", "--properties-dir",
                      tmp_path / "runs", "--notify", "", "--git-commit", "abc123")
    assert result.returncode == 0, result.stderr
    (run_id,) = map(int, result.stdout.split())
    assert f"skipped {other}" in result.stderr
    files = sorted((tmp_path / "runs").iterdir())
    assert [f.name for f in files] == [f"run-{run_id}.properties"]
    run = RunStore.open().get_run(run_id)
    assert run["git_commit"] == "abc123" and run["options"]["notify"] == []

    strict = pushtune(pushtune_home, "start", other)
    assert strict.returncode == 2 and "unsupported model file" in strict.stderr
    several = pushtune(pushtune_home, "start", model, model, "--properties", tmp_path / "x")
    assert several.returncode == 2 and "--properties-dir" in several.stderr
    assert pushtune(pushtune_home, "start", model, "--threshold", "nan").returncode == 2


def test_finish_is_idempotent_and_unknown_runs_are_user_errors(pushtune_home, model):
    run_id = int(pushtune(pushtune_home, "start", model, "--runtime", "local").stdout)
    first = pushtune(pushtune_home, "finish", run_id, "--reason", "given up")
    assert first.returncode == 0 and f"run {run_id}: failed (given up)" in first.stdout
    second = pushtune(pushtune_home, "finish", run_id)
    assert second.returncode == 0 and "(given up)" in second.stdout
    for step in ("train", "tweak", "finish"):
        unknown = pushtune(pushtune_home, step, 999)
        assert unknown.returncode == 2 and "no run 999" in unknown.stderr


# a regression "model" that scores 0.5 at once
BELOW = test_monitor.TRIVIAL.replace('{"accuracy": 1.0}', '{"accuracy": 0.5}')
assert "0.5" in BELOW


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    (line,) = result.stderr.splitlines()
    assert line.startswith("pushtune: error: ")
    return line


def test_start_records_nothing_it_cannot_hand_on(tmp_path, pushtune_home, model):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    for option, target in (("--properties", blocker / "start.properties"), ("--properties", tmp_path),
                           ("--properties-dir", blocker / "props")):
        line = one_line_error(pushtune(pushtune_home, "start", model, "--runtime", "local", option, target))
        assert f"cannot write {target}" in line
    line = one_line_error(pushtune(pushtune_home, "start", model, tmp_path / "missing.py", "--runtime", "local"))
    assert "no such model file" in line
    no_engine = pushtune(pushtune_home, "start", model, "--runtime", "docker", "--build-image",
                         env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert no_engine.returncode == 2 and "images build" in no_engine.stderr
    second = tmp_path / "second.py"
    second.write_text(model.read_text())
    line = one_line_error(pushtune(pushtune_home, "start", model, second, "--runtime", "local", "--name", "shared"))
    assert line == f"pushtune: error: --name shared names one model: give it with one file, not {model.name}, second.py"
    assert RunStore.open().list_runs() == []
    assert not (pushtune_home / "runs").exists() or list((pushtune_home / "runs").iterdir()) == []
    assert blocker.read_text() == "a file, not a directory"


def test_tweak_checks_its_properties_file_before_it_finishes_the_run(tmp_path, pushtune_home):
    model = tmp_path / "below.py"
    model.write_text(BELOW)
    run_id = int(pushtune(pushtune_home, "start", model, "--runtime", "local", "--max-attempts", "1").stdout)
    assert pushtune(pushtune_home, "train", run_id).returncode == 3
    line = one_line_error(pushtune(pushtune_home, "tweak", run_id, "--properties", tmp_path))
    assert f"cannot write {tmp_path}" in line
    assert RunStore.open().get_run(run_id)["status"] == "running"


def test_changed_with_a_directory_for_its_properties_file_is_a_user_error(tmp_path, pushtune_home):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "model.py").write_text(LOGISTIC)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    props = tmp_path / "props"
    props.mkdir()
    for old in ("", "HEAD"):  # a model changed (the file is written) and none did (it is removed)
        line = one_line_error(pushtune(pushtune_home, "changed", "--repo", repo, "--from", old, "--properties", props))
        assert f"cannot write {props}" in line
    assert props.is_dir()
