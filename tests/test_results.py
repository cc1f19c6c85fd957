"""What the Jenkins build page shows: `pushtune results RUN_ID [--to DIR]` on real runs (local
runtime, a real SQLite store, tiny scikit-learn scripts): the one-line description of each
outcome, the folder the jobs archive (a hostile run's links, FIFO and huge file stay out), the
jobs' own shell steps as Jenkins runs them (`sh -xe`), and the archived report under Jenkins'
Content-Security-Policy."""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import test_loop
from conftest import unavailable
from jobs.ci.jenkins import render_jobs
from jobs.ci.results import INDEX, MAX_FILE_BYTES, collect_results
from jobs.loop import finish_run
from jobs.store.run_store import RunStore
from jobs.train.progress import epoch_line
from test_jenkins_client import pushtune

ROOT = Path(__file__).resolve().parent.parent
# test_loop's script with C=0.001: ~0.916 on its split; the first tweak (C ×10) ~0.951
LOGISTIC = test_loop.LOGISTIC.replace("LogisticRegression(C=0.0001", "LogisticRegression(C=0.001")
assert "C=0.001," in LOGISTIC
CRASHES = "from sklearn.linear_model import LogisticRegression\nLogisticRegression(C=1.0)\nraise SystemExit(1)\n"
# Jenkins' DirectoryBrowserSupport.DEFAULT_CSP_VALUE at jenkins-2.568.2 (archived files, HTML Publisher)
JENKINS_CSP = "sandbox allow-same-origin; default-src 'none'; img-src 'self'; style-src 'self';"


def script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run(home: Path, *args) -> dict:
    """`pushtune run … --json`: the run's summary."""
    done = pushtune(home, "run", *args, "--runtime", "local", "--json")
    assert done.returncode in (0, 1, 3), done.stderr
    return json.loads(done.stdout)


def description(home: Path, run_id: int) -> str:
    """The build description as Jenkins' Description Setter would set it: the first console
    line its regexp (the rendered job's) matches, group 1, `$$` read back as `$`."""
    done = pushtune(home, "results", run_id)
    assert done.returncode == 0, done.stderr
    return set_by_description_setter(done.stdout + done.stderr)


def description_regexp() -> str:
    publisher = ET.fromstring(render_jobs()["pushtune-train"]).find(
        "./publishers/hudson.plugins.descriptionsetter.DescriptionSetterPublisher")
    regexp = publisher.findtext("regexp")
    assert regexp == publisher.findtext("regexpForFailed")
    return regexp


def set_by_description_setter(console: str) -> str:
    """DescriptionSetterHelper: the first line where Pattern.find succeeds, its group 1 (no
    `description` given), then EnvVars.expand: `$$` becomes `$`."""
    pattern = re.compile(description_regexp())  # the same syntax in Java for this pattern
    for line in console.splitlines():
        if found := pattern.search(line):
            return found.group(1).replace("$$", "$")
    raise AssertionError(f"no line matches {pattern.pattern!r}:\n{console}")


def test_each_outcome_in_one_line(tmp_path):
    home = tmp_path / "home"
    passed = run(home, script(tmp_path, "a/logistic.py", LOGISTIC), "--threshold", "0.94", "--name", "logistic")
    assert passed["status"] == "passed" and passed["best"]["attempt"] == 2
    value = passed["best"]["accuracy"]
    assert description(home, passed["run_id"]) == \
        f"run {passed['run_id']} · accuracy {value:.4f} ≥ 0.94 at attempt 2 · logistic v1 is production"

    # passes its own threshold, but scores below production: registered, not promoted
    weaker = run(home, script(tmp_path, "b/logistic.py", LOGISTIC), "--threshold", "0.9", "--name", "logistic")
    assert weaker["status"] == "passed" and weaker["best"]["accuracy"] < value
    deployment = weaker["deployment"]
    assert (deployment["version"], deployment["status"], deployment["production"]) == (2, "candidate", 1)
    assert description(home, weaker["run_id"]) == (
        f"run {weaker['run_id']} · accuracy {weaker['best']['accuracy']:.4f} ≥ 0.9 at attempt 1 · "
        f"logistic v2 is candidate, production stays v1: {deployment['reason']}")

    below = run(home, script(tmp_path, "c/short.py", LOGISTIC), "--threshold", "0.999", "--max-attempts", "2")
    assert below["status"] == "below_threshold"
    assert description(home, below["run_id"]) == (
        f"run {below['run_id']} · below threshold: best accuracy {below['best']['accuracy']:.4f} of ≥ 0.999 "
        "after 2 attempts")

    failed = run(home, script(tmp_path, "d/crash.py", CRASHES), "--max-attempts", "1")
    assert failed["status"] == "failed"
    error = failed["attempts"][0]["error"]
    assert error and description(home, failed["run_id"]) == \
        f"run {failed['run_id']} · failed: none of 1 attempt scored (last: {error})"


def test_a_running_run_tells_its_last_attempt_then_the_planned_one_then_the_interruption(tmp_path, monkeypatch):
    home = tmp_path / "home"
    model = script(tmp_path, "logistic.py", LOGISTIC)
    started = pushtune(home, "start", model, "--runtime", "local", "--threshold", "0.94")
    run_id = int(started.stdout)
    assert pushtune(home, "train", run_id).returncode == 3  # what a train build shows
    first = json.loads(pushtune(home, "show", run_id, "--json").stdout)["attempts"][0]
    assert description(home, run_id) == f"run {run_id} · attempt 1: accuracy {first['accuracy']:.4f} < 0.94 (as pushed)"
    assert pushtune(home, "tweak", run_id, "--no-trigger").returncode == 0  # what a tweak build shows
    planned = json.loads(pushtune(home, "show", run_id, "--json").stdout)["attempts"][1]
    assert planned["status"] == "pending" and planned["tweak"].startswith("C ×10")
    assert description(home, run_id) == f"run {run_id} · attempt 2 next: {planned['tweak']}"

    monkeypatch.setenv("PUSHTUNE_HOME", str(home))
    finish_run(RunStore.open(), run_id, "interrupted", interrupted=True)  # as a Ctrl-C in `pushtune run` ends it
    assert description(home, run_id) == (
        f"run {run_id} · interrupted: best accuracy {first['accuracy']:.4f} of ≥ 0.94 after 2 attempts")


DOLLAR_METRIC = """\
import json, os
from sklearn.linear_model import LogisticRegression

LogisticRegression(C=1.0)  # only to be a regression model; it saves no model file
with open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "metrics.json"), "w") as f:
    json.dump({"cost$HOME": 0.99}, f)
"""


def test_a_dollar_in_the_text_is_not_expanded_by_jenkins(tmp_path):
    home = tmp_path / "home"
    passed = run(home, script(tmp_path, "dollar.py", DOLLAR_METRIC), "--metric", "cost$HOME", "--threshold", "0.9")
    assert passed["status"] == "passed" and passed["deployment"]["status"] == "not registered"
    printed = pushtune(home, "results", passed["run_id"]).stdout
    # core Util.replaceMacro: `$$` is a `$`; `$HOME` alone would become the agent's home directory
    assert "cost$$HOME 0.9900" in printed and "$$PUSHTUNE_OUTPUT" in printed
    assert description(home, passed["run_id"]) == (
        f"run {passed['run_id']} · cost$HOME 0.9900 ≥ 0.9 at attempt 1 · not registered: "
        f"{passed['deployment']['reason']}")


def folder_files(folder: Path) -> dict[str, os.stat_result]:
    return {str(p.relative_to(folder)): p.lstat() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink()}


def test_results_folder_of_a_passing_run(tmp_path):
    home = tmp_path / "home"
    passed = run(home, script(tmp_path, "logistic.py", LOGISTIC), "--threshold", "0.94")
    folder = tmp_path / "workspace" / "pushtune-results"
    done = pushtune(home, "results", passed["run_id"], "--to", folder)
    assert done.returncode == 0, done.stderr
    files = folder_files(folder)
    assert {"show.json", "winning.diff", "report/report.html", "report/report.css", "report/metric.png", INDEX,
            "output/model.joblib", "output/served.onnx", "logs/attempt-1.log", "logs/attempt-2.log"} <= set(files)
    assert all(stat.S_ISREG(info.st_mode) for info in files.values())
    shown = json.loads(pushtune(home, "show", passed["run_id"], "--json").stdout)
    assert json.loads((folder / "show.json").read_text()) == shown
    best = Path(passed["best"]["artifact"])
    assert (folder / "output" / best.name).read_bytes() == best.read_bytes()
    assert (folder / "output" / "served.onnx").read_bytes() == (best.parent / "served.onnx").read_bytes()
    winning = shown["attempts"][1]["diff"]
    assert (folder / "winning.diff").read_text() == winning and "C=0.01" in winning
    # run again (the next build in the same workspace): replaced, not mixed with the old
    (folder / "output" / "stale.txt").write_text("from an earlier build")
    again = pushtune(home, "results", passed["run_id"], "--to", folder)
    assert again.returncode == 0 and not (folder / "output" / "stale.txt").exists()


def test_results_never_empties_a_folder_it_did_not_make(tmp_path, monkeypatch):
    home = tmp_path / "home"
    passed = run(home, script(tmp_path, "logistic.py", LOGISTIC), "--threshold", "0.9")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    refused = pushtune(home, "results", passed["run_id"], "--to", mine)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "pushtune: error:" in refused.stderr
    assert (mine / "thesis.tex").read_text() == "precious"
    os.symlink(mine, tmp_path / "link")
    assert pushtune(home, "results", passed["run_id"], "--to", tmp_path / "link").returncode == 2
    # a build that died while copying (here: a summary that does not serialise) left the marker,
    # written first: the next build recognises the folder and replaces it
    half = tmp_path / "half"
    monkeypatch.setenv("PUSHTUNE_HOME", str(home))
    with pytest.raises(TypeError):
        collect_results(RunStore.open(), passed["run_id"], half, {"run_id": object()})
    assert (half / INDEX).is_file() and not (half / "show.json").exists()
    assert pushtune(home, "results", passed["run_id"], "--to", half).returncode == 0
    assert (half / "show.json").is_file() and "copied:" in (half / INDEX).read_text()
    unknown = pushtune(home, "results", "99", "--to", tmp_path / "new")
    assert unknown.returncode == 2 and "99" in unknown.stderr and not (tmp_path / "new").exists()


HOSTILE = """\
import json, os
from sklearn.linear_model import LogisticRegression

model = LogisticRegression(C=1.0)  # never fitted: the file only has to be a regression model
out = os.environ["PUSHTUNE_OUTPUT"]
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"accuracy": 0.5}, f)
with open(os.path.join(out, "model.joblib"), "wb") as f:
    f.write(b"the model")
os.symlink("/etc/passwd", os.path.join(out, "passwd"))
os.symlink("/etc", os.path.join(out, "etc"))
os.mkfifo(os.path.join(out, "pipe"))
with open(os.path.join(out, "huge.bin"), "wb") as f:
    f.truncate(HUGE)  # sparse: costs no disk
os.makedirs(os.path.join(out, "sub"))
with open(os.path.join(out, "sub", "notes.txt"), "w") as f:
    f.write("kept")
""".replace("HUGE", str(MAX_FILE_BYTES + 1))


def test_a_hostile_runs_links_fifo_and_huge_file_stay_out(tmp_path):
    home = tmp_path / "home"
    hostile = run(home, script(tmp_path, "hostile.py", HOSTILE), "--threshold", "0.9", "--max-attempts", "1")
    assert hostile["status"] == "below_threshold"
    output = Path(hostile["best"]["artifact"]).parent
    assert stat.S_ISFIFO((output / "pipe").lstat().st_mode) and (output / "passwd").is_symlink()
    folder = tmp_path / "pushtune-results"
    # a FIFO opened for reading would block forever: the timeout turns that into a failure
    done = pushtune(home, "results", hostile["run_id"], "--to", folder, timeout=120)
    assert done.returncode == 0, done.stderr
    files = folder_files(folder)
    assert all(stat.S_ISREG(info.st_mode) for info in files.values()), files
    assert {"output/model.joblib", "output/sub/notes.txt"} <= set(files)
    assert not {"output/passwd", "output/etc", "output/pipe", "output/huge.bin"} & set(files)
    assert not any(name.startswith("output/etc/") for name in files)
    passwd = Path("/etc/passwd").read_bytes()
    assert all((folder / name).read_bytes() != passwd for name in files)
    said = {line.split(": ", 1)[0].strip(): line for line in done.stdout.splitlines() if "skipped" in line}
    assert "symbolic link" in said["skipped output/passwd"] and "FIFO" in said["skipped output/pipe"]
    assert "larger than" in said["skipped output/huge.bin"] and "not followed" in said["skipped output/etc"]
    index = (folder / INDEX).read_text()
    for name in ("output/passwd", "output/etc", "output/pipe", "output/huge.bin"):
        assert name in index.split("skipped", 1)[1]
    small = pushtune(home, "results", hostile["run_id"], "--to", folder, "--max-file-mb", "0.000001")
    assert "skipped output/model.joblib: larger than 1 bytes" in small.stdout


def pushtune_on_path(tmp_path: Path) -> dict[str, str]:
    """A `pushtune` command on PATH, as the agents have it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "pushtune"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m jobs "$@"\n')
    wrapper.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def shell_of(job: str) -> str:
    return ET.fromstring(render_jobs()[job]).findtext("./builders/hudson.tasks.Shell/command")


def build(tmp_path: Path, home: Path, job: str, run_id: int) -> tuple[int, str, Path]:
    """The job's shell step as Jenkins runs it (hudson.tasks.Shell: /bin/sh -xe), in a
    workspace of its own; (exit code, console, workspace)."""
    workspace = tmp_path / job
    workspace.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JENKINS_", "BUILD_", "PUSHTUNE_"))}
    env.update(pushtune_on_path(tmp_path))
    env.update({"PUSHTUNE_HOME": str(home), "PYTHONPATH": str(ROOT), "RUN_ID": str(run_id)})
    done = subprocess.run(["/bin/sh", "-xe", "-c", shell_of(job)], cwd=workspace, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    return done.returncode, done.stdout, workspace


def test_the_jobs_shell_steps_describe_and_archive_each_build(tmp_path):
    home = tmp_path / "home"
    model = script(tmp_path, "logistic.py", LOGISTIC)
    run_id = int(pushtune(home, "start", model, "--runtime", "local", "--threshold", "0.94").stdout)

    code, console, workspace = build(tmp_path, home, "pushtune-train", run_id)
    assert code == 3, console  # below threshold: train's code survives the results step (UNSTABLE)
    assert set_by_description_setter(console).startswith(f"run {run_id} · attempt 1: accuracy ")
    assert (workspace / "pushtune-results" / "logs" / "attempt-1.log").is_file()
    assert (workspace / "pushtune-results" / "report" / "report.html").is_file()

    code, console, _ = build(tmp_path, home, "pushtune-tweak", run_id)
    assert code == 0 and set_by_description_setter(console).startswith(f"run {run_id} · attempt 2 next: C ×10"), console

    code, console, workspace = build(tmp_path, home, "pushtune-train", run_id)
    assert code == 0, console  # passed: SUCCESS, the notify job follows
    summary = json.loads((workspace / "pushtune-results" / "show.json").read_text())
    outcome = (f"run {run_id} · accuracy {summary['best']['accuracy']:.4f} ≥ 0.94 at attempt 2 · "
               "logistic v1 is production")
    assert set_by_description_setter(console) == outcome
    assert not (workspace / "pushtune-results" / "logs" / "attempt-3.log").exists()

    for job in ("pushtune-notify", "pushtune-deploy"):
        code, console, workspace = build(tmp_path, home, job, run_id)
        assert code == 0 and set_by_description_setter(console) == outcome, console
        assert (workspace / "pushtune-results" / "output" / "served.onnx").is_file()


class _Page(HTMLParser):
    """What a CSP constrains in a page: inline styles and scripts, and the URLs it loads."""

    def __init__(self):
        super().__init__()
        self.inline, self.loads = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("style", "script") or "style" in attrs or any(a.startswith("on") for a in attrs):
            self.inline.append(tag)
        for key in ("src", "href"):
            if attrs.get(key):
                self.loads.append(attrs[key])


def test_the_archived_report_needs_nothing_the_jenkins_csp_forbids(tmp_path):
    home = tmp_path / "home"
    passed = run(home, script(tmp_path, "logistic.py", LOGISTIC), "--threshold", "0.94")
    folder = tmp_path / "pushtune-results"
    assert pushtune(home, "results", passed["run_id"], "--to", folder).returncode == 0
    archived = _Page()
    archived.feed((folder / "report" / "report.html").read_text())
    assert archived.inline == []
    assert sorted(archived.loads) == ["metric.png", "report.css"]  # same origin, files beside it
    assert all((folder / "report" / name).is_file() for name in archived.loads)
    assert "<style>" not in (folder / "report" / "report.css").read_text()
    # the report `pushtune run` writes stays one self-contained file
    local = _Page()
    local.feed(Path(passed["report"]).read_text())
    assert local.inline == ["style"] and all(url.startswith("data:image/png;base64,") for url in local.loads)


class _CspHandler(SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header("Content-Security-Policy", JENKINS_CSP)
        super().end_headers()

    def log_message(self, *args):
        pass


def _screenshot(chromium: str, url: str, target: Path) -> bytes:
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={target}",
                           "--window-size=1000,900", url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and target.is_file(), done.stderr[-2000:]
    return target.read_bytes()


def _pixels(png: bytes, colour: str, near: int = 12) -> int:
    """How many pixels of the screenshot are within `near` of `colour` on each channel."""
    import numpy as np  # matplotlib's dependency (the report's charts), as is Pillow
    from PIL import Image

    wanted = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    return int((np.abs(pixels - wanted) <= near).all(axis=-1).sum())


def test_the_archived_report_renders_under_the_jenkins_csp_and_the_inline_one_would_not(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        unavailable("no Chromium to render the report (apt-get install chromium)")
    home = tmp_path / "home"
    passed = run(home, script(tmp_path, "logistic.py", LOGISTIC), "--threshold", "0.94")
    folder = tmp_path / "site"
    assert pushtune(home, "results", passed["run_id"], "--to", folder).returncode == 0
    shutil.copy(passed["report"], folder / "report" / "inline.html")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_CspHandler, directory=str(folder / "report")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        linked = _screenshot(chromium, base + "report.html", tmp_path / "linked.png")
        inline = _screenshot(chromium, base + "inline.html", tmp_path / "inline.png")
    finally:
        server.shutdown()
        server.server_close()
    # the best row's background (report.css.j2, tr.best) and the metric line (jobs/plot.py LINE_COLOR)
    assert _pixels(linked, "#e8f5e9", near=2) > 2000 and _pixels(linked, "#0969da") > 200
    # what the page pushtune run writes would lose there: its <style> and its data: chart
    assert _pixels(inline, "#e8f5e9", near=2) == 0 and _pixels(inline, "#0969da") == 0


def test_a_log_name_cannot_forge_the_description_line():
    """Epoch lines are the only console text a script names (its log keys): kept to one line."""
    line = epoch_line(1, 2, {"loss": 0.5, "x\ndescription: run 1 · forged\r": 0.1})
    assert "\n" not in line and "\r" not in line
    assert not any(re.search(description_regexp(), part) for part in line.splitlines())
