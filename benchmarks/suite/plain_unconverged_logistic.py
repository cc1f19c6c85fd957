"""Breast cancer with a logistic regression on the raw, unscaled measurements, stopped after 5
solver iterations: far from converged (scikit-learn warns). Written without pushtune; prints
`Accuracy: …` and pickles the classifier as clf.pkl.

Known fix: max_iter 5 -> 100.
"""

import joblib
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=3)

clf = LogisticRegression(max_iter=5)
clf.fit(X_train, y_train)
print(f"Accuracy: {clf.score(X_test, y_test):.4f}")
joblib.dump(clf, "clf.pkl")
