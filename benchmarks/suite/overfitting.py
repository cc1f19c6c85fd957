"""Digits (8x8) with a wide dense net on 400 training images, 30% of whose labels are wrong
(the validation labels are clean): it learns the wrong labels by heart and validates worse.

Known fix: dropout 0.0 -> 0.3 (a Dropout layer before the output).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from jobs import kit

SEED = 42
keras.utils.set_random_seed(SEED)
p = kit.params(learning_rate=0.01, epochs=20, batch_size=32, dense_width=512, dense_layers=1, dropout=0.0)

digits = load_digits()
x = digits.data.astype("float32") / 16.0
x_train, x_val, y_train, y_val = train_test_split(
    x, digits.target, test_size=0.25, stratify=digits.target, random_state=SEED
)
x_train, y_train = x_train[:400], y_train[:400].copy()
rng = np.random.default_rng(SEED)
noisy = rng.random(len(y_train)) < 0.3  # label noise in the training labels only
y_train[noisy] = rng.integers(0, 10, noisy.sum())

layers = [keras.Input(shape=(64,))]
layers += [keras.layers.Dense(p["dense_width"], activation="relu") for _ in range(p["dense_layers"])]
if p["dropout"] > 0:
    layers.append(keras.layers.Dropout(p["dropout"]))
layers.append(keras.layers.Dense(10, activation="softmax"))
model = keras.Sequential(layers)
model.compile(
    optimizer=keras.optimizers.Adam(learning_rate=p["learning_rate"]),
    loss="sparse_categorical_crossentropy",
    metrics=["accuracy"],
)
model.fit(
    x_train, y_train, validation_data=(x_val, y_val), epochs=p["epochs"],
    batch_size=p["batch_size"], callbacks=kit.callbacks(), verbose=0,
)

loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
model.save(kit.output_dir() / "model.keras")
kit.report(accuracy=round(float(accuracy), 4), val_loss=round(float(loss), 4), examples=len(y_val))
