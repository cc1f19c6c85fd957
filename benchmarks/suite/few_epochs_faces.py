"""ORL faces (40 people x 10 images, 32x32 greyscale) with a small CNN trained for 2 epochs:
far too few for it to learn anything.

Data: a folder per person of PGM images, from $PUSHTUNE_DATA. 7 training and 3 validation
images per person (stratified, seeded split).
Known fix: epochs 2 -> 16.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

from jobs import kit

SEED = 42
keras.utils.set_random_seed(SEED)
p = kit.params(learning_rate=0.001, epochs=2, batch_size=32, dense_width=64, dense_layers=0, dropout=0.0,
               image_size=32)

# --- data: every image of every person, resized (32x32 unless image_size says), scaled to 0..1 ---
root = kit.data_dir()
if root is None or not root.is_dir():
    raise SystemExit("set PUSHTUNE_DATA to the ORL faces directory (a folder per person)")
people = sorted(d for d in root.iterdir() if d.is_dir())
images, labels = [], []
for label, person in enumerate(people):
    for path in sorted(person.glob("*.pgm")):
        image = Image.open(path).convert("L").resize((p["image_size"], p["image_size"]))
        images.append(np.asarray(image, dtype="float32") / 255.0)
        labels.append(label)
x, y = np.stack(images)[..., None], np.array(labels)
x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, stratify=y, random_state=SEED)

# --- model: two conv blocks, optional hidden Dense layers, softmax over the people ---------------
layers = [
    keras.Input(shape=(p["image_size"], p["image_size"], 1)),
    keras.layers.Conv2D(8, 3, activation="relu", padding="same"),
    keras.layers.MaxPooling2D(),
    keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
    keras.layers.MaxPooling2D(),
    keras.layers.Flatten(),
]
layers += [keras.layers.Dense(p["dense_width"], activation="relu") for _ in range(p["dense_layers"])]
if p["dropout"] > 0:
    layers.append(keras.layers.Dropout(p["dropout"]))
layers.append(keras.layers.Dense(len(people), activation="softmax"))
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
