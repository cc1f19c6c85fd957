"""Digits classifier with the Keras functional API, trained by SGD at learning rate 8.0:
the loss blows up. Written without pushtune; the accuracy printed as a percentage, nothing saved.

Known fix: learning_rate=8.0 -> 0.8.
"""

import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

keras.utils.set_random_seed(0)

X, y = load_digits(return_X_y=True)
X = X / 16.0
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)

inputs = keras.Input(shape=(64,))
hidden = keras.layers.Dense(64, activation="relu")(inputs)
hidden = keras.layers.Dense(32, activation="relu")(hidden)
outputs = keras.layers.Dense(10, activation="softmax")(hidden)
model = keras.Model(inputs, outputs)

model.compile(optimizer=keras.optimizers.SGD(learning_rate=8.0),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(X_train, y_train, validation_data=(X_test, y_test), epochs=10, batch_size=64, verbose=0)

_, accuracy = model.evaluate(X_test, y_test, verbose=0)
print(f"Accuracy = {accuracy * 100:.1f}%")
