"""Digits classifier, Keras Sequential, trained for a single epoch: stopped long before it has
learned. Written without pushtune; the metric printed, the model saved as mnist_mlp.keras.

Known fix: epochs=1 -> epochs=8.
"""

import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

keras.utils.set_random_seed(7)

digits = load_digits()
x = digits.images.reshape(len(digits.images), -1).astype("float32") / 16.0
x_train, x_val, y_train, y_val = train_test_split(x, digits.target, test_size=0.3, random_state=7)

model = keras.Sequential([
    keras.Input(shape=(64,)),
    keras.layers.Dense(32, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=1, batch_size=32, verbose=2)

val_loss, val_acc = model.evaluate(x_val, y_val, verbose=0)
print("val_loss:", round(val_loss, 4))
print("val_accuracy:", round(val_acc, 4))
model.save("mnist_mlp.keras")
