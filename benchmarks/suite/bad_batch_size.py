"""Digits (8x8) with a dense net trained with the whole training set as one
batch: one optimizer step per epoch, so 10 epochs are 10 steps.

Known fix: batch_size 1347 -> 32.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from jobs import kit

SEED = 42
keras.utils.set_random_seed(SEED)
p = kit.params(learning_rate=0.1, epochs=10, batch_size=1347, dense_width=32, dense_layers=1, dropout=0.0)

digits = load_digits()
x = digits.data.astype("float32") / 16.0
x_train, x_val, y_train, y_val = train_test_split(
    x, digits.target, test_size=0.25, stratify=digits.target, random_state=SEED
)

layers = [keras.Input(shape=(64,))]
layers += [keras.layers.Dense(p["dense_width"], activation="relu") for _ in range(p["dense_layers"])]
if p["dropout"] > 0:
    layers.append(keras.layers.Dropout(p["dropout"]))
layers.append(keras.layers.Dense(10, activation="softmax"))
model = keras.Sequential(layers)
model.compile(
    optimizer=keras.optimizers.SGD(learning_rate=p["learning_rate"]),
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
