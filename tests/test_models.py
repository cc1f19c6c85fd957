"""The example models in models/, each run for real as `python model.py` under the contract."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def run_example(name: str, attempt: Path, cache: Path, data: Path | None = None, **extra_env: str):
    """Run models/<name> like an attempt: a copy as model.py in `attempt`, contract env set."""
    attempt.mkdir(parents=True)
    shutil.copy(MODELS / name, attempt / "model.py")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PUSHTUNE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        PUSHTUNE_OUTPUT=str(attempt / "output"),
        PUSHTUNE_PARAMS="{}",
        PUSHTUNE_CACHE=str(cache),
        **extra_env,
    )
    if data is not None:
        env["PUSHTUNE_DATA"] = str(data)
    result = subprocess.run(
        [sys.executable, "model.py"], cwd=attempt, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def vgg16_kernels(model_file: Path) -> dict:
    """The convolution kernels (the VGG16 base) stored in a saved .keras model."""
    with zipfile.ZipFile(model_file) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as weights:
        return {name: weights[f"layers/{name}/vars/0"][()] for name in weights["layers"] if name.startswith("conv2d")}


def reported(attempt: Path) -> dict:
    metrics = json.loads((attempt / "output" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    return metrics


def test_regression_logistic_reports_accuracy_and_saves_joblib(tmp_path):
    import joblib

    result = run_example("regression_logistic.py", tmp_path / "attempt-1", tmp_path / "cache")
    metrics = reported(tmp_path / "attempt-1")
    assert f"accuracy: {metrics['accuracy']}" in result.stdout
    model = joblib.load(tmp_path / "attempt-1" / "output" / "model.joblib")
    assert model.predict([[0.0] * 30]).shape == (1,)  # a fitted 30-feature classifier


def test_ann_digits_reports_accuracy_and_saves_keras_model(tmp_path):
    run_example("ann_digits.py", tmp_path / "attempt-1", tmp_path / "cache")
    reported(tmp_path / "attempt-1")
    output = tmp_path / "attempt-1" / "output"
    assert (output / "model.keras").stat().st_size > 0
    assert json.loads((output / "progress.json").read_text())["epoch"] >= 1  # trained with kit.callbacks()


@pytest.mark.slow
def test_face_vgg16_caches_features_and_reuses_them_on_retry(tmp_path, faces_dir):
    cache = tmp_path / "cache"
    first = run_example("face_vgg16.py", tmp_path / "attempt-1", cache, faces_dir, PUSHTUNE_VGG16_WEIGHTS="none")
    assert "computing VGG16 features of 400 images" in first.stdout
    assert reported(tmp_path / "attempt-1")["weights"] == "none"
    assert (tmp_path / "attempt-1" / "output" / "model.keras").stat().st_size > 0
    [cache_file] = cache.glob("vgg16-features-*")
    written_at = cache_file.stat().st_mtime_ns

    # The retry asks for imagenet weights (the default) with no way to fetch them: an empty
    # KERAS_HOME and a proxy on a closed port make the download fail at once, as offline. It must
    # say so, fall back to random weights, and then find its features in the cache.
    second = run_example(
        "face_vgg16.py", tmp_path / "attempt-2", cache, faces_dir,
        KERAS_HOME=str(tmp_path / "keras-home"), HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
    )
    assert "WARNING: VGG16 imagenet weights unavailable" in second.stderr
    assert reported(tmp_path / "attempt-2")["weights"] == "none"
    assert "features from cache" in second.stdout
    assert "computing VGG16 features" not in second.stdout
    assert [p.name for p in cache.glob("vgg16-features-*")] == [cache_file.name]
    assert cache_file.stat().st_mtime_ns == written_at
    # Both saved models carry the very random base the cached features came from (the failed
    # imagenet attempt must not have shifted the random weights).
    first_base = vgg16_kernels(tmp_path / "attempt-1" / "output" / "model.keras")
    second_base = vgg16_kernels(tmp_path / "attempt-2" / "output" / "model.keras")
    assert len(first_base) == 13 and first_base.keys() == second_base.keys()
    assert all(np.array_equal(first_base[name], second_base[name]) for name in first_base)


def test_face_vgg16_without_data_exits_with_a_message(tmp_path):
    attempt = tmp_path / "attempt-1"
    attempt.mkdir()
    shutil.copy(MODELS / "face_vgg16.py", attempt / "model.py")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PUSHTUNE_")}
    env.update(PYTHONPATH=str(ROOT), PUSHTUNE_DATA=str(tmp_path / "missing"), PUSHTUNE_VGG16_WEIGHTS="none")
    result = subprocess.run(
        [sys.executable, "model.py"], cwd=attempt, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert f"data directory {tmp_path / 'missing'} not found" in result.stderr
    assert "Traceback" not in result.stderr
