"""Breast cancer (Wisconsin) with a logistic regression so strongly regularised (C=1e-4) that
it barely fits at all.

Known fix: C 1e-4 -> 1.0.
"""

import joblib
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jobs import kit

SEED = 42
p = kit.params(C=0.0001, max_iter=100)

x, y = load_breast_cancer(return_X_y=True)
x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, stratify=y, random_state=SEED)
model = make_pipeline(StandardScaler(), LogisticRegression(C=p["C"], max_iter=p["max_iter"]))
model.fit(x_train, y_train)

joblib.dump(model, kit.output_dir() / "model.joblib")
kit.report(accuracy=round(model.score(x_val, y_val), 4), examples=len(y_val))
