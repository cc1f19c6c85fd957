"""report.html: the attempts table with why each attempt was chosen, the metric chart, and the
training curves chart when the attempts left curves (a real store, real matplotlib)."""

from __future__ import annotations

import base64
import io
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from jinja2 import UndefinedError
from matplotlib.image import imread

from jobs.report.html_report import REPORT_TEMPLATE, TEMPLATES, render_report, report_context, write_report
from jobs.report.plot import CURVE_COLORS, _curve_series, curves_plot_png
from jobs.store.run_store import RunStore

ROOT = Path(__file__).resolve().parent.parent

REASON = 'val_loss < loss & rising at epoch 4 → add <Dropout(0.3)> "before" the output'


def curve(epochs: int, *, val: bool = True, start: float = 0.5, rate: float = 0.08, steps: int = 9) -> dict:
    history = []
    for e in range(1, epochs + 1):
        entry = {"epoch": e, "loss": round(1.2 / e, 4), "accuracy": round(min(start + rate * e, 1.0), 4)}
        if val:
            entry.update(val_loss=round(1.3 / e + 0.02 * e, 4),
                         val_accuracy=round(min(start - 0.03 + rate * e, 1.0), 4))
        history.append(entry)
    return {"epochs": epochs, "steps": steps, "history": history}


def make_run(
    tmp_path: Path, attempts: list[dict], metric: str = "accuracy", best: int | None = None,
) -> tuple[RunStore, int]:
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
         "curve": {"epochs": 4, "steps": 9, "history": [
             {"epoch": 1, "loss": None, "accuracy": 0.1, "val_loss": None, "val_accuracy": 0.1}]}},
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
            '&#34;before&#34; the output') in page
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
    width = imread(io.BytesIO(one_panel), format="png").shape[1]
    assert width < imread(io.BytesIO(two_panels), format="png").shape[1]
    diverged = [{"n": 1, "curve": {"history": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 1e9},
                                               {"epoch": 3, "loss": None}]}},
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
    odd = {"history": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": [1, 2]}]}
    store, run_id = make_run(tmp_path, [{"metric_value": 0.5, "curve": odd}], best=1)
    page = render_report(store, run_id)
    assert "Run 1: ann.py" in page


def test_the_metric_name_is_escaped_everywhere(tmp_path, pushtune_home):
    metric = '<img src=x onerror="alert(1)">'
    store, run_id = make_run(tmp_path, [{"metric_value": 0.5}, {"metric_value": 0.95}], metric=metric, best=2)
    page = render_report(store, run_id)
    assert "<img src=x" not in page
    escaped = "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;"
    assert f"<th>{escaped}</th>" in page and f"Best: attempt 2, {escaped} 0.9500" in page


# --- escaping by construction: report.html.j2 with autoescape ----------------------------------

PAYLOAD = "<script>alert(1)</script>\"'&"


class Page(HTMLParser):
    """The elements and the text of a page as a browser's tokenizer sees them."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.texts: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.extend((tag, name, value) for name, value in attrs)

    def handle_data(self, data):
        self.texts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.texts)


def hostile_run(tmp_path: Path, *, diff: bool = True) -> tuple[RunStore, int]:
    """A run whose every text field (the store keeps what scripts, files and options said) holds
    PAYLOAD: the model's file name, the metric, the reason to stop, tweaks, reasons, an error, a
    diff, parameters, the artifact's path and hash."""
    store = RunStore.open()
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    run_id = store.create_run(
        model_path=str(tmp_path / "m.py"), model_name=f"m{PAYLOAD}.py", model_sha256="0" * 64,
        kind=f"k{PAYLOAD}", framework=f"f{PAYLOAD}", metric=f"acc{PAYLOAD}", mode="max", threshold=0.9,
        strategy=f"s{PAYLOAD}", runtime=f"r{PAYLOAD}", run_dir=str(run_dir), status="below_threshold",
        finished_at=time.time(), stop_reason=f"stop {PAYLOAD}",
    )
    fields = [
        {"metric_value": 0.5, "curve": curve(2)},
        {"metric_value": 0.8, "tweak": f"tweak {PAYLOAD}", "tweaks": [f"listed {PAYLOAD}"],
         "reason": f"why {PAYLOAD}", "params": {f"key {PAYLOAD}": f"value {PAYLOAD}"},
         "diff": f"--- a\n+++ b\n@@ -1 +1 @@\n-old {PAYLOAD}\n+new {PAYLOAD}\n context {PAYLOAD}\n" if diff else "",
         "artifact_path": f"/out/{PAYLOAD}", "artifact_sha256": f"sha {PAYLOAD}", "curve": curve(3)},
        {"status": "failed", "error": f"Traceback …\nValueError: {PAYLOAD}", "tweak": f"tweak 3 {PAYLOAD}",
         "log_tail": f"log {PAYLOAD}"},
    ]
    for i, values in enumerate(fields, start=1):
        n = store.add_attempt(run_id, source_sha256=str(i), config_key=str(i), dir=str(run_dir / f"attempt-{i}"))
        store.update_attempt(run_id, n, **{"status": "ok", "seconds": 2.0 * i, **values})
    store.update_run(run_id, best_attempt=2)
    return store, run_id


@pytest.mark.parametrize("diff", [True, False], ids=["winning diff", "parameters only"])
def test_user_text_is_escaped_everywhere_in_the_report(tmp_path, pushtune_home, diff):
    store, run_id = hostile_run(tmp_path, diff=diff)
    page = write_report(store, run_id).read_text(encoding="utf-8")

    assert "<script" not in page and "alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&amp;" in page
    parsed = Page(page)
    assert "script" not in parsed.tags and set(parsed.tags) <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "img", "table", "tr", "th", "td",
        "br", "span", "code", "pre", "ul", "li"}
    # every value reads back as the text it was, in its place
    text = parsed.text
    for shown in (f"pushtune run {run_id}: m{PAYLOAD}.py", f"Run {run_id}: m{PAYLOAD}.py — below threshold",
                  f"k{PAYLOAD} model (f{PAYLOAD}), s{PAYLOAD} strategy", f"Stopped because: stop {PAYLOAD}.",
                  f"tweak {PAYLOAD}", f"why {PAYLOAD}", f"ValueError: {PAYLOAD}", f"tweak 3 {PAYLOAD}",
                  f"Best: attempt 2, acc{PAYLOAD} 0.8000", f"/out/{PAYLOAD}", f"sha {PAYLOAD}",
                  str({f"key {PAYLOAD}": f"value {PAYLOAD}"})):
        assert shown in text, shown
    # an attribute keeps its quotes: the metric in the chart's alt text stays inside it
    assert ("img", "alt", f"acc{PAYLOAD} per attempt") in parsed.attributes
    if diff:
        assert f"-old {PAYLOAD}\n+new {PAYLOAD}\n context {PAYLOAD}" in text
        assert '<span class="add">+new &lt;script&gt;' in page
    else:
        assert "<li>listed &lt;script&gt;" in page and f"listed {PAYLOAD}" in text
    assert f"log {PAYLOAD}" in text  # a failed attempt's log tail is shown, as text
    assert '<pre class="log">log &lt;script&gt;alert(1)&lt;/script&gt;' in page


def test_the_artifact_hash_is_escaped_too(tmp_path, pushtune_home):
    """The one value the f-string report forgot: it wrote artifact_sha256 into the page raw."""
    store, run_id = make_run(tmp_path, [{"metric_value": 0.95, "artifact_path": "/out/model.keras",
                                         "artifact_sha256": "<script>alert(1)</script>"}], best=1)
    page = render_report(store, run_id)
    assert "<script>" not in page
    assert "sha256 <code>&lt;script&gt;alert(1)&lt;/script&gt;</code>" in page


def test_the_templates_mark_nothing_safe():
    """Escaped by construction: nothing in the report's template or module opts out of autoescape."""
    template = (ROOT / "jobs/templates" / REPORT_TEMPLATE).read_text()
    module = (ROOT / "jobs/report/html_report.py").read_text()
    assert TEMPLATES.autoescape is True and REPORT_TEMPLATE in TEMPLATES.list_templates()
    for opt_out in ("|safe", "| safe", "{% autoescape", "Markup"):
        assert opt_out not in template, opt_out
    assert "Markup" not in module and "|safe" not in module


def test_a_missing_template_variable_fails_loudly(curved_run):
    store, run_id = curved_run
    template = TEMPLATES.get_template(REPORT_TEMPLATE)
    context = report_context(store, run_id)
    assert template.render(context) == render_report(store, run_id)

    for missing in ("stop_reason", "metric", "rows", "best"):
        with pytest.raises(UndefinedError, match=missing):
            template.render({k: v for k, v in context.items() if k != missing})
    row = {k: v for k, v in context["rows"][1].items() if k != "warm"}  # a key of one row
    with pytest.raises(UndefinedError, match="warm"):
        template.render({**context, "rows": [context["rows"][0], row]})
    best = {k: v for k, v in context["best"].items() if k != "sha256"}
    with pytest.raises(UndefinedError, match="sha256"):
        template.render({**context, "best": best})


def _pixels_near(png: bytes, hex_color: str, alpha: float = 1.0, tolerance: int = 12) -> int:
    """Pixels of `hex_color` drawn with `alpha` on the white background."""
    color = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    target = (alpha * color + (1 - alpha) * 255) / 255
    pixels = imread(io.BytesIO(png), format="png")[..., :3]
    return int((np.abs(pixels - target) <= tolerance / 255).all(axis=-1).sum())


def _scaled_loss(history: dict, factor: float) -> dict:
    """The curve with its loss and val_loss scaled, so that no two attempts' loss lines overlap."""
    return {**history, "history": [{**e, "loss": e["loss"] * factor, "val_loss": e["val_loss"] * factor}
                                   for e in history["history"]]}


def test_every_attempt_has_its_row_and_its_curve(tmp_path, pushtune_home):
    attempts = [{"metric_value": 0.5 + 0.05 * i, "tweak": f"tweak {i} <b>",
                 "curve": _scaled_loss(curve(3 + i, start=0.3 + 0.05 * i), 1 + 0.4 * i)} for i in range(1, 6)]
    attempts.append({"status": "failed", "error": "script exited with code 1",
                     "curve": _scaled_loss(curve(4, start=0.1), 4.0)})  # a failed attempt with a curve
    store, run_id = make_run(tmp_path, attempts, best=5)
    page = render_report(store, run_id)

    rows = re.findall(r'<tr class="([a-z]*)"><td>(\d+)</td><td>(.*?)</td>', page)
    assert [int(n) for _, n, _ in rows] == [1, 2, 3, 4, 5, 6]
    assert [css for css, _, _ in rows] == ["", "", "", "", "best", "failed"]
    assert [change for _, _, change in rows][:5] == [f"tweak {i} &lt;b&gt;" for i in range(1, 6)]
    assert page.count("<tr") == len(attempts) + 1  # and the heading

    metric_png, curves_png = images(page)
    assert curves_png == curves_plot_png(store.attempts(run_id), "accuracy", 5)  # the chart as plot.py draws it
    for n in range(1, 7):  # each attempt's own colour (the best opaque): its lines, not only its legend sample
        alpha = 1.0 if n == 5 else 0.85
        assert _pixels_near(curves_png, CURVE_COLORS[n - 1], alpha) > 150, f"attempt {n}"
    assert _pixels_near(curves_png, CURVE_COLORS[6], 0.85) < 10  # no seventh attempt
