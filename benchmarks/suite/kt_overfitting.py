"""overfitting.py rewritten for keras-tuner: the same data and model as a HyperModel, and a
driver that searches it with RandomSearch or Hyperband (objective val_accuracy).

Usage: python kt_overfitting.py [random|hyperband] [DIRECTORY]
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import keras_tuner as kt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 42
EPOCHS = 20
keras.utils.set_random_seed(SEED)

digits = load_digits()
x = digits.data.astype("float32") / 16.0
x_train, x_val, y_train, y_val = train_test_split(
    x, digits.target, test_size=0.25, stratify=digits.target, random_state=SEED
)
x_train, y_train = x_train[:400], y_train[:400].copy()
rng = np.random.default_rng(SEED)
noisy = rng.random(len(y_train)) < 0.3  # label noise in the training labels only
y_train[noisy] = rng.integers(0, 10, noisy.sum())


class DigitsNet(kt.HyperModel):
    def build(self, hp):
        width = hp.Choice("dense_width", [64, 128, 512])
        layers = [keras.Input(shape=(64,))]
        layers += [keras.layers.Dense(width, activation="relu") for _ in range(hp.Int("dense_layers", 1, 2))]
        dropout = hp.Choice("dropout", [0.0, 0.3, 0.5])
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout))
        layers.append(keras.layers.Dense(10, activation="softmax"))
        model = keras.Sequential(layers)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=hp.Choice("learning_rate", [0.01, 0.001])),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    def fit(self, hp, model, *args, **kwargs):
        return model.fit(*args, batch_size=hp.Choice("batch_size", [32, 128]), **kwargs)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "random"
    directory = sys.argv[2] if len(sys.argv) > 2 else "kt_runs"
    common = dict(objective="val_accuracy", seed=SEED, directory=directory, project_name=which, overwrite=True)
    if which == "hyperband":
        tuner = kt.Hyperband(DigitsNet(), max_epochs=EPOCHS, factor=3, **common)
    else:
        tuner = kt.RandomSearch(DigitsNet(), max_trials=8, **common)
    tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=EPOCHS, verbose=0)

    model = tuner.get_best_models(1)[0]
    loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
    print("best:", tuner.get_best_hyperparameters(1)[0].values)
    print(f"accuracy: {accuracy:.4f}")
