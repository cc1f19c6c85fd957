"""Text from scripts, files and options that looks like something else: Rich markup, bad bytes,
limits Docker refuses. Real runs of tiny scikit-learn scripts through the CLI."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from jobs.store.run_store import RunStore

# A supported model (a scikit-learn estimator) whose report is whatever REPORT writes.
SCRIPT = textwrap.dedent("""\
    import json, os
    from sklearn.linear_model import LogisticRegression

    _ = LogisticRegression()
    out = os.environ["PUSHTUNE_OUTPUT"]
    REPORT
""")


def script(tmp_path: Path, report: str, name: str = "model.py") -> Path:
    path = tmp_path / name
    path.write_text(SCRIPT.replace("REPORT", report))
    return path


def statuses(home: Path) -> list[str]:
    return [r["status"] for r in RunStore.open(home / "pushtune.db").list_runs()]


def assert_one_line_error(done, fragment: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("pushtune: error: ") and fragment in line


def test_a_metric_file_holding_markup_fails_its_attempt_only(tmp_path, cli, pushtune_home):
    model = script(tmp_path, 'open(os.path.join(out, "accuracy.txt"), "w").write("[/oops] :smile:")')

    ran = cli("run", model, "--runtime", "local", "--max-attempts", "2")

    assert ran.returncode == 1, ran.stderr  # failed: not "interrupted"
    assert "[/oops] :smile:" in ran.stderr and "internal error" not in ran.stderr
    assert statuses(pushtune_home) == ["failed"]
    assert len(RunStore.open().attempts(1)) == 1  # the file as pushed reported no metric: no tweak fixes that
    assert "the file as pushed reported no usable accuracy" in RunStore.open().get_run(1)["stop_reason"]
    for args in (("show", "1"), ("runs",)):
        shown = cli(*args)
        assert shown.returncode == 0, shown.stderr
    assert "[/oops] :smile:" in cli("show", "1").stdout


def test_a_metric_named_like_markup_is_gated_and_shown_as_is(tmp_path, cli, pushtune_home):
    model = script(tmp_path, 'json.dump({"[/x]": 0.95}, open(os.path.join(out, "metrics.json"), "w"))',
                   name="[bold]model.py")

    ran = cli("run", model, "--runtime", "local", "--metric", "[/x]")

    assert ran.returncode == 0, ran.stderr
    assert statuses(pushtune_home) == ["passed"]
    assert "attempt 1: [/x] 0.9500" in ran.stderr
    assert "passed: best [/x] 0.9500" in ran.stdout and "run 1: [bold]model.py" in ran.stdout
    shown = cli("show", "1")
    assert shown.returncode == 0 and "[/x]" in shown.stdout, shown.stderr
    listed = cli("runs")
    assert listed.returncode == 0 and "[bold]model.py" in listed.stdout, listed.stderr

    emoji = cli("run", script(tmp_path, 'json.dump({":smile:": 1}, open(os.path.join(out, "metrics.json"), "w"))'),
                "--runtime", "local", "--metric", ":smile:", "--threshold", "0.5")
    assert emoji.returncode == 0, emoji.stderr
    assert "attempt 1: :smile: 1.0000" in emoji.stderr and "best :smile: 1.0000" in emoji.stdout


def test_a_space_file_that_is_not_utf8_is_one_line(tmp_path, cli, pushtune_home):
    space = tmp_path / "space.json"
    space.write_bytes(b'{"C": [0.1, 1]}\xff\xfe')
    model = script(tmp_path, 'json.dump({"accuracy": 1}, open(os.path.join(out, "metrics.json"), "w"))')

    done = cli("run", model, "--runtime", "local", "--strategy", "grid", "--space", space)

    assert_one_line_error(done, "--space")
    assert "not UTF-8" in done.stderr
    assert not (pushtune_home / "pushtune.db").exists() or statuses(pushtune_home) == []


def test_docker_limits_are_checked_before_a_run_starts(tmp_path, cli, pushtune_home):
    model = script(tmp_path, 'json.dump({"accuracy": 1}, open(os.path.join(out, "metrics.json"), "w"))')
    for option, value, fragment in [("--cpus", "0.0001", "--cpus 0.0001"), ("--cpus", "nan", "--cpus nan"),
                                    ("--cpus", "0", "--cpus 0"), ("--memory", "lots", "--memory 'lots'"),
                                    ("--memory", "1k", "--memory '1k'")]:
        assert_one_line_error(cli("run", model, "--runtime", "local", option, value), fragment)
    assert not (pushtune_home / "pushtune.db").exists() or statuses(pushtune_home) == []
    assert json.loads(cli("runs", "--json").stdout) == []
