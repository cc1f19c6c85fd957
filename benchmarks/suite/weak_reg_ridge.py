"""Diabetes progression from only 120 patients, with all degree-2 products of the 10
features (66 inputs) and a ridge penalty too weak (alpha=0.1) to stop it fitting the noise.
Metric: r2 on the other 322 patients.

Known fix: alpha 0.1 -> 100.
"""

import joblib
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

from jobs import kit

SEED = 42
p = kit.params(alpha=0.1)

x, y = load_diabetes(return_X_y=True)
x_train, x_val, y_train, y_val = train_test_split(x, y, train_size=120, random_state=SEED)
model = make_pipeline(StandardScaler(), PolynomialFeatures(2), Ridge(alpha=p["alpha"]))
model.fit(x_train, y_train)

joblib.dump(model, kit.output_dir() / "model.joblib")
kit.report(r2=round(model.score(x_val, y_val), 4), examples=len(y_val))
