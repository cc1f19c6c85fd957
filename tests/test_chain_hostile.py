"""The job chain against what it meets in the wild: hostile file names pushed, an aborted train
build (a real SIGTERM), a chain rendered under another name, a Jenkins without a root URL, and
the NOTIFY option. Real git, real processes, the real store, the real shell builder of the YAML,
the fake controller and a real SMTP server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from jobs.store.run_store import RunStore
from test_jenkins_client import TRIGGER_TOKEN, fake_jenkins, pushtune  # noqa: F401 (fixture)
from test_monitor import TRIVIAL, wait_for
from test_notify import Inbox, certificate, mail_env, smtp_server  # noqa: F401 (fixtures)
from test_steps import git, job_config, one_line_error

HOSTILE = ["*.py", "--metric=x.py", "a b.py"]


def java_properties(path: Path) -> dict[str, str]:
    """Read a properties file as Jenkins does (backslash escapes, \\uXXXX in UTF-16 units)."""
    def unescape(text: str) -> str:
        out = re.sub(r"\\(u[0-9a-fA-F]{4}|.)", lambda m: chr(int(m[1][1:], 16)) if len(m[1]) == 5
                     else {"n": "\n", "r": "\r", "t": "\t"}.get(m[1], m[1]), text)
        return out.encode("utf-16", "surrogatepass").decode("utf-16")
    pairs = re.findall(r"^((?:\\.|[^=\\])*)=(.*)$", path.read_text(encoding="latin-1"), re.M)
    return {unescape(k): unescape(v) for k, v in pairs}


def job_shell(job: str) -> str:
    """The shell of one job (`classify`, `notify` …), as jenkins/jobs/pushtune.yaml has it."""
    for item in yaml.safe_load((ROOT / "jenkins/jobs/pushtune.yaml").read_text()):
        template = item.get("job-template", {})
        if template.get("name") == f"{{name}}-{job}":
            return template["builders"][0]["shell"]
    raise AssertionError(f"no {job} job")


def build_env(home: Path, **parameters: str) -> dict[str, str]:
    """A build's environment on an agent: this pushtune on PATH, its store, the job's parameters,
    no pushtune, Jenkins or mail setting of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JENKINS_", "BUILD_", "PUSHTUNE_", "JOB_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", PYTHONPATH=str(ROOT),
               PUSHTUNE_HOME=str(home), **parameters)
    return env


def test_hostile_file_names_get_one_run_each_and_change_no_option(tmp_path, pushtune_home):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "old.py").write_text(TRIVIAL)  # a .py file the push did not change: `*.py` must not reach it
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    first = git(repo, "rev-parse", "HEAD")
    for name in HOSTILE:
        (repo / name).write_text(TRIVIAL)
    git(repo, "add", "--", *HOSTILE)
    git(repo, "commit", "-qm", "hostile")

    props = tmp_path / "changed.properties"
    changed = pushtune(pushtune_home, "changed", "--repo", repo, "--from", first, "--to", "HEAD", "--properties", props)
    assert changed.returncode == 0, changed.stderr
    params = java_properties(props)

    # the classify job's own shell lines, with the parameters Jenkins hands it
    env = build_env(pushtune_home, MODEL_FILES=params["MODEL_FILES"], THRESHOLD="0.5", MAX_ATTEMPTS="2",
                    RUNTIME="local", NOTIFY="")
    builder = subprocess.run(["bash", "-ec", job_shell("classify")], cwd=repo, env=env, capture_output=True,
                             text=True, timeout=300)
    assert builder.returncode == 0, builder.stderr

    runs = RunStore.open().list_runs()
    assert sorted(run["model_name"] for run in runs) == sorted(HOSTILE)
    assert {run["metric"] for run in runs} == {"accuracy"}
    assert {run["threshold"] for run in runs} == {0.5}
    properties = sorted((repo / "runs").iterdir())
    assert sorted(Path(java_properties(p)["MODEL"]).name for p in properties) == sorted(HOSTILE)

    # by hand, the positional form still works, with -- before a name that looks like an option
    by_hand = pushtune(pushtune_home, "start", "--runtime", "local", "--", repo / "--metric=x.py")
    assert by_hand.returncode == 0, by_hand.stderr
    assert RunStore.open().get_run(int(by_hand.stdout))["metric"] == "accuracy"
    bad = one_line_error(pushtune(pushtune_home, "start", "--files-json", "*.py"))
    assert "JSON list" in bad


# trains for a few seconds, long enough to be aborted, and misses the threshold of 0.9 (so the chain goes on)
SLOW_TRIVIAL = TRIVIAL.replace("import json, os", "import json, os, time\ntime.sleep(4)").replace(
    '{"accuracy": 1.0}', '{"accuracy": 0.5}')


def start_chain_run(tmp_path: Path, home: Path, *extra: str) -> int:
    model = tmp_path / "slow.py"
    model.write_text(SLOW_TRIVIAL)
    started = pushtune(home, "start", model, "--runtime", "local", "--threshold", "0.9", "--max-attempts", "2",
                       *extra, env={"JOB_NAME": "folder/acme-classify", "BUILD_NUMBER": "7"})
    assert started.returncode == 0, started.stderr
    return int(started.stdout)


def abort_train(home: Path, run_id: int) -> None:
    """`pushtune train` as the train job runs it, aborted mid-attempt the way Jenkins does: SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JENKINS_", "BUILD_", "PUSHTUNE_"))}
    env.update(PUSHTUNE_HOME=str(home), PYTHONPATH=str(ROOT))
    train = subprocess.Popen([sys.executable, "-m", "jobs", "train", str(run_id)], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (home / "runs" / str(run_id) / "attempt-1" / "process.json").exists(), 60, "the training")
    time.sleep(0.5)
    train.send_signal(signal.SIGTERM)
    assert train.wait(timeout=60) != 0


def test_an_aborted_train_build_is_resumed_by_the_monitor_and_handed_to_its_own_chain(
        tmp_path, pushtune_home, fake_jenkins):
    for job in ("folder/acme-train", "folder/acme-notify"):
        fake_jenkins.jobs[job] = {"config": job_config(), "builds": []}
    run_id = start_chain_run(tmp_path, pushtune_home)
    abort_train(pushtune_home, run_id)
    store = RunStore.open()
    assert store.get_run(run_id)["status"] == "interrupted"
    assert store.get_attempt(run_id, 1)["error"] == "interrupted (Terminated)"

    jenkins_env = {"JENKINS_URL": fake_jenkins.url, "BUILD_URL": f"{fake_jenkins.url}job/acme-monitor/1/",
                   "JOB_NAME": "folder/acme-monitor", "BUILD_NUMBER": "1", "PUSHTUNE_TRIGGER_TOKEN": TRIGGER_TOKEN}
    monitor = pushtune(pushtune_home, "monitor", "--once", env=jenkins_env)
    assert monitor.returncode == 0, monitor.stderr
    assert f"run {run_id} attempt 1: resumed (its step was stopped (SIGTERM)" in monitor.stdout

    wait_for(lambda: store.get_attempt(run_id, 1)["status"] == "ok", 60, "the resumed attempt")
    restarts = store.restarts(run_id, 1)
    assert [(r["actor"], r["reason"]) for r in restarts] == [("monitor", "its step was stopped (SIGTERM)")]
    # handed back to the chain it came from: its train job, not pushtune-train
    wait_for(lambda: any(f.get("job") == "folder/acme-train" for f in fake_jenkins.forms), 30,
             "the trigger of the chain's train job")
    # the chain planned the next attempt, which its train job runs: the monitor leaves it alone
    assert store.get_run(run_id)["status"] == "running"
    assert [a["status"] for a in store.attempts(run_id)] == ["ok", "pending"]
    assert "nothing to do" in pushtune(pushtune_home, "monitor", "--once").stdout


def test_an_aborted_attempt_is_resumed_at_most_max_restarts_times_and_ctrl_c_never(tmp_path, pushtune_home):
    run_id = start_chain_run(tmp_path, pushtune_home, "--max-restarts", "0")
    abort_train(pushtune_home, run_id)
    first = pushtune(pushtune_home, "monitor", "--once")
    assert f"run {run_id} attempt 1: gave up (interrupted (Terminated); not resumed after 0 restarts)" in first.stdout
    assert "nothing to do" in pushtune(pushtune_home, "monitor", "--once").stdout
    store = RunStore.open()
    assert store.get_run(run_id)["status"] == "interrupted" and store.restarts(run_id, 1) == []

    other = start_chain_run(tmp_path, pushtune_home)
    train = subprocess.Popen([sys.executable, "-m", "jobs", "train", str(other)], cwd=ROOT,
                             env={**os.environ, "PUSHTUNE_HOME": str(pushtune_home), "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (pushtune_home / "runs" / str(other) / "attempt-1" / "process.json").exists(), 60, "training")
    time.sleep(0.5)
    train.send_signal(signal.SIGINT)  # a person's Ctrl-C: left as they left it
    train.wait(timeout=60)
    assert store.get_run(other)["status"] == "interrupted"
    assert "nothing to do" in pushtune(pushtune_home, "monitor", "--once").stdout


def test_start_records_its_chain_and_tweak_triggers_that_chain(tmp_path, pushtune_home, fake_jenkins):
    model = tmp_path / "below.py"
    model.write_text(TRIVIAL.replace('{"accuracy": 1.0}', '{"accuracy": 0.5}'))
    fake_jenkins.jobs["acme-train"] = {"config": job_config(), "builds": []}
    started = pushtune(pushtune_home, "start", model, "--runtime", "local", env={"JOB_NAME": "acme-classify"})
    run_id = int(started.stdout)
    chain = {"train": "acme-train", "notify": "acme-notify"}
    assert RunStore.open().get_run(run_id)["options"]["jenkins_jobs"] == chain
    explicit = pushtune(pushtune_home, "start", model, "--runtime", "local", "--train-job", "t", "--notify-job", "n")
    assert RunStore.open().get_run(int(explicit.stdout))["options"]["jenkins_jobs"] == {"train": "t", "notify": "n"}

    assert pushtune(pushtune_home, "train", run_id).returncode == 3
    tweak = pushtune(pushtune_home, "tweak", run_id, env={
        "JENKINS_URL": fake_jenkins.url, "BUILD_URL": f"{fake_jenkins.url}job/acme-tweak/1/",
        "PUSHTUNE_TRIGGER_TOKEN": TRIGGER_TOKEN})
    assert tweak.returncode == 0, tweak.stderr
    assert "triggered acme-train" in tweak.stdout


def test_tweak_in_a_jenkins_without_root_url_says_so_and_fails(tmp_path, pushtune_home):
    model = tmp_path / "below.py"
    model.write_text(TRIVIAL.replace('{"accuracy": 1.0}', '{"accuracy": 0.5}'))
    run_id = int(pushtune(pushtune_home, "start", model, "--runtime", "local").stdout)
    assert pushtune(pushtune_home, "train", run_id).returncode == 3
    no_root_url = {"JOB_NAME": "pushtune-tweak", "BUILD_NUMBER": "3"}  # what such a build gets
    line = one_line_error(pushtune(pushtune_home, "tweak", run_id, env=no_root_url))
    assert "cannot start pushtune-train" in line and "Jenkins URL" in line
    assert pushtune(pushtune_home, "tweak", run_id, "--no-trigger", env=no_root_url).returncode == 0
    assert pushtune(pushtune_home, "tweak", run_id).returncode == 0  # by hand, outside Jenkins


def test_notify_mails_the_recipients_the_run_was_started_with(tmp_path, pushtune_home, smtp_server, mail_env):
    inbox = Inbox()
    env = {**mail_env, "PUSHTUNE_SMTP_PORT": str(smtp_server(inbox))}
    model = tmp_path / "trivial.py"
    model.write_text(TRIVIAL)
    run_id = int(pushtune(pushtune_home, "start", model, "--runtime", "local", "--threshold", "0.5",
                          "--notify", "owner@example.org").stdout)
    assert pushtune(pushtune_home, "train", run_id).returncode == 0
    sent = pushtune(pushtune_home, "notify", run_id, env=env)
    assert sent.returncode == 0, sent.stderr
    (mail,) = inbox.received
    assert mail.rcpt_tos == ["owner@example.org"]
    assert RunStore.open().notifications(run_id)[0]["recipients"] == ["owner@example.org"]
    # --notify still wins
    assert pushtune(pushtune_home, "notify", run_id, "--notify", "x@example.org", env=env).returncode == 0
    assert inbox.received[-1].rcpt_tos == ["x@example.org"]


# trains and pickles a real model: its attempt exports it to ONNX, so the version can serve
SAVES_A_MODEL = """\
import json, os, pickle
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=500).fit(X, y)
pickle.dump(model, open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "model.pkl"), "wb"))
json.dump({"accuracy": 1.0}, open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "metrics.json"), "w"))
"""


@pytest.mark.parametrize("mail", [
    {},  # compose's defaults: no SMTP server, no recipients
    {"PUSHTUNE_SMTP_HOST": "127.0.0.1", "PUSHTUNE_SMTP_PORT": "1", "PUSHTUNE_SMTP_SECURITY": "none",
     "PUSHTUNE_SMTP_PASSWORD": "secret", "PUSHTUNE_SMTP_TRIES": "1",
     "PUSHTUNE_MAIL_TO": "owner@example.org"},  # a server that does not answer
])
def test_the_notify_build_stays_green_without_mail_so_deploy_registers_the_model(tmp_path, pushtune_home, mail):
    model = tmp_path / "trivial.py"
    model.write_text(SAVES_A_MODEL)
    run_id = pushtune(pushtune_home, "start", model, "--runtime", "local", "--threshold", "0.5").stdout.strip()
    assert pushtune(pushtune_home, "train", run_id).returncode == 0

    # the SMTP login the job binds from the pushtune-smtp credential (an empty secret file by default)
    env = build_env(pushtune_home, RUN_ID=run_id, **{"PUSHTUNE_SMTP_USER": "pushtune", "PUSHTUNE_SMTP_PASSWORD": "",
                                                      **mail})
    notify = subprocess.run(["bash", "-ec", job_shell("notify")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert notify.returncode == 0, notify.stderr  # SUCCESS: the deploy build is triggered
    said = "mail skipped" if not mail else "not sent"
    assert [line for line in notify.stderr.splitlines() if said in line], notify.stderr
    (row,) = RunStore.open().notifications(int(run_id))
    assert row["status"] == ("skipped" if not mail else "failed")

    deploy = subprocess.run(["bash", "-ec", job_shell("deploy")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert deploy.returncode == 0, deploy.stderr
    said = deploy.stdout.splitlines()
    assert said[0] == "trivial v1 is production"
    # then the results the deploy job archives, and the line its build's description is set from
    assert said[-1] == f"description: run {run_id} · accuracy 1.0000 ≥ 0.5 at attempt 1 · trivial v1 is production"
    assert json.loads((tmp_path / "pushtune-results" / "show.json").read_text())["status"] == "passed"
