"""Several agents, one run store: agents that share only PUSHTUNE_DB (a real PostgreSQL) and
PUSHTUNE_ARTIFACTS, each with a PUSHTUNE_HOME of its own, take turns in a job chain, take over a
dead driver's attempt once its lease expires, and ride out a database restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import test_monitor
import test_steps
from conftest import ROOT
from jobs.store.lease import Lease, attempt_lease
from jobs.store.run_store import RunStore

LEASE_SECONDS = 4
SAVE_MODEL = "import joblib\njoblib.dump(model, os.path.join(os.environ['PUSHTUNE_OUTPUT'], 'model.joblib'))\n"


class Agent:
    """One Jenkins agent: its own home and working directory, the shared store and artifacts."""

    def __init__(self, name: str, root: Path, database: str, artifacts: Path):
        self.name, self.home, self.workdir = name, root / name / "home", root / name / "work"
        self.workdir.mkdir(parents=True)
        self.env = {**os.environ, "PUSHTUNE_HOME": str(self.home), "PUSHTUNE_DB": database,
                    "PUSHTUNE_ARTIFACTS": str(artifacts), "PUSHTUNE_AGENT": name,
                    "PUSHTUNE_LEASE_SECONDS": str(LEASE_SECONDS), "PYTHONPATH": str(ROOT),
                    "TF_CPP_MIN_LOG_LEVEL": "3"}

    def args(self, *args) -> list[str]:
        return [sys.executable, "-m", "jobs", *map(str, args)]

    def __call__(self, *args, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.args(*args), cwd=self.workdir, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def start(self, *args, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.args(*args), cwd=self.workdir, env=self.env, **kwargs)


@pytest.fixture
def shared(tmp_path, postgres_url, monkeypatch):
    """(agent a, agent b, agent c, the store as this test process sees it)."""
    artifacts = tmp_path / "nfs" / "artifacts"
    monkeypatch.setenv("PUSHTUNE_ARTIFACTS", str(artifacts))
    monkeypatch.setenv("PUSHTUNE_HOME", str(tmp_path / "tests-home"))
    agents = [Agent(name, tmp_path, postgres_url, artifacts) for name in ("a", "b", "c")]
    return (*agents, RunStore.open(postgres_url))


def test_a_chain_alternating_between_two_agents_passes_and_both_see_it(tmp_path, shared):
    a, b, _, store = shared
    model = a.workdir / "logistic.py"
    model.write_text(test_steps.LOGISTIC + SAVE_MODEL)  # ~0.916 as pushed; C×10 passes 0.94
    started = a("start", model, "--runtime", "local", "--threshold", "0.94")
    assert started.returncode == 0, started.stderr
    run_id = int(started.stdout.strip())

    first = b("train", run_id)
    assert first.returncode == 3 and "below threshold" in first.stdout, first.stderr
    tweak = a("tweak", run_id)
    assert tweak.returncode == 0 and "C ×10" in tweak.stdout, tweak.stderr
    second = b("train", run_id)
    assert second.returncode == 0, second.stderr
    finished = a("finish", run_id)
    assert finished.returncode == 0, finished.stderr

    shown = [json.loads(agent("show", run_id, "--json").stdout) for agent in (a, b)]
    assert shown[0] == shown[1]
    best = shown[0]["best"]
    assert shown[0]["status"] == "passed" and best["attempt"] == 2
    artifact = Path(best["artifact"])
    assert artifact.is_file() and artifact.is_relative_to(tmp_path / "nfs" / "artifacts")
    assert Path(shown[0]["report"]).is_file()
    attempts = store.attempts(run_id)
    assert [x["status"] for x in attempts] == ["ok", "ok"]
    for agent in (a, b):  # nothing of the run is kept on an agent's own disk
        assert not (agent.home / "runs").exists()
    assert store.lease(attempt_lease(run_id, 2)) is None  # each driver let its lease go


def _slow_run(agent: Agent, epochs: int) -> subprocess.Popen:
    model = agent.workdir / "slow.py"
    model.write_text(test_monitor.SLOW_KERAS.replace("EPOCHS", str(epochs)))
    return agent.start("run", model, "--threshold", "0", "--max-attempts", "1", "--runtime", "local",
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_driver_and_training(driver: subprocess.Popen, attempt: Path) -> None:
    test_monitor.wait_for(lambda: test_monitor.epoch_of(attempt / "output") >= 2, 240, "a checkpoint")
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    test_monitor.kill_training("local", attempt)


@pytest.mark.slow
def test_a_monitor_on_another_agent_takes_over_once_the_lease_expires(tmp_path, shared):
    a, b, c, store = shared
    attempt = tmp_path / "nfs" / "artifacts" / "runs" / "1" / "attempt-1"
    _kill_driver_and_training(_slow_run(a, epochs=10), attempt)
    name = attempt_lease(1, 1)
    holder = store.lease(name)["holder"]
    assert holder.startswith("a/")

    # While the lease runs, a driver on another agent may be alive: b leaves the attempt alone.
    assert store.renew_lease(name, holder, 3600)  # as a live driver's heartbeat would keep it
    early = b("monitor", "--once")
    assert "nothing to do" in early.stdout, early.stdout + early.stderr

    assert store.renew_lease(name, holder, 0)  # then it runs out: the killed driver renews it no more
    assert store.lease(name) == {**store.lease(name), "holder": holder}
    monitors = [agent.start("monitor", "--once", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for agent in (b, c)]
    outputs = [m.communicate(timeout=120)[0] for m in monitors]
    resumed = [out for out in outputs if "run 1 attempt 1: resumed" in out]
    assert len(resumed) == 1, outputs  # two monitors, exactly one takeover

    test_monitor.wait_for(lambda: store.get_run(1)["status"] != "running", 240, "the resumed run")
    assert store.get_run(1)["status"] == "passed"
    restarts = store.restarts(1, 1)
    assert len(restarts) == 1 and restarts[0]["actor"] == "monitor"
    assert "training starts at epoch 0" in (attempt / "log.txt").read_text()
    assert f"training starts at epoch {restarts[0]['resumed_epoch']}" in (attempt / "log.txt").read_text()


def test_exactly_one_of_many_racing_takes_an_expired_lease(shared):
    *_, store = shared
    assert store.acquire_lease("run/9/attempt/1", "dead/1/x", 0.001)
    time.sleep(0.01)
    leases = [Lease(store, "run/9/attempt/1", holder=f"m{i}/1/x") for i in range(8)]
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda lease: lease.store.acquire_lease(lease.name, lease.holder, 30), leases))
    assert won.count(True) == 1
    assert store.lease("run/9/attempt/1")["holder"] == leases[won.index(True)].holder


def test_the_heartbeat_keeps_a_lease_well_ahead_of_its_expiry(shared, monkeypatch):
    """Renewed every third of the lease, a held lease never gets within a third of expiring:
    a heartbeat that renewed only at expiry would let another agent take it in between."""
    *_, store = shared
    seconds = 6.0
    monkeypatch.setenv("PUSHTUNE_LEASE_SECONDS", str(seconds))
    lease = Lease(store, "run/5")
    assert lease.try_acquire()
    margins, expiries = [], {store.lease("run/5")["expires_at"]}
    while len(expiries) < 4:  # three renewals, as the store records them
        expires_at = store.lease("run/5")["expires_at"]
        expiries.add(expires_at)
        margins.append(expires_at - time.time())
        time.sleep(0.05)  # polling the store, not a timing
    assert min(margins) > seconds / 3, sorted(margins)[:5]
    assert not Lease(store, "run/5").try_acquire()
    lease.release()
    assert store.lease("run/5") is None and Lease(store, "run/5").try_acquire()


def test_bad_lease_seconds_are_one_line_errors(shared):
    a, *_ = shared
    a.env["PUSHTUNE_LEASE_SECONDS"] = "soon"
    model = a.workdir / "logistic.py"
    model.write_text(test_steps.LOGISTIC)
    result = a("run", model, "--runtime", "local", "--threshold", "0.5")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pushtune: error: PUSHTUNE_LEASE_SECONDS='soon': give a number of seconds from 1 to 86400"]


# Each attempt says it started (a file), then waits for the test's go-ahead.
GATED = """import os, pathlib, time
gate = pathlib.Path(GATE_DIR)
(gate / f"started-{os.environ['PUSHTUNE_ATTEMPT']}").touch()
while not (gate / "go").exists():
    time.sleep(0.05)
"""


def test_a_postgresql_restart_mid_run_loses_nothing(shared, postgres_server, tmp_path):
    a, *_, store = shared
    gate = tmp_path / "gate"
    gate.mkdir()
    model = a.workdir / "logistic.py"
    model.write_text(GATED.replace("GATE_DIR", repr(str(gate))) +
                     test_steps.LOGISTIC.replace("C=0.001", "C=0.00001"))
    # Heartbeats all along, and a lease that outlasts the restarts: a driver cut off from the store
    # for longer than its lease stops (another agent may have taken over).
    a.env["PUSHTUNE_LEASE_SECONDS"] = "15"
    driver = a.start("run", model, "--runtime", "local", "--threshold", "0.99", "--max-attempts", "4",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    test_monitor.wait_for(lambda: (gate / "started-1").exists() or driver.poll() is not None, 120, "attempt 1")
    assert store.get_attempt(1, 1)["status"] == "running"  # the run is mid-attempt across the restarts
    postgres_server.restart()
    postgres_server.restart()
    restarted_at = time.time()
    (gate / "go").touch()
    out, err = driver.communicate(timeout=300)
    assert driver.returncode in (0, 3), err
    run = store.get_run(1)
    assert run["status"] in ("passed", "below_threshold")
    attempts = store.attempts(1)
    assert [x["n"] for x in attempts] == list(range(1, len(attempts) + 1)) and len(attempts) >= 2
    assert all(x["status"] == "ok" and x["metric_value"] is not None for x in attempts)
    assert attempts[0]["started_at"] < restarted_at < attempts[0]["finished_at"]  # the run spanned them


def test_an_unreachable_database_is_a_clear_error_after_bounded_retries(shared):
    a, *_ = shared
    a.env["PUSHTUNE_DB"] = "postgresql://pushtune:hunter2@127.0.0.1:1/pushtune"
    a.env["PUSHTUNE_DB_RETRY_SECONDS"] = "1.5"
    started = time.monotonic()
    result = a("runs")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("pushtune: error: cannot read the run store "
                           "postgresql://pushtune:***@127.0.0.1:1/pushtune: ")
    assert "Connection refused" in line and line.endswith("(gave up after 1.5 s)")
    assert "hunter2" not in result.stderr
    assert 1.0 <= time.monotonic() - started < 30


@pytest.fixture(params=["sqlite", "postgresql"])
def two_agents(request, tmp_path, monkeypatch):
    """(agent a, agent b, the store) sharing an SQLite file on the shared disk, or PostgreSQL."""
    artifacts = tmp_path / "nfs" / "artifacts"
    artifacts.mkdir(parents=True)
    database = f"sqlite:///{tmp_path}/nfs/pushtune.db" if request.param == "sqlite" else \
        request.getfixturevalue("postgres_url")
    monkeypatch.setenv("PUSHTUNE_ARTIFACTS", str(artifacts))
    monkeypatch.setenv("PUSHTUNE_HOME", str(tmp_path / "tests-home"))
    a, b = (Agent(name, tmp_path, database, artifacts) for name in ("a", "b"))
    return a, b, RunStore.open(database)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.slow
def test_a_paused_driver_whose_attempt_was_taken_over_trains_and_records_nothing_more(tmp_path, two_agents):
    a, b, store = two_agents
    attempt = tmp_path / "nfs" / "artifacts" / "runs" / "1" / "attempt-1"
    model = a.workdir / "slow.py"
    model.write_text(test_monitor.SLOW_KERAS.replace("EPOCHS", "40"))
    driver = a.start("run", model, "--threshold", "0", "--max-attempts", "1", "--runtime", "local",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    test_monitor.wait_for(lambda: test_monitor.epoch_of(attempt / "output") >= 2, 240, "a checkpoint")
    training = json.loads((attempt / "process.json").read_text())["pid"]  # a's attempt leader

    # Agent a freezes (a paused VM): its driver and its training. Its lease runs out, and b's
    # monitor, which cannot see a's processes, takes the attempt over and resumes it.
    os.killpg(training, signal.SIGSTOP)
    driver.send_signal(signal.SIGSTOP)
    test_monitor.wait_for(lambda: "run 1 attempt 1: resumed" in b("monitor", "--once").stdout, 120, "b's takeover")
    assert store.lease(attempt_lease(1, 1))["holder"].startswith("b/")

    # a wakes up: it finds its lease gone, kills its own training, and records nothing.
    os.killpg(training, signal.SIGCONT)
    driver.send_signal(signal.SIGCONT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 1, err
    assert "pushtune: lost the lease run/1/attempt/1 (it expired and another driver took it); stopping" in err
    assert err.strip().splitlines()[-1].startswith("pushtune: error: lost the lease run/1/attempt/1"), err
    assert _state(training) == "gone"  # the driver reaped its killed training

    test_monitor.wait_for(lambda: store.get_run(1)["status"] != "running", 300, "b's driver to finish the run")
    run, (only,) = store.get_run(1), store.attempts(1)
    assert run["status"] == "passed" and only["status"] == "ok" and only["metric_value"] is not None
    restarts = store.restarts(1, 1)
    assert [r["actor"] for r in restarts] == ["monitor"]  # a never restarted its killed training
    starts = [line for line in (attempt / "log.txt").read_text().splitlines() if "training starts at" in line]
    assert starts == ["training starts at epoch 0", f"training starts at epoch {restarts[0]['resumed_epoch']}"]


class _CuttableProxy:
    """A TCP relay to the PostgreSQL server that can be cut: a network that drops one agent."""

    def __init__(self, host: str, port: int):
        self.target, self.sockets = (host, port), []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._relay(client, socket.create_connection(self.target))

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        self.sockets += [client, server]
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # stops listening (a blocked accept holds it open)
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def test_a_driver_cut_off_from_the_store_for_longer_than_its_lease_stops(shared, monkeypatch):
    from urllib.parse import urlsplit

    *_, store = shared
    where = urlsplit(store.database.location)
    proxy = _CuttableProxy(where.hostname, where.port)
    monkeypatch.setenv("PUSHTUNE_LEASE_SECONDS", "3")
    cut_off = RunStore.open(where._replace(netloc=f"{where.username}@127.0.0.1:{proxy.port}").geturl())
    lease = Lease(cut_off, "run/7")
    stopped = threading.Event()
    lease.on_lost = stopped.set  # what the attempt's driver does here: kill its training
    assert lease.try_acquire()
    proxy.cut()
    assert stopped.wait(120) and lease.lost
    # by then its lease has run out in the store, and another agent may take it
    assert store.acquire_lease("run/7", "b/1/other", 30)
