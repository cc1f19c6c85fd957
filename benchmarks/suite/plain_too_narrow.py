"""Digits classifier: a Keras Sequential net whose one hidden layer is Dense(3), too narrow to
separate ten classes. Written without pushtune; the metric printed, the model saved as
digits_model.h5.

Known fix: Dense(3) -> Dense(16).
"""

import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

keras.utils.set_random_seed(42)

digits = load_digits()
X = digits.data / 16.0
X_train, X_test, y_train, y_test = train_test_split(X, digits.target, test_size=0.25, random_state=42)

model = keras.Sequential([
    keras.Input(shape=(64,)),
    keras.layers.Dense(3, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(X_train, y_train, epochs=15, batch_size=32, validation_split=0.1, verbose=0)

test_loss, test_acc = model.evaluate(X_test, y_test, verbose=0)
print(f"Test accuracy: {test_acc:.4f}")
model.save("digits_model.h5")
