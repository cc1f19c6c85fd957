"""A run's outcome is read once, and the report, the `--json` summary and the mail say the same
about it (a real store, real files)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jobs.loop import summarize
from jobs.report.html_report import report_context
from jobs.report.outcome import run_outcome
from jobs.store.run_store import RunStore
from notify.message import render_text
from notify.summary import load_summary


def notebook_run(tmp_path: Path) -> tuple[RunStore, int, Path]:
    """A finished notebook run whose one attempt saved model.joblib; and where its notebook goes back."""
    store = RunStore.open()
    run_dir = tmp_path / "run"
    output = run_dir / "attempt-1" / "output"
    output.mkdir(parents=True)
    run_id = store.create_run(
        model_path=str(tmp_path / "digits.ipynb"), model_name="digits.ipynb", model_sha256="0" * 64,
        kind="regression", framework="sklearn", metric="accuracy", mode="max", threshold=0.9,
        strategy="diagnose", runtime="local", run_dir=str(run_dir), status="passed", best_attempt=1,
        finished_at=time.time(), stop_reason="threshold met",
    )
    n = store.add_attempt(run_id, source_sha256="1", config_key="1", dir=str(run_dir / "attempt-1"))
    store.update_attempt(run_id, n, status="ok", metric_value=0.95, seconds=1.0,
                         artifact_path=str(output / "model.joblib"))
    return store, run_id, output / "digits.ipynb"


def said_about_the_notebook(store: RunStore, run_id: int) -> tuple[str | None, str, list[str]]:
    """What the summary, the report and the mail's text say about the handed-back notebook."""
    mail = render_text(load_summary(store, run_id))
    return (summarize(store, run_id)["best"]["notebook"],
            report_context(run_outcome(store, run_id))["best"]["notebook"],
            [line for line in mail.splitlines() if line.startswith("notebook:")])


def test_the_summary_the_report_and_the_mail_name_the_handed_back_notebook(tmp_path, pushtune_home):
    store, run_id, handed = notebook_run(tmp_path)
    handed.write_text("{}")
    assert run_outcome(store, run_id).notebook == str(handed)
    assert said_about_the_notebook(store, run_id) == (str(handed), str(handed), [f"notebook:       {handed}"])


@pytest.mark.parametrize("left", ["link", "nothing"])
def test_none_of_them_names_a_link_left_in_the_notebooks_place(tmp_path, pushtune_home, left):
    """A link the script left where the notebook goes back is not a handed-back notebook (the
    report used to name it while the summary and the mail did not)."""
    store, run_id, handed = notebook_run(tmp_path)
    if left == "link":
        elsewhere = tmp_path / "elsewhere.ipynb"
        elsewhere.write_text("{}")
        handed.symlink_to(elsewhere)
    assert run_outcome(store, run_id).notebook is None
    assert said_about_the_notebook(store, run_id) == (None, "", [])
