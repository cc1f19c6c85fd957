"""Scripts as people write them (no pushtune import, the metric printed or computed their own way,
the model saved under their own name or not at all) through the whole loop, in both runtimes:
the capture's curve, metric and model are what the diagnosis and the model registry act on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import requires_engine
from jobs.store.run_store import RunStore

# An unconverged solver: 5 iterations on unscaled features. Its metric comes from accuracy_score,
# its model from joblib.dump under its own name.
PLAIN_SKLEARN = """\
import joblib
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

X, y = load_wine(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=42)
clf = LogisticRegression(max_iter=5)
clf.fit(x_train, y_train)
acc = accuracy_score(y_test, clf.predict(x_test))
print(f"Accuracy: {acc:.4f}")
joblib.dump(clf, "wine_clf.pkl")
"""

# A plain PyTorch loop whose SGD rate diverges. It prints its metric as `val_acc 0.9556` and
# saves nothing.
PLAIN_TORCH = """\
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(42)
digits = load_digits()
x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=42)
loader = DataLoader(TensorDataset(x_train, y_train), batch_size=64, shuffle=True)

model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
optimizer = optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(5):
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch + 1}: loss {loss.item():.4f}")

with torch.no_grad():
    val_acc = (model(x_test).argmax(1) == y_test).float().mean().item()
print(f"val_acc {val_acc:.4f}")
"""

RUNTIMES = ["local", pytest.param("docker", marks=[pytest.mark.docker, requires_engine])]


def run_unmodified(cli, tmp_path: Path, name: str, source: str, runtime: str) -> tuple[dict, list[dict]]:
    script = tmp_path / name
    script.write_text(source)
    done = cli("run", script, "--runtime", runtime, "--threshold", "0.9", "--max-attempts", "3", "--json",
               timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    [model] = json.loads(cli("models", "--json").stdout)  # the passing run registered its model
    assert (model["name"], model["production"]) == (script.stem, 1)
    assert (model["versions"][0]["run_id"], model["versions"][0]["attempt"]) == (
        summary["run_id"], summary["best"]["attempt"])
    return summary, RunStore.open().attempts(summary["run_id"])


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_unmodified_scikit_learn_script_converges_and_registers_its_own_file(cli, tmp_path, runtime):
    summary, attempts = run_unmodified(cli, tmp_path, "wine_plain.py", PLAIN_SKLEARN, runtime)
    assert [a["tweak_name"] for a in attempts] == [None, "max_iter_times_10"]
    assert attempts[1]["reason"] == ("attempt 1: no convergence: LogisticRegression stopped at max_iter=5 "
                                     "(n_iter_ 5)")
    fit = attempts[0]["capture"]["training"]["sklearn"]
    assert (fit["estimator"], fit["n_iter"], fit["max_iter"], fit["converged"]) == ("LogisticRegression", 5, 5, False)
    assert summary["best"]["metric_source"] == "accuracy from accuracy_score() at line 11"
    assert summary["best"]["artifact_source"] == "saved by the script as wine_clf.pkl (joblib.dump() at line 13)"
    assert Path(summary["best"]["artifact"]).name == "model.pkl"


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_unmodified_pytorch_loop_is_diagnosed_from_its_captured_curve(cli, tmp_path, runtime):
    summary, attempts = run_unmodified(cli, tmp_path, "digits_plain_torch.py", PLAIN_TORCH, runtime)
    assert [a["tweak_name"] for a in attempts] == [None, "divide_learning_rate_by_10"]
    assert attempts[1]["reason"].startswith("attempt 1: diverged: loss did not fall")
    for attempt in attempts:  # five epochs of 22 steps each (1347 rows, 64 a batch), from backward()
        curve = attempt["curve"]
        assert [e["epoch"] for e in curve["history"]] == [1, 2, 3, 4, 5] and curve["steps"] == 22
        assert all(e["loss"] is None or e["loss"] > 0 for e in curve["history"])
    assert summary["best"]["metric_source"] == "accuracy printed as 'val_acc' at line 27"
    assert summary["best"]["artifact_source"].startswith("saved by pushtune: the module the optimizer trained")
    assert Path(summary["best"]["artifact"]).name == "model.pt"


# Its metric is the last line on stdout, but warnings on stderr come after it: in a container the
# two streams reach the log in either order (issue 26: read at random under Docker).
METRIC_THEN_WARNINGS = """\
import sys
import warnings
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
LogisticRegression(max_iter=500).fit(*load_iris(return_X_y=True))
print("Accuracy: 0.933", flush=True)
warnings.warn("X does not have valid feature names, but LogisticRegression was fitted with feature names")
print("WARNING:absl:You are saving your model as an HDF5 file via `model.save()`.", file=sys.stderr)
"""


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_metric_is_read_from_stdout_whatever_stderr_interleaves(cli, tmp_path, runtime):
    script = tmp_path / "noisy.py"
    script.write_text(METRIC_THEN_WARNINGS)
    for _ in range(3):
        done = cli("run", script, "--runtime", runtime, "--threshold", "0.9", "--max-attempts", "1", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        best = json.loads(done.stdout)["best"]
        assert (best["accuracy"], best["metric_source"]) == (0.933, "accuracy printed as 'Accuracy' at line 6")


# As models/face_vgg16.py does offline; a library's own warning (through logging) is not the script's.
WARNS_ITSELF = """\
import logging
import sys
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
print("WARNING: VGG16 imagenet weights unavailable; TRAINING FROM RANDOM WEIGHTS", file=sys.stderr)
logging.getLogger("somelib").warning("WARNING: a library's notice")
LogisticRegression(max_iter=500).fit(*load_iris(return_X_y=True))
print("Accuracy: 0.95")
"""


def test_the_scripts_own_warnings_reach_the_terminal_and_the_report(cli, tmp_path):
    script = tmp_path / "warns.py"
    script.write_text(WARNS_ITSELF)
    done = cli("run", script, "--runtime", "local", "--max-attempts", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    said = "script says: WARNING: VGG16 imagenet weights unavailable; TRAINING FROM RANDOM WEIGHTS"
    assert said in done.stderr and "a library's notice" not in done.stderr.replace(said, "")
    [attempt] = RunStore.open().attempts(1)
    assert attempt["capture"]["warnings"] == [said.removeprefix("script says: ")]
    assert said in (Path(attempt["dir"]).parent / "report.html").read_text()
