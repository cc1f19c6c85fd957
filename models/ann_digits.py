"""Handwritten digits (8x8 images) with a small dense network.

Data: scikit-learn's bundled `load_digits` (1797 images, 10 classes), nothing downloaded.
Reports the accuracy on a held-out 25% split and saves output/model.keras.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from jobs import kit

SEED = 42
keras.utils.set_random_seed(SEED)

# --- data: pixel values 0..16 scaled to 0..1 ---------------------------------------------------
digits = load_digits()
x = digits.data.astype("float32") / 16.0
y = digits.target
x_train, x_val, y_train, y_val = train_test_split(
    x, y, test_size=0.25, stratify=y, random_state=SEED
)
n_classes = len(np.unique(y))

# --- model ---------------------------------------------------------------------------------------
model = keras.Sequential([
    keras.Input(shape=(x.shape[1],)),
    keras.layers.Dense(n_classes, activation="softmax"),
])
model.compile(
    optimizer=keras.optimizers.Adam(learning_rate=0.001),
    loss="sparse_categorical_crossentropy",
    metrics=["accuracy"],
)

model.fit(
    x_train,
    y_train,
    validation_data=(x_val, y_val),
    epochs=5,
    batch_size=64,
    callbacks=kit.callbacks(),
    verbose=2,
)

# --- results -------------------------------------------------------------------------------------
loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
model.save(kit.output_dir() / "model.keras")
kit.report(accuracy=round(float(accuracy), 4), val_loss=round(float(loss), 4))
