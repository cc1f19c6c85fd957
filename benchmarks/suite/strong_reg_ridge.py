"""Diabetes progression with a ridge regression whose penalty (alpha=100) flattens every
coefficient: it predicts little more than the mean. Metric: r2 on a held-out 25%.

Known fix: alpha 100 -> 0.1.
"""

import joblib
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split

from jobs import kit

SEED = 42
p = kit.params(alpha=100.0)

x, y = load_diabetes(return_X_y=True)
x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, random_state=SEED)
model = Ridge(alpha=p["alpha"])
model.fit(x_train, y_train)

joblib.dump(model, kit.output_dir() / "model.joblib")
kit.report(r2=round(model.score(x_val, y_val), 4), examples=len(y_val))
