"""Notebooks end to end (issue 16): a pushed `.ipynb` (or a notebook export) runs as its code
cells' Python, is tweaked like a script, names cells in its tweaks and diffs, and is handed back
as an output-free notebook. Real notebooks (written with nbformat), real runs of `pushtune run`,
real git for the hook and the `changed` step."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from jobs.classify.notebook import code_of
from jobs.errors import UserError
from jobs.store.run_store import RunStore
from jobs.tune.tweaks import apply_tweak
from jobs.tune.tweaks.source import parse as tweaker_parse
from test_hook import bare, clone, finished_runs, wait_for  # noqa: F401 (bare: a fixture)
from test_jenkins_client import pushtune
from test_steps import LOGISTIC, NOT_A_MODEL, git

PYTHON_KERNEL = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
}
IMPORTS = """\
%matplotlib inline
!pip install scikit-learn
import json, os
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)"""
# C=0.001 scores ~0.916 on this split; C×10 (the first tweak) ~0.951 (as tests/test_steps.py's LOGISTIC)
TRAIN = """\
%%time
model = make_pipeline(StandardScaler(), LogisticRegression(C=0.001, max_iter=200))
model.fit(X_train, y_train)"""
REPORT = """\
import joblib
joblib.dump(model, os.path.join(os.environ["PUSHTUNE_OUTPUT"], "model.joblib"))
with open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "metrics.json"), "w") as f:
    json.dump({"accuracy": model.score(X_test, y_test)}, f)
print("accuracy:", model.score(X_test, y_test))"""


def code_cell(source: str, count: int | None = None, output: str | None = None):
    """A code cell as Jupyter saves it after a run: an execution count and an output."""
    outputs = [v4.new_output("stream", name="stdout", text=output)] if output else []
    return v4.new_code_cell(source, execution_count=count, outputs=outputs)


def logistic_notebook(train: str = TRAIN, *extra_cells):
    """Markdown, imports (a magic and an install line), markdown, a %%time training cell, the
    report: code cells at notebook positions 2, 4 and 5, with the outputs of a run."""
    return v4.new_notebook(cells=[
        v4.new_markdown_cell("# Breast cancer\n\nA logistic regression, strongly regularised."),
        code_cell(IMPORTS, 1, "Requirement already satisfied: scikit-learn\n"),
        v4.new_markdown_cell("## Training"),
        code_cell(train, 2, "CPU times: user 12 ms\n"),
        code_cell(REPORT, 3, "accuracy: 0.9160839160839161\n"),
        *extra_cells,
    ], metadata=PYTHON_KERNEL)


def write(nb, path: Path) -> Path:
    nbformat.write(nb, str(path))
    return path


def run_json(cli, model: Path, *args: str) -> dict:
    result = cli("run", model, "--runtime", "local", "--json", *args)
    assert result.returncode in (0, 3), result.stderr
    return json.loads(result.stdout)


def store_of(home: Path) -> RunStore:
    return RunStore.open(home / "pushtune.db")


def test_a_raw_notebook_with_magics_a_shell_line_and_a_time_cell_runs(tmp_path, cli, pushtune_home):
    shell_ran = tmp_path / "shell-ran"
    bash_ran = tmp_path / "bash-ran"
    nb = logistic_notebook(
        TRAIN,
        v4.new_code_cell(f"%%bash\ntouch {bash_ran}\n"),  # not Python: the cell is left out
        v4.new_code_cell(f"files = !ls\n!touch {shell_ran}\nmodel?"),  # IPython lines only
    )
    path = write(nb, tmp_path / "cancer.ipynb")

    summary = run_json(cli, path, "--threshold", "0.5")
    assert summary["status"] == "passed" and summary["kind"] == "regression"
    (attempt,) = summary["attempts"]
    assert 0.88 < attempt["accuracy"] < 0.95  # what the %%time cell's body trained

    run_dir = Path(summary["report"]).parent
    workdir = run_dir / "attempt-1"
    log = (workdir / "log.txt").read_text()
    head = log.splitlines()[:9]
    assert head[0].startswith("pushtune: the notebook cancer.ipynb runs as Python")
    assert "the runtime image already has the packages" in head[0]
    assert "pushtune:   cell 2, line 1: magic skipped (%matplotlib inline)" in head
    assert "pushtune:   cell 2, line 2: shell line skipped (!pip install scikit-learn)" in head
    assert "pushtune:   cell 4, line 1: %%time runs its body" in head
    assert "pushtune:   cell 6: %%bash cell left out (not Python)" in head
    assert "pushtune:   cell 7, line 1: shell line skipped (files = !ls)" in head
    assert any(line.startswith("pushtune:   cell 7, line 2: shell line skipped (!touch /") for line in head)
    assert "pushtune:   cell 7, line 3: help line skipped (model?)" in head
    assert "accuracy:" in log.splitlines()[-1]
    assert not shell_ran.exists() and not bash_ran.exists()

    # the run keeps the notebook as pushed, and the Python its code cells run
    assert nbformat.reads((run_dir / "pushed.ipynb").read_text(), as_version=4) == nbformat.read(str(path), 4)
    assert (run_dir / "pushed.py").read_text() == (workdir / "model.py").read_text() == code_of(path).source
    # the notebook as it ran is handed back, without outputs, next to the model
    handed = Path(summary["best"]["notebook"])
    assert handed == Path(summary["best"]["artifact"]).parent / "cancer.ipynb"
    assert handed.read_bytes() == (workdir / "model.ipynb").read_bytes()
    back = nbformat.read(str(handed), as_version=4)
    nbformat.validate(back)
    assert [c.source for c in back.cells] == [c.source for c in nb.cells]
    assert all(c.outputs == [] and c.execution_count is None for c in back.cells if c.cell_type == "code")
    assert (workdir / "diff.patch").read_text() == ""


def test_a_notebook_below_threshold_is_tuned_and_handed_back_with_the_tweak(tmp_path, cli, pushtune_home):
    nb = logistic_notebook()
    path = write(nb, tmp_path / "cancer.ipynb")

    summary = run_json(cli, path, "--threshold", "0.94")
    assert summary["status"] == "passed", summary
    first, second = summary["attempts"]
    assert first["accuracy"] < 0.94 <= second["accuracy"]
    # the tweak names the cell (the 4th of the notebook, markdown cells counted) and its line
    assert second["tweak"] == "C ×10: LogisticRegression 0.001 → 0.01 (cell 4, line 2)"
    assert summary["best"]["tweaks"] == [second["tweak"]]

    workdir = Path(summary["report"]).parent / "attempt-2"
    diff = (workdir / "diff.patch").read_text()
    assert diff.splitlines()[:3] == ["--- a/cancer.ipynb (cell 4)", "+++ b/cancer.ipynb (cell 4)", "@@ -1,3 +1,3 @@"]
    assert " %%time" in diff.splitlines()  # in the cell's own lines, its magic as written
    assert "+model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=200))" in diff

    back = nbformat.read(str(workdir / "model.ipynb"), as_version=4)
    nbformat.validate(back)
    assert [c.cell_type for c in back.cells] == [c.cell_type for c in nb.cells]
    assert [c.source for c in back.cells if c.cell_type == "markdown"] == \
        [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert all(c.outputs == [] and c.execution_count is None for c in back.cells if c.cell_type == "code")
    assert back.cells[3].source == TRAIN.replace("C=0.001", "C=0.01")
    assert back.cells[1].source == IMPORTS and back.cells[4].source == REPORT  # magics back as written
    assert [c.get("id") for c in back.cells] == [c.get("id") for c in nb.cells]
    # attempt 1 ran the notebook as pushed: its handed-back copy differs only by the outputs
    as_pushed = nbformat.read(str(workdir.parent / "attempt-1" / "model.ipynb"), as_version=4)
    assert [c.source for c in as_pushed.cells] == [c.source for c in nb.cells]

    # the winner goes back next to the model; the summary, `show --json`, the report and the mail say so
    handed = Path(summary["best"]["notebook"])
    assert handed.parent == Path(summary["best"]["artifact"]).parent and handed.name == "cancer.ipynb"
    assert handed.read_bytes() == (workdir / "model.ipynb").read_bytes()
    shown = json.loads(cli("show", summary["run_id"], "--json").stdout)
    assert shown["best"]["notebook"] == str(handed)
    report = Path(summary["report"]).read_text()
    assert "(cell 4, line 2)" in report and str(handed) in report and "a/cancer.ipynb (cell 4)" in report
    from notify.message import render_text
    from notify.summary import load_summary

    mail = render_text(load_summary(store_of(pushtune_home), summary["run_id"]))
    assert f"notebook:       {handed}" in mail and "(cell 4, line 2)" in mail
    assert "--- a/cancer.ipynb (cell 4)" in mail
    # `pushtune show` (the table of `pushtune run`, then each diff) too
    shown = cli("show", summary["run_id"], env={"COLUMNS": "200"}).stdout
    assert "(cell 4, line 2)" in shown and f"notebook: {handed}" in shown
    assert "--- a/cancer.ipynb (cell 4)" in shown


def test_an_nbconvert_export_with_magics_is_run_and_tweaked(tmp_path, cli, pushtune_home):
    body = ("model = make_pipeline(StandardScaler(), LogisticRegression(C=0.001, max_iter=200))\n"
            "model.fit(X_train, y_train)\n")
    script = textwrap.dedent(f"""\
        #!/usr/bin/env python
        # coding: utf-8

        # # Breast cancer

        # In[1]:


        %matplotlib inline
        get_ipython().system('pip install scikit-learn')
        import json, os
        from sklearn.datasets import load_breast_cancer
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X, y = load_breast_cancer(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)


        # In[2]:


        get_ipython().run_cell_magic('time', '', {body!r})


        # In[3]:


        with open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "metrics.json"), "w") as f:
            json.dump({{"accuracy": model.score(X_test, y_test)}}, f)
        """)
    path = tmp_path / "cancer.py"
    path.write_text(script)
    with pytest.raises(UserError, match="does not parse"):  # what the tweaker was given before
        tweaker_parse(script)
    assert apply_tweak("c_times_10", code_of(path).source, {}) is not None

    summary = run_json(cli, path, "--threshold", "0.94")
    assert summary["status"] == "passed", summary
    assert [a["n"] for a in summary["attempts"]] == [1, 2]
    assert summary["attempts"][1]["tweak"].startswith("C ×10: LogisticRegression 0.001 → 0.01 (line ")
    workdir = Path(summary["report"]).parent / "attempt-2"
    model = (workdir / "model.py").read_text()
    assert "LogisticRegression(C=0.01, max_iter=200)" in model and "run_cell_magic" not in model
    assert "# ipython: %matplotlib inline" in model
    assert (workdir / "diff.patch").read_text().startswith("--- a/cancer.py\n+++ b/cancer.py\n")
    log = (workdir / "log.txt").read_text()
    assert log.startswith("pushtune: the script cancer.py runs as Python")
    assert "shell line skipped (get_ipython().system('pip install scikit-learn'))" in log
    assert "%%time runs its body" in log
    assert not (workdir / "model.ipynb").exists() and summary["best"]["notebook"] is None


def test_a_tweak_on_a_tweaked_notebook_names_the_cell_of_its_own_source(tmp_path):
    """Lines a tweak inserts shift the rest: a later tweak's line is named by the cell marker
    above it in the source it was made on, not by the pushed notebook's line numbers."""
    keras_cells = [
        v4.new_markdown_cell("# Digits"),
        v4.new_code_cell("%matplotlib inline\nimport keras"),
        v4.new_code_cell("model = keras.Sequential([\n    keras.Input(shape=(64,)),\n"
                         "    keras.layers.Dense(10, activation='softmax'),\n])"),
        v4.new_code_cell("%%time\nmodel.compile(optimizer=keras.optimizers.Adam(learning_rate=8.0), "
                         "loss='sparse_categorical_crossentropy')\nmodel.fit(x, y, epochs=5)"),
    ]
    code = code_of(write(v4.new_notebook(cells=keras_cells, metadata=PYTHON_KERNEL), tmp_path / "nb.ipynb"))
    added = apply_tweak("add_dense", code.source, {})
    assert code.name_cells(added.description, code.source).endswith("(cell 3, line 3)")
    assert added.source.count("\n") > code.source.count("\n")  # the next cell's lines moved down
    halved = apply_tweak("halve_learning_rate", added.source, {})
    assert "(line " in halved.description
    assert code.name_cells(halved.description, added.source) == "halve learning rate 8.0 → 4.0 (cell 4, line 2)"
    assert code.name_cells(halved.description, added.source) == code.name_cells(
        apply_tweak("halve_learning_rate", code.source, {}).description, code.source)
    rebuilt = code.rebuilt(halved.source)
    nbformat.validate(rebuilt)
    assert rebuilt.cells[3].source.startswith("%%time\n") and "learning_rate=4.0" in rebuilt.cells[3].source
    assert rebuilt.cells[1].source == "%matplotlib inline\nimport keras"
    assert "Dense(" in rebuilt.cells[2].source and rebuilt.cells[2].source.count("Dense(") == 2


def test_changed_and_the_hook_pick_up_a_changed_notebook(tmp_path, pushtune_home, bare):  # noqa: F811
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "logistic.py").write_text(LOGISTIC)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "models").mkdir()
    write(logistic_notebook(), repo / "models" / "cancer.ipynb")
    write(v4.new_notebook(cells=[v4.new_code_cell(NOT_A_MODEL)], metadata=PYTHON_KERNEL), repo / "notes.ipynb")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "notebooks")
    second = git(repo, "rev-parse", "HEAD")

    props = tmp_path / "changed.properties"
    result = pushtune(pushtune_home, "changed", "--repo", repo, "--from", first, "--to", second, "--properties", props)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["models/cancer.ipynb"]
    assert "skipped notes.ipynb" in result.stderr
    assert json.loads(dict(line.split("=", 1) for line in props.read_text().splitlines())["MODEL_FILES"]) == \
        ["models/cancer.ipynb"]

    # a push of the notebook to a repository with the hook: trained in the background
    installed = pushtune(pushtune_home, "hook", "install", bare, "--run-args",
                         "--threshold 0.94 --max-attempts 3 --runtime local")
    assert installed.returncode == 0, installed.stderr
    work = clone(bare, tmp_path / "work")
    write(logistic_notebook(), work / "cancer.ipynb")
    git(work, "add", ".")
    git(work, "commit", "-qm", "a notebook")
    pushed = subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, capture_output=True, text=True,
                            timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    (run,) = wait_for(lambda: finished_runs(pushtune_home), timeout=300)
    assert (run["model_name"], run["status"]) == ("cancer.ipynb", "passed")
    attempts = store_of(pushtune_home).attempts(run["id"])
    assert [a["tweak"] for a in attempts] == [None, "C ×10: LogisticRegression 0.001 → 0.01 (cell 4, line 2)"]
    assert (Path(attempts[1]["dir"]) / "model.ipynb").is_file()
