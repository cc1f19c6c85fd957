"""The capture of plain PyTorch loops (jobs/autolog/for_torch.py), on scripts written as people
write them, run for real through the launcher: the curve, the model saved as TorchScript, the
script's own saves, and a script that behaves as it would without pushtune."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]

DIGITS_LOOP = """\
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.data[:600] / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target[:600])
train_loader = DataLoader(TensorDataset(x[:480], y[:480]), batch_size=64, shuffle=True)
val_loader = DataLoader(TensorDataset(x[480:], y[480:]), batch_size=64)

model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
loss_fn = nn.CrossEntropyLoss()

for epoch in range(EPOCHS):
    model.train()
    total = 0.0
    for xb, yb in train_loader:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        total += loss.item()
    print(f"epoch {epoch + 1}: train_loss={total / len(train_loader)!r}")
    VALIDATE
SAVE
model.eval()
with torch.no_grad():
    np.save("predictions.npy", model(x[:8]).numpy())
"""

VALIDATION_PASS = """model.eval()
    with torch.no_grad():
        val_loss = sum(loss_fn(model(xb), yb).item() for xb, yb in val_loader) / len(val_loader)
    print(f"epoch {epoch + 1}: val_loss={val_loss!r}")"""

IRIS_FULL_BATCH = """\
import torch
from sklearn.datasets import load_iris
from torch import nn

torch.manual_seed(0)
iris = load_iris()
x = torch.tensor(iris.data, dtype=torch.float32)
y = torch.tensor(iris.target)
model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
criterion = nn.CrossEntropyLoss()
for epoch in range(12):
    optimizer.zero_grad()
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
    print(f"epoch {epoch + 1}: train_loss={loss.item()!r}")
"""


def digits_script(epochs: int = 3, validate: bool = False, save: str = "") -> str:
    return (DIGITS_LOOP.replace("EPOCHS", str(epochs))
            .replace("VALIDATE", VALIDATION_PASS if validate else "pass")
            .replace("SAVE", save))


def launch(tmp_path: Path, source: str, autolog: bool = True) -> tuple[subprocess.CompletedProcess, Path]:
    (tmp_path / "model.py").write_text(source)
    out = tmp_path / ("output" if autolog else "output-off")
    env = {**os.environ, "PUSHTUNE_OUTPUT": str(out), "PYTHONPATH": str(ROOT),
           "PUSHTUNE_AUTOLOG": "1" if autolog else "0", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "jobs.launch", "model.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    return result, out


def printed(result: subprocess.CompletedProcess, name: str) -> list[float]:
    return [float(value) for value in re.findall(rf"{name}=(\S+)", result.stdout)]


def load_torchscript(path: Path):
    with warnings.catch_warnings():  # torch.jit.load is deprecated in torch 2.13, and what serve uses
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path))


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_data_loader_loop_leaves_its_curve_and_a_servable_model(tmp_path):
    result, out = launch(tmp_path, digits_script(epochs=3))
    assert result.returncode == 0, result.stderr
    assert "autolog: torch" not in result.stderr  # no capture step failed

    curve = read(out / "history.json")
    assert [e["epoch"] for e in curve["history"]] == [1, 2, 3]
    assert [e["loss"] for e in curve["history"]] == pytest.approx(printed(result, "train_loss"), rel=1e-6)
    assert all(e["lr"] == 0.01 for e in curve["history"])
    assert curve["steps"] == 8 and curve["epochs"] is None  # 480 rows in batches of 64
    assert read(out / "progress.json") == {"epoch": 3, "epochs": None,
                                           "logs": {"loss": curve["history"][-1]["loss"], "lr": 0.01}}

    capture = read(out / "autolog.json")
    assert capture["frameworks"] == ["pytorch"]
    assert capture["training"]["pytorch"] == {"optimizer": "Adam", "learning_rate": 0.01, "steps_per_epoch": 8,
                                              "batch_size": 64, "epochs_seen": 3}
    assert capture["artifact"]["file"] == "model.pt"
    assert "the module the optimizer trained (Sequential)" in capture["artifact"]["how"]
    served = load_torchscript(out / "model.pt")
    from sklearn.datasets import load_digits
    x = torch.tensor(load_digits().data[:8] / 16.0, dtype=torch.float32)
    with torch.no_grad():
        assert np.allclose(served(x).numpy(), np.load(tmp_path / "predictions.npy"), atol=1e-6)


def test_the_capture_does_not_change_what_the_script_computes(tmp_path):
    on, _ = launch(tmp_path, digits_script(epochs=2))
    off, out_off = launch(tmp_path, digits_script(epochs=2), autolog=False)
    assert on.returncode == off.returncode == 0, on.stderr + off.stderr
    assert printed(on, "train_loss") == printed(off, "train_loss")
    assert not out_off.exists()


def test_a_validation_pass_each_epoch_is_no_epoch_of_its_own(tmp_path):
    result, out = launch(tmp_path, digits_script(epochs=4, validate=True))
    assert result.returncode == 0, result.stderr
    curve = read(out / "history.json")
    assert len(curve["history"]) == 4 and curve["steps"] == 8
    assert [e["loss"] for e in curve["history"]] == pytest.approx(printed(result, "train_loss"), rel=1e-6)
    assert read(out / "progress.json")["epoch"] == 4


def test_a_full_batch_loop_makes_each_step_an_epoch(tmp_path):
    result, out = launch(tmp_path, IRIS_FULL_BATCH)
    assert result.returncode == 0, result.stderr
    curve = read(out / "history.json")
    assert len(curve["history"]) == 12 and curve["steps"] == 1
    assert [e["loss"] for e in curve["history"]] == pytest.approx(printed(result, "train_loss"), rel=1e-6)
    capture = read(out / "autolog.json")
    assert capture["training"]["pytorch"]["optimizer"] == "SGD"
    assert capture["training"]["pytorch"]["batch_size"] is None
    assert load_torchscript(out / "model.pt")(torch.zeros(2, 4)).shape == (2, 3)


def test_a_saved_state_dict_is_recorded_but_pushtune_saves_torchscript(tmp_path):
    result, out = launch(tmp_path, digits_script(epochs=1, save='torch.save(model.state_dict(), "digits.pth")'))
    assert result.returncode == 0, result.stderr
    capture = read(out / "autolog.json")
    assert capture["saved"] == [{"path": str(tmp_path / "digits.pth"), "call": "torch.save()", "line": 29,
                                 "model": False}]
    assert capture["artifact"]["how"].startswith("saved by pushtune: the module the optimizer trained")
    load_torchscript(out / "model.pt")  # TorchScript, not the state_dict


def test_a_script_that_raises_in_its_loop_fails_as_itself(tmp_path):
    raising = "    model.train()\n    if epoch == 1:\n        raise ValueError('bad batch')\n"
    broken = digits_script(epochs=3).replace("    model.train()\n", raising)
    result, out = launch(tmp_path, broken)
    assert result.returncode == 1
    assert "ValueError: bad batch" in result.stderr and 'model.py", line 21' in result.stderr
    assert "jobs" not in result.stderr.split("Traceback")[1]  # the script's frames only
    assert (out / "autolog.json").exists() and read(out / "autolog.json")["artifact"] is None
    assert len(read(out / "history.json")["history"]) == 1  # the epoch it finished


def test_a_script_using_the_kit_keeps_its_own_curve(tmp_path):
    result, out = launch(tmp_path, (ROOT / "models" / "torch_digits_mlp.py").read_text())
    assert result.returncode == 0, result.stderr
    curve = read(out / "history.json")  # the kit's: 5 epochs of 22 steps, with its accuracy
    assert (curve["epochs"], curve["steps"], len(curve["history"])) == (5, 22, 5)
    assert "accuracy" in curve["history"][0] and "lr" not in curve["history"][0]
    assert read(out / "autolog.json")["training"]["pytorch"] == {"optimizer": "SGD", "learning_rate": 1.0}
