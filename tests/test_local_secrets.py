"""The local runtime keeps pushtune's secrets from the script it runs: the script's environment
holds none, and the driver's own environment and memory in /proc are closed to it, in the setup
the docs claim: pushtune run by an ordinary user (not root; here `nobody` when the tests run as
root). A real `pushtune run --runtime local` as that user, with the secrets in its environment,
and a script that looks for them everywhere it can.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT

SECRETS = {"PUSHTUNE_SMTP_PASSWORD": "smtp-pass-51c3", "JENKINS_API_TOKEN": "jenkins-token-a90f",
           "PUSHTUNE_TRIGGER_TOKEN": "trigger-token-3e7d",
           "PUSHTUNE_DB": "db-pass-6b2a"}  # the store's URL: here an SQLite file named so
NOBODY = 65534

# Classified as a regression model; reports 0.5. Writes what it found to seen.json.
LOOKS_FOR_SECRETS = textwrap.dedent("""\
    import json, os
    if False:
        from sklearn.linear_model import LogisticRegression
        LogisticRegression(C=1.0)
    SECRETS = {secrets!r}

    def parent(pid):
        return int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])

    def read(path):
        try:
            with open(path, "rb") as file:
                return file.read(1 << 20).decode(errors="replace")
        except OSError as exc:
            return type(exc).__name__

    leader = os.getppid()  # the attempt's leader; its parent is the driver, `pushtune run`
    driver = parent(leader)
    holders = [pid for pid in os.listdir("/proc") if pid.isdigit()
               and any(secret in read(f"/proc/{{pid}}/environ") for secret in SECRETS)]
    seen = dict(uid=os.getuid(), own=dict(os.environ),
                leader=read(f"/proc/{{leader}}/environ"), driver_pid=driver,
                driver=read(f"/proc/{{driver}}/environ"), driver_memory=read(f"/proc/{{driver}}/mem"),
                holders=holders)
    with open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "seen.json"), "w") as out:
        json.dump(seen, out)
    print("accuracy: 0.5")
""").format(secrets=list(SECRETS.values()))


def library_path() -> str:
    paths = dict.fromkeys([str(ROOT), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    return os.pathsep.join(paths)


def python_for(user: dict) -> str | None:
    """An interpreter that `user` can run pushtune with: this one, else the system's of the same
    version (this one may live below a home directory the user cannot enter)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/python{version}"):
        try:
            probe = subprocess.run([python, "-c", "import jobs.loop, jobs.cli"], capture_output=True,
                                   env={"PYTHONPATH": library_path(), "PATH": os.environ.get("PATH", "")},
                                   cwd="/", **user)
        except OSError:  # not there, or not the user's to run
            continue
        if probe.returncode == 0:
            return python
    return None


@pytest.fixture
def shared_dir():
    """A directory every user can enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="pushtune-secrets-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def train_as(python: str, home: Path, user: dict):
    """`pushtune run --runtime local` on the hostile script, as `user`, with the secrets in its
    environment: (the driver's pid, its exit code, what the script saw)."""
    model = home / "hostile.py"
    model.write_text(LOOKS_FOR_SECRETS)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "PUSHTUNE_HOME": str(home),
           "PYTHONPATH": library_path(), **SECRETS,
           "PUSHTUNE_DB": f"sqlite://{home}/{SECRETS['PUSHTUNE_DB']}.db"}
    if "user" in user:
        for path in (home, model):
            os.chown(path, user["user"], user["group"])
    driver = subprocess.Popen(
        [python, "-m", "jobs", "run", str(model), "--runtime", "local", "--max-attempts", "1",
         "--threshold", "0.9", "--no-autolog"],
        cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, **user)
    output, _ = driver.communicate(timeout=300)
    seen_file = home / "runs" / "1" / "attempt-1" / "output" / "seen.json"
    assert seen_file.is_file(), output
    return driver.pid, driver.returncode, json.loads(seen_file.read_text()), output


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and prctl are Linux's")
def test_an_unprivileged_users_script_gets_no_secret(shared_dir):
    user = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.getuid() == 0 else {}
    python = python_for(user)
    if python is None:
        pytest.skip(f"no Python that uid {NOBODY} can run pushtune with (is {ROOT} readable by all?)")
    driver_pid, code, seen, output = train_as(python, shared_dir, user)
    assert code == 3, output  # below the threshold: trained and recorded
    assert seen["uid"] == (NOBODY if user else os.getuid()) != 0
    assert seen["driver_pid"] == driver_pid  # the script found the driver ...
    assert seen["driver"] == "PermissionError"  # ... and could not read its environment
    assert seen["driver_memory"] == "PermissionError"
    assert "PUSHTUNE_OUTPUT=" in seen["leader"]  # other environments of the attempt are readable
    assert seen["holders"] == []  # no process it can read holds a secret
    for name, secret in SECRETS.items():
        assert name not in seen["own"] and secret not in json.dumps(seen["own"])
        assert secret not in seen["leader"]
