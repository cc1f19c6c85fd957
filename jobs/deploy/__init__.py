"""Deploy: model versions (register, promote, roll back, retrain source) and whether a version is
servable: its safe form (ONNX, or Keras in safe mode) is loaded and predicts its sample, in a
sandboxed subprocess, before it is ever promoted.

Uses: store, train (image tags) and jobs.autolog.to_onnx's export report.
"""
