"""Face example: a retry that changes the head, with VGG16 features from the cache vs end to end.

On the ORL faces (400 PGM images, 64x64, random VGG16 weights: no internet for imagenet), times:
- the one-off feature pass (every image through the frozen VGG16 base, then saved to the cache);
- a cached retry: load the features from the cache, train the head for N epochs;
- the same retry the recipe's way: VGG16 (frozen) + the same head trained end to end on the
  images for N epochs, so every image goes through VGG16 every epoch;
- the example script itself as a process (cold cache, then warm), for the wall-clock picture.
Target: the cached retry at least 10x faster than end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
FACES = Path(os.environ.get("PUSHTUNE_DATA") or ROOT.parent / "shared/data/att_faces")
IMAGE_SIZE = 64
EPOCHS = 6  # the example's 3 epochs after the "double epochs" tweak
SEED = 42
TARGET = 10.0


def load_faces():
    import numpy as np
    from PIL import Image

    paths = sorted(p for p in FACES.glob("*/*.pgm"))
    images = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)), dtype="float32") for p in paths]
    )
    _, labels = np.unique([p.parent.name for p in paths], return_inverse=True)
    return images, labels


def make_head(feature_shape, n_classes, flat_train):
    """The example's head: Flatten, per-feature scaling, Dense 128, Dense softmax."""
    import keras
    import numpy as np

    head = keras.Sequential([
        keras.Input(shape=feature_shape),
        keras.layers.Flatten(),
        keras.layers.Normalization(mean=flat_train.mean(axis=0), variance=np.maximum(flat_train.var(axis=0), 1e-4)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(n_classes, activation="softmax"),
    ])
    return head


def compile_and_fit(model, x_train, y_train, x_val, y_val) -> float:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.0005), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=EPOCHS, batch_size=32, verbose=0)
    return float(model.evaluate(x_val, y_val, verbose=0)[1])


def time_example_script(cache: Path, workdir: Path) -> float:
    workdir.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PUSHTUNE_DATA": str(FACES), "PUSHTUNE_CACHE": str(cache),
           "PUSHTUNE_OUTPUT": str(workdir / "output"), "PUSHTUNE_VGG16_WEIGHTS": "none"}
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "models/face_vgg16.py")], cwd=workdir, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def main() -> str:
    if not (FACES / "s1").is_dir():
        return f"## Face feature cache\n\nSkipped: ORL faces not found at {FACES}."
    import keras
    import numpy as np
    from sklearn.model_selection import train_test_split

    keras.utils.set_random_seed(SEED)
    images, labels = load_faces()
    n_classes = int(labels.max()) + 1
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
    base.trainable = False
    inputs = keras.applications.vgg16.preprocess_input(images.copy())
    train_idx, val_idx = train_test_split(np.arange(len(labels)), test_size=0.3, stratify=labels, random_state=SEED)

    with tempfile.TemporaryDirectory() as tmp:
        cache_file = Path(tmp) / "features.npy"
        started = time.perf_counter()
        np.save(cache_file, base.predict(inputs, batch_size=32, verbose=0))
        feature_pass = time.perf_counter() - started

        started = time.perf_counter()
        features = np.load(cache_file)
        flat_train = features[train_idx].reshape(len(train_idx), -1)
        head = make_head(features.shape[1:], n_classes, flat_train)
        cached_accuracy = compile_and_fit(head, features[train_idx], labels[train_idx],
                                          features[val_idx], labels[val_idx])
        cached = time.perf_counter() - started

        started = time.perf_counter()
        # The recipe's way: the frozen base is part of the trained model, so its features are
        # recomputed for every batch of every epoch (and for the validation images each epoch).
        end_to_end_head = make_head(base.output_shape[1:], n_classes, flat_train)
        full = keras.Model(base.input, end_to_end_head(base.output))
        full_accuracy = compile_and_fit(full, inputs[train_idx], labels[train_idx], inputs[val_idx], labels[val_idx])
        end_to_end = time.perf_counter() - started

        cold = time_example_script(Path(tmp) / "cache", Path(tmp) / "attempt-1")
        warm = time_example_script(Path(tmp) / "cache", Path(tmp) / "attempt-2")

    ratio = end_to_end / cached
    verdict = "met" if ratio >= TARGET else "NOT met"
    return f"""## Face feature cache (`models/face_vgg16.py`)

ORL faces, {len(labels)} images at {IMAGE_SIZE}x{IMAGE_SIZE}, random VGG16 weights, a retry that changes the
head and trains it for {EPOCHS} epochs (batch 32, validation on {len(val_idx)} images each epoch).

| step | time | val. accuracy |
| --- | ---: | ---: |
| one-off feature pass (VGG16 over {len(labels)} images, saved to cache) | {feature_pass:.2f} s | |
| retry, features from the cache + head training | {cached:.2f} s | {cached_accuracy:.3f} |
| same retry end to end (VGG16 frozen + head, images every epoch) | {end_to_end:.2f} s | {full_accuracy:.3f} |
| example script as a process, cold cache (incl. TF import, model save) | {cold:.1f} s | |
| example script as a process, warm cache | {warm:.1f} s | |

Cached retry vs end to end: **{ratio:.1f}x** faster (target >= {TARGET:.0f}x: {verdict})."""


if __name__ == "__main__":
    print(main())
