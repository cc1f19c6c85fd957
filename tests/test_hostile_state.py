"""State a user or a crash leaves behind: a recreated, emptied or damaged store, a run without
its directory, runs the monitor cannot handle, ids SQLite cannot hold. Real store files, real
processes, the real CLI; each problem is one line and exit 2, and nothing recorded is lost."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from conftest import ROOT
from jobs.loop import RunOptions, plan_next, prepare_attempt, start_run
from jobs.store.run_store import RunStore
from test_monitor import TRIVIAL, wait_for

# A trivial regression "model" that saves an artifact whose bytes say which script made it.
ARTIFACT = textwrap.dedent("""\
    import json, os
    if False:  # classified as a regression model; trains nothing
        from sklearn.linear_model import LogisticRegression
        LogisticRegression(C=1.0)
    out = os.environ["PUSHTUNE_OUTPUT"]
    open(os.path.join(out, "model.pkl"), "w").write("MARK")
    json.dump({"accuracy": 1.0}, open(os.path.join(out, "metrics.json"), "w"))
""")
TOO_BIG = "99999999999999999999999"


def one_line_error(result) -> str:
    """The error line of a user error: exit 2, one line, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pushtune: error: "), result.stderr
    return lines[0]


def script(tmp_path: Path, mark: str) -> Path:
    path = tmp_path / f"{mark}.py"
    path.write_text(ARTIFACT.replace("MARK", mark))
    return path


def test_a_recreated_store_never_overwrites_an_old_run_and_an_emptied_one_is_an_error(
        tmp_path, pushtune_home, cli):
    first = cli("run", script(tmp_path, "first"), "--runtime", "local", "--threshold", "0.5")
    assert first.returncode == 0, first.stderr
    artifact = pushtune_home / "runs" / "1" / "attempt-1" / "output" / "model.pkl"
    assert artifact.read_text() == "first"

    for name in ("pushtune.db", "pushtune.db-wal", "pushtune.db-shm"):  # the store is recreated
        (pushtune_home / name).unlink(missing_ok=True)
    second = cli("run", script(tmp_path, "second"), "--runtime", "local", "--threshold", "0.5")
    assert second.returncode == 0, second.stderr
    assert artifact.read_text() == "first"  # runs/1 is not the new run's
    (run,) = RunStore.open().list_runs()
    assert run["id"] == 2 and (pushtune_home / "runs" / "2" / "pushed.py").read_text().count("second")

    (pushtune_home / "pushtune.db").write_bytes(b"")  # the store is emptied
    third = cli("run", script(tmp_path, "third"), "--runtime", "local", "--threshold", "0.5")
    line = one_line_error(third)
    assert str(pushtune_home / "pushtune.db") in line and "backup" in line
    assert artifact.read_text() == "first" and sorted(p.name for p in (pushtune_home / "runs").iterdir()) == ["1", "2"]


def _corrupt_runs_table(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(path, "r+b") as handle:
        handle.seek((root - 1) * size)
        handle.write(b"\xa5" * size)


def test_a_damaged_store_says_which_file_and_what_to_do(tmp_path, pushtune_home, cli):
    model = tmp_path / "trivial.py"
    model.write_text(TRIVIAL)
    assert cli("start", model, "--runtime", "local").returncode == 0
    store = pushtune_home / "pushtune.db"
    _corrupt_runs_table(store)
    for command in (["runs"], ["show", "1"], ["train", "1"], ["monitor", "--once"],
                    ["run", model, "--runtime", "local"]):
        line = one_line_error(cli(*command))
        assert f"{store} is damaged" in line and "backup" in line and "move it aside" in line, command

    store.write_bytes(b"SQLite format 3\0" + b"\xa5" * 8000)  # a header, then garbage
    line = one_line_error(cli("runs"))
    assert str(store) in line and "backup" in line


def test_ids_sqlite_cannot_hold_are_no_such_run(tmp_path, pushtune_home, cli):
    model = tmp_path / "trivial.py"
    model.write_text(TRIVIAL)
    assert cli("start", model, "--runtime", "local").returncode == 0
    mail = {"PUSHTUNE_SMTP_HOST": "127.0.0.1", "PUSHTUNE_MAIL_TO": "owner@example.org"}
    for command in ("show", "train", "tweak", "finish", "resume", "notify"):
        assert f"no run {TOO_BIG}" in one_line_error(cli(command, TOO_BIG, env=mail)), command
    assert f"no attempt {TOO_BIG} in run 1" in one_line_error(cli("resume", "1", "--attempt", TOO_BIG))
    assert cli("runs", "--limit", TOO_BIG).returncode == 0


def _old(store: RunStore, run_id: int) -> None:
    """As if the run had been started an hour ago (past the monitor's grace for a new driver)."""
    store.update_run(run_id, started_at=time.time() - 3600)


def test_a_run_without_its_directory_never_works_in_the_current_directory(tmp_path, pushtune_home, cli):
    model = tmp_path / "trivial.py"
    model.write_text(TRIVIAL)
    store = RunStore.open()
    run_id = start_run(store, model, RunOptions(runtime="local", threshold=0.5))
    store.update_run(run_id, run_dir="")  # its driver died between recording it and its directory
    _old(store, run_id)
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    monitor = cli("monitor", "--once", cwd=cwd)
    assert monitor.returncode == 0, monitor.stderr
    assert f"run {run_id}: skipped (run {run_id} has no run directory" in monitor.stdout
    assert "has no run directory" in store.get_run(run_id)["stop_reason"]
    assert "has no run directory" in one_line_error(cli("resume", run_id, cwd=cwd))
    assert "has no run directory" in one_line_error(cli("train", run_id, cwd=cwd))
    finished = cli("finish", run_id, cwd=cwd)
    assert finished.returncode == 0, finished.stderr
    assert store.get_run(run_id)["status"] == "failed"
    assert list(cwd.iterdir()) == []  # no resume.log or report.html


def test_one_broken_run_does_not_stop_the_monitor_from_resuming_the_others(tmp_path, pushtune_home, cli):
    model = tmp_path / "trivial.py"
    model.write_text(TRIVIAL)
    store = RunStore.open()

    def run_with_an_orphaned_attempt(runtime: str) -> int:
        run_id = start_run(store, model, RunOptions(runtime=runtime, threshold=0.5))
        candidate, _ = plan_next(store, run_id)
        prepare_attempt(store, run_id, candidate)  # recorded, laid out; its driver died at once
        return run_id

    good = run_with_an_orphaned_attempt("local")
    no_engine = run_with_an_orphaned_attempt("docker")
    deleted = run_with_an_orphaned_attempt("local")
    shutil.rmtree(store.get_run(deleted)["run_dir"])
    corrupt = start_run(store, model, RunOptions(runtime="local", threshold=0.5))
    _old(store, corrupt)
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET options = '{\"threshold\": ' WHERE id = ?", (corrupt,))

    result = cli("monitor", "--once", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"run {good} attempt 1: resumed (training process gone; from epoch 0)" in lines
    problems = {
        no_engine: "no Docker engine answers at unix:///nonexistent/docker.sock",
        deleted: f"its directory {pushtune_home / 'runs' / str(deleted)} is missing",
        corrupt: f"the options column of run {corrupt} in {store.path} is not valid JSON",
    }
    for run_id, problem in problems.items():
        assert any(line.startswith(f"run {run_id}: skipped (") and problem in line for line in lines), (problem, lines)
        with sqlite3.connect(store.path) as db:  # recorded, and the run is left as it was
            status, reason = db.execute("SELECT status, stop_reason FROM runs WHERE id = ?", (run_id,)).fetchone()
        assert status == "running" and problem in reason
    wait_for(lambda: store.get_run(good)["status"] == "passed", 60, "the resumed run")
    assert json.loads((Path(store.get_attempt(good, 1)["dir"]) / "output" / "metrics.json").read_text())


def test_the_monitor_keeps_watching_past_a_broken_run(tmp_path, pushtune_home, cli):
    model = tmp_path / "trivial.py"
    model.write_text(TRIVIAL)
    store = RunStore.open()
    run_id = start_run(store, model, RunOptions(runtime="local", threshold=0.5))
    _old(store, run_id)
    shutil.rmtree(store.get_run(run_id)["run_dir"])

    watcher = subprocess.Popen(
        [sys.executable, "-m", "jobs", "monitor", "--interval", "0.2"], cwd=ROOT, text=True,
        env={**os.environ, "PUSHTUNE_HOME": str(pushtune_home), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    skipped = f"run {run_id}: skipped ("
    guard = threading.Timer(300, watcher.kill)  # turns a monitor that stops printing into a failure
    guard.start()
    seen = []
    try:
        assert watcher.stdout is not None  # stdout=PIPE
        for line in watcher.stdout:  # the monitor's own lines, as it prints them
            seen.append(line)
            if sum(seen_line.startswith(skipped) for seen_line in seen) == 2:
                break
        assert watcher.poll() is None, "".join(seen)  # still watching after its second sweep
    finally:
        guard.cancel()
        watcher.terminate()
        out, err = watcher.communicate(timeout=30)
    assert sum(line.startswith(skipped) for line in seen) == 2, (seen, out, err)
    assert "Traceback" not in err


def test_resume_never_reruns_an_attempt_that_is_already_recorded(tmp_path, pushtune_home, cli):
    model = tmp_path / "failing.py"
    model.write_text(TRIVIAL.replace("json.dump(", "raise SystemExit(1)\njson.dump("))
    assert cli("start", model, "--runtime", "local").returncode == 0
    assert cli("train", "1").returncode == 1  # the attempt failed; the chain's run goes on
    recorded = RunStore.open().get_attempt(1, 1)
    line = one_line_error(cli("resume", "1", "--attempt", "1"))
    assert "attempt 1 of run 1 is failed, not running" in line
    assert RunStore.open().get_attempt(1, 1) == recorded


def test_watch_reports_a_failed_sweep_and_sweeps_again(tmp_path, pushtune_home):
    from jobs.ci.monitor import watch

    model = tmp_path / "trivial.py"
    model.write_text(TRIVIAL)
    store = RunStore.open()
    start_run(store, model, RunOptions(runtime="local", chain=True))
    _corrupt_runs_table(store.path)
    lines = []

    def echo(line: str) -> None:
        lines.append(line)
        if len(lines) == 3:
            raise KeyboardInterrupt  # the user's Ctrl-C, after three sweeps

    try:
        watch(store, 0.01, echo)
    except KeyboardInterrupt:
        pass
    assert lines == [f"sweep failed: {store.path} is damaged (database disk image is malformed): restore it "
                     f"from a backup, or move it aside (with its -wal and -shm files) to start a new store"] * 3
