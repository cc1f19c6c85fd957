"""Classify: which kind of model a pushed file is (CNN / ANN / regression, Keras / PyTorch /
scikit-learn), read statically from its source (AST) or its notebook cells; never executed.

Owns: classifier (files), notebook (.ipynb to script and back). Uses only jobs.errors: it must not
know how or where a model is trained (import-linter: classify may not import train, tune, store).
"""
