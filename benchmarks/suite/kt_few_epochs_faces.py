"""few_epochs_faces.py rewritten for keras-tuner: the same data and model as a HyperModel, and
a driver that searches it with RandomSearch (epochs a hyperparameter) or Hyperband (which sets
the epochs itself), objective val_accuracy.

Usage: python kt_few_epochs_faces.py [random|hyperband] [DIRECTORY]
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import keras_tuner as kt
import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

from jobs import kit

SEED = 42
MAX_EPOCHS = 16
keras.utils.set_random_seed(SEED)

# --- data: every image of every person, resized to 32x32, scaled to 0..1 ------------------------
root = kit.data_dir()
if root is None or not root.is_dir():
    raise SystemExit("set PUSHTUNE_DATA to the ORL faces directory (a folder per person)")
people = sorted(d for d in root.iterdir() if d.is_dir())
images, labels = [], []
for label, person in enumerate(people):
    for path in sorted(person.glob("*.pgm")):
        image = Image.open(path).convert("L").resize((32, 32))
        images.append(np.asarray(image, dtype="float32") / 255.0)
        labels.append(label)
x, y = np.stack(images)[..., None], np.array(labels)
x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, stratify=y, random_state=SEED)


# --- model: two conv blocks, optional hidden Dense layers, softmax over the people ---------------
class FacesNet(kt.HyperModel):
    def build(self, hp):
        layers = [
            keras.Input(shape=(32, 32, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
        ]
        width = hp.Choice("dense_width", [64, 128])
        layers += [keras.layers.Dense(width, activation="relu") for _ in range(hp.Int("dense_layers", 0, 1))]
        dropout = hp.Choice("dropout", [0.0, 0.3])
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout))
        layers.append(keras.layers.Dense(len(people), activation="softmax"))
        model = keras.Sequential(layers)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=hp.Choice("learning_rate", [0.01, 0.001])),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    def fit(self, hp, model, *args, **kwargs):
        if "epochs" not in kwargs:  # Hyperband passes its own
            kwargs["epochs"] = hp.Choice("epochs", [2, 4, 8, 16])
        return model.fit(*args, batch_size=hp.Choice("batch_size", [16, 32]), **kwargs)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "random"
    directory = sys.argv[2] if len(sys.argv) > 2 else "kt_runs"
    common = dict(objective="val_accuracy", seed=SEED, directory=directory, project_name=which, overwrite=True)
    if which == "hyperband":
        tuner = kt.Hyperband(FacesNet(), max_epochs=MAX_EPOCHS, factor=3, **common)
        tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=MAX_EPOCHS, verbose=0)
    else:
        tuner = kt.RandomSearch(FacesNet(), max_trials=8, **common)
        tuner.search(x_train, y_train, validation_data=(x_val, y_val), verbose=0)

    model = tuner.get_best_models(1)[0]
    loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
    print("best:", tuner.get_best_hyperparameters(1)[0].values)
    print(f"accuracy: {accuracy:.4f}")
