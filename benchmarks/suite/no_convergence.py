"""Wine (13 unscaled chemical measurements, 3 cultivars) with a logistic regression stopped
after 5 solver iterations: far from converged (scikit-learn says so with a ConvergenceWarning).

Known fix: max_iter 5 -> 50.
"""

import joblib
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from jobs import kit

SEED = 42
p = kit.params(C=1.0, max_iter=5)

x, y = load_wine(return_X_y=True)
x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, stratify=y, random_state=SEED)
model = LogisticRegression(C=p["C"], max_iter=p["max_iter"])
model.fit(x_train, y_train)

joblib.dump(model, kit.output_dir() / "model.joblib")
kit.report(accuracy=round(model.score(x_val, y_val), 4), examples=len(y_val))
