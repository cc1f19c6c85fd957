"""Face recognition by VGG16 transfer learning on a folder-per-person image directory.

Data: PUSHTUNE_DATA (default ./data), one sub-folder per person (the ORL faces: 40 x 10 PGM).
The frozen VGG16 base turns every image into features once; they are cached on disk (keyed by
the images, the input size and the weights), so a retry that changes only the head below skips
VGG16. Weights: "imagenet" unless PUSHTUNE_VGG16_WEIGHTS=none; without internet (or cached
weights in ~/.keras/models) it says so and uses random weights. Reports the accuracy on 3 held-out
images per person and saves output/model.keras (VGG16 + head, images in, person out).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

from jobs import kit

SEED = 42
IMAGE_SIZE = 64
PREDICT_BATCH = 32  # for the feature pass; the head's own batch_size is in fit() below
IMAGE_SUFFIXES = {".pgm", ".png", ".jpg", ".jpeg", ".bmp"}
keras.utils.set_random_seed(SEED)


def list_images(root: Path) -> tuple[list[Path], list[str]]:
    """Image files and their person (the folder name), in a stable order."""
    if not root.is_dir():
        sys.exit(f"data directory {root} not found (set PUSHTUNE_DATA to a folder per person)")
    people = sorted(p for p in root.iterdir() if p.is_dir())
    paths = [
        image for person in people for image in sorted(person.iterdir())
        if image.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not paths:
        sys.exit(f"no images in {root} (expected one sub-folder of images per person)")
    return paths, [p.parent.name for p in paths]


def load_image(path: Path) -> np.ndarray:
    """A grey (or colour) image as IMAGE_SIZE x IMAGE_SIZE x 3, values 0..255."""
    rgb = Image.open(path).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE))
    return np.asarray(rgb, dtype="float32")


def load_base(weights: str) -> tuple[keras.Model, str]:
    """The frozen VGG16 convolutional base, and which weights it really has."""
    shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
    if weights != "none":
        socket.setdefaulttimeout(20)  # no internet must fail the download fast, not hang
        try:
            base = keras.applications.VGG16(include_top=False, weights=weights, input_shape=shape)
            base.trainable = False
            return base, weights
        except Exception as exc:
            print(f"WARNING: VGG16 {weights} weights unavailable ({exc}); TRAINING FROM RANDOM WEIGHTS",
                  file=sys.stderr, flush=True)
    # Reseed so the random base is the same in every attempt, whatever was tried before: the
    # cached features must come from the very base saved with the model.
    keras.utils.set_random_seed(SEED)
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
    base.trainable = False
    return base, "none"


def vgg16_features(base: keras.Model, weights: str, paths: list[Path]) -> np.ndarray:
    """VGG16 features of every image, from the on-disk cache when the same images were seen."""
    fingerprint = hashlib.sha256(f"{IMAGE_SIZE}|{weights}|{SEED}|keras {keras.__version__}".encode())
    for path in paths:
        stat = path.stat()
        fingerprint.update(f"{path.parent.name}/{path.name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    cache_file = kit.cache_dir() / f"vgg16-features-{fingerprint.hexdigest()[:24]}.npy"
    if cache_file.exists():
        print(f"features from cache: {cache_file}", flush=True)
        return np.load(cache_file)
    print(f"computing VGG16 features of {len(paths)} images", flush=True)
    images = keras.applications.vgg16.preprocess_input(np.stack([load_image(p) for p in paths]))
    features = base.predict(images, batch_size=PREDICT_BATCH, verbose=0)
    partial = cache_file.with_suffix(f".{os.getpid()}.tmp")
    with open(partial, "wb") as handle:
        np.save(handle, features)
    os.replace(partial, cache_file)  # atomic: a concurrent or killed attempt never reads half
    return features


# --- data --------------------------------------------------------------------------------------
paths, people = list_images(kit.data_dir("data"))
names, y = np.unique(people, return_inverse=True)
n_classes = len(names)
base, weights = load_base(os.environ.get("PUSHTUNE_VGG16_WEIGHTS", "imagenet").lower())
features = vgg16_features(base, weights, paths)
x_train, x_val, y_train, y_val = train_test_split(
    features, y, test_size=0.3, stratify=y, random_state=SEED
)

# --- head: trained on the cached features --------------------------------------------------------
# Per-feature scaling; the variance floor keeps features that are always 0 in training (ReLUs
# that never fire) from blowing up on a validation image where they do fire.
flat_train = x_train.reshape(len(x_train), -1)
normalize = keras.layers.Normalization(
    mean=flat_train.mean(axis=0), variance=np.maximum(flat_train.var(axis=0), 1e-4)
)
head = keras.Sequential([
    keras.Input(shape=features.shape[1:]),
    keras.layers.Flatten(),
    normalize,
    keras.layers.Dense(128, activation="relu"),
    keras.layers.Dense(n_classes, activation="softmax"),
])
head.compile(
    optimizer=keras.optimizers.Adam(learning_rate=0.0005),
    loss="sparse_categorical_crossentropy",
    metrics=["accuracy"],
)
head.fit(
    x_train,
    y_train,
    validation_data=(x_val, y_val),
    epochs=3,
    batch_size=32,
    callbacks=kit.callbacks(),
    verbose=2,
)

# --- results: the saved model takes images, not features -----------------------------------------
loss, accuracy = head.evaluate(x_val, y_val, verbose=0)
model = keras.Model(base.input, head(base.output), name="face_vgg16")
model.save(kit.output_dir() / "model.keras")
(kit.output_dir() / "classes.txt").write_text("\n".join(names) + "\n")  # output index -> person
kit.report(accuracy=round(float(accuracy), 4), val_loss=round(float(loss), 4), weights=weights)
