"""report.html: the attempts table with why each attempt was chosen, the metric chart, and the
training curves chart when the attempts left curves (a real store, real matplotlib)."""

from __future__ import annotations

import base64
import io
import re
import time
from pathlib import Path

import pytest
from matplotlib.image import imread

from jobs.plot import _curve_series, curves_plot_png
from jobs.report import render_report, write_report
from jobs.store import RunStore

REASON = 'val_loss < loss & rising at epoch 4 → add <Dropout(0.3)> "before" the output'


def curve(epochs: int, *, val: bool = True, start: float = 0.5, rate: float = 0.08, steps: int = 9) -> dict:
    history = []
    for e in range(1, epochs + 1):
        entry = {"epoch": e, "loss": round(1.2 / e, 4), "accuracy": round(min(start + rate * e, 1.0), 4)}
        if val:
            entry.update(val_loss=round(1.3 / e + 0.02 * e, 4), val_accuracy=round(min(start - 0.03 + rate * e, 1.0), 4))
        history.append(entry)
    return {"epochs": epochs, "steps": steps, "history": history}


def make_run(tmp_path: Path, attempts: list[dict], metric: str = "accuracy", best: int | None = None) -> tuple[RunStore, int]:
    store = RunStore.open()
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    run_id = store.create_run(
        model_path=str(tmp_path / "ann.py"), model_name="ann.py", model_sha256="0" * 64, kind="ann",
        framework="keras", metric=metric, mode="max", threshold=0.9, strategy="diagnose", runtime="local",
        run_dir=str(run_dir), status="below_threshold", best_attempt=best, finished_at=time.time(),
        stop_reason="attempt budget spent (3)",
    )
    for i, fields in enumerate(attempts, start=1):
        n = store.add_attempt(run_id, source_sha256=str(i), config_key=str(i), dir=str(run_dir / f"attempt-{i}"))
        store.update_attempt(run_id, n, **{"status": "ok", "seconds": 3.0 * i, **fields})
    return store, run_id


def images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


@pytest.fixture
def curved_run(tmp_path, pushtune_home):
    return make_run(tmp_path, [
        {"metric_value": 0.62, "curve": curve(2)},
        {"metric_value": 0.81, "tweak": "double epochs 2 → 4 (line 27)", "tweak_name": "double_epochs",
         "reason": "loss still falling after 2 epochs (18 optimizer steps in all)", "parent": 1,
         "warm_from": 1, "warm_epoch": 2, "curve": curve(4)},
        {"metric_value": 0.86, "tweak": "add Dropout(0.3) before the output layer (line 31)", "parent": 2,
         "reason": REASON, "curve": curve(4, start=0.55, rate=0.085)},
        {"status": "failed", "error": "script exited with code 1", "reason": "try a <wider> layer",
         "curve": {"epochs": 4, "steps": 9, "history": [{"epoch": 1, "loss": None, "accuracy": 0.1, "val_loss": None, "val_accuracy": 0.1}]}},
    ], best=3)


def test_a_report_with_curves_draws_them_and_says_why(curved_run):
    store, run_id = curved_run
    path = write_report(store, run_id)
    page = path.read_text(encoding="utf-8")

    pngs = images(page)
    assert len(pngs) == 2 and all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in pngs)
    assert "<h2>Training curves</h2>" in page
    width = imread(io.BytesIO(pngs[1]), format="png").shape[1]
    assert width > imread(io.BytesIO(pngs[0]), format="png").shape[1]  # two panels, side by side

    assert "<th>why</th>" in page
    assert ('val_loss &lt; loss &amp; rising at epoch 4 → add &lt;Dropout(0.3)&gt; '
            '&quot;before&quot; the output') in page
    assert "<Dropout" not in page and "<wider>" not in page
    assert "loss still falling after 2 epochs (18 optimizer steps in all)" in page
    assert "warm-started from attempt 1 at epoch 2" in page
    rows = re.findall(r"<tr class=\"[a-z]*\">.*?</tr>", page)
    assert len(rows) == 4 and 'class="best"' in rows[2] and "warm-started" in rows[1]
    assert "warm-started" not in rows[0] + rows[2] + rows[3]
    assert '<td class="why"></td>' in rows[0]  # the pushed file needs no reason


def test_a_report_without_curves_has_no_curve_chart_and_no_why_column(tmp_path, pushtune_home):
    store, run_id = make_run(tmp_path, [
        {"metric_value": 0.91},
        {"metric_value": 0.95, "tweak": "C ×10: LogisticRegression 0.01 → 0.1 (line 30)"},
    ], best=2)
    page = render_report(store, run_id)
    assert len(images(page)) == 1  # the metric per attempt only
    assert "Training curves" not in page and "<th>why</th>" not in page and "warm-started" not in page


def test_the_curves_chart_falls_back_to_the_train_metric_and_to_loss_alone():
    no_val = [{"n": 1, "curve": curve(3, val=False)}, {"n": 2, "curve": curve(5, val=False)}]
    assert curves_plot_png(no_val, "accuracy", best=2).startswith(b"\x89PNG")
    loss_only = [{"n": 1, "curve": {"epochs": 2, "history": [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}]}}]
    one_panel = curves_plot_png(loss_only, "f1", best=1)
    two_panels = curves_plot_png(no_val, "accuracy", best=2)
    assert imread(io.BytesIO(one_panel), format="png").shape[1] < imread(io.BytesIO(two_panels), format="png").shape[1]
    diverged = [{"n": 1, "curve": {"history": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 1e9}, {"epoch": 3, "loss": None}]}},
                {"n": 2, "curve": {"history": [{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.5}]}}]
    assert curves_plot_png(diverged, "accuracy", best=2).startswith(b"\x89PNG")
    assert curves_plot_png([{"n": 1, "curve": None}, {"n": 2}], "accuracy") is None
    assert curves_plot_png([{"n": 1, "curve": {"history": [{"epoch": "x"}, "junk", {"epoch": 1, "loss": "nan?"}]}}],
                           "accuracy") is None


def test_a_warm_started_curve_is_drawn_from_where_it_took_over():
    warm = {"n": 2, "warm_from": 1, "warm_epoch": 2, "curve": curve(4)}
    assert _curve_series(warm, "loss") == ([2, 3, 4], [0.6, 0.4, 0.3])
    assert _curve_series({**warm, "warm_from": None}, "loss")[0] == [1, 2, 3, 4]


def test_a_winner_that_only_changed_parameters_lists_them(tmp_path, pushtune_home):
    store, run_id = make_run(tmp_path, [
        {"metric_value": 0.5}, {"metric_value": 0.6, "tweak": "set epochs 4 → 8 (parameter)",
                                "tweaks": ["set epochs 4 → 8 (parameter)"], "params": {"epochs": 8}},
    ], best=2)
    page = render_report(store, run_id)
    assert "<li>set epochs 4 → 8 (parameter)</li>" in page and "as pushed won" not in page


def test_an_odd_curve_costs_the_chart_not_the_report(tmp_path, pushtune_home):
    store, run_id = make_run(tmp_path, [{"metric_value": 0.5, "curve": {"history": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": [1, 2]}]}}], best=1)
    page = render_report(store, run_id)
    assert "Run 1: ann.py" in page


def test_the_metric_name_is_escaped_everywhere(tmp_path, pushtune_home):
    metric = '<img src=x onerror="alert(1)">'
    store, run_id = make_run(tmp_path, [{"metric_value": 0.5}, {"metric_value": 0.95}], metric=metric, best=2)
    page = render_report(store, run_id)
    assert "<img src=x" not in page
    escaped = "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"
    assert f"<th>{escaped}</th>" in page and f"Best: attempt 2, {escaped} 0.9500" in page
