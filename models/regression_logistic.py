"""Breast cancer diagnosis (malignant / benign) with logistic regression.

Data: scikit-learn's bundled `load_breast_cancer` (569 samples, 30 features), nothing downloaded.
Reports the accuracy on a held-out 25% split and saves output/model.joblib.
"""

from __future__ import annotations

import joblib
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jobs import kit

SEED = 42

# --- data ----------------------------------------------------------------------------------------
x, y = load_breast_cancer(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split(
    x, y, test_size=0.25, stratify=y, random_state=SEED
)

# --- model: a strongly regularised start (small C) -----------------------------------------------
model = make_pipeline(
    StandardScaler(),
    LogisticRegression(C=0.01, max_iter=100),
)
model.fit(x_train, y_train)

# --- results -------------------------------------------------------------------------------------
predicted = model.predict(x_test)
joblib.dump(model, kit.output_dir() / "model.joblib")
kit.report(
    accuracy=round(accuracy_score(y_test, predicted), 4),
    f1=round(f1_score(y_test, predicted), 4),
)
