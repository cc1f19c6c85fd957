"""Loading a model version the way it is served: its ONNX file through ONNX Runtime, or its
`.keras` file with `safe_mode=True`, after its sha256 matches the record; never a pickle, joblib
or `torch.load` of a whole object. The server (jobs.serve.server) and the promotion check
(jobs.deploy.servable) both load through `load_version`, so what is promoted is what serves.
"""

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jobs.autolog.to_onnx import SAMPLE_FILE
from jobs.deploy.served_form import NotServable, file_sha256, served_file

FRAMEWORKS = {".onnx": "onnx", ".keras": "keras"}  # the forms that load without running code
ONNX_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32}


class LoadError(Exception):
    """A version that cannot be served; `kind` is "sha256" (the file does not match its record),
    "missing", "unservable" (it has no safe form) or "load"."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


@dataclass(frozen=True)
class Loaded:
    """One loaded version: what it needs to predict, and nothing that changes."""

    name: str
    version: int
    sha256: str
    path: Path
    framework: str
    predict: Callable[[np.ndarray], Any]
    input_shape: tuple[int | None, ...] | None  # one instance's, when the model tells
    dtype: Any
    loaded_at: float = field(default_factory=time.time)


def load_version(name: str, record: Mapping[str, Any]) -> Loaded:
    """Check the file the version serves (its ONNX file, else its `.keras` file) against its
    recorded sha256, load it, and call it once on zeros of its input shape (so the first request
    pays no tracing); LoadError says why it cannot serve."""
    version = record["version"]
    try:
        path, sha256 = served_file(record)
    except NotServable as exc:
        raise LoadError("unservable", f"v{version} is not servable: {exc}") from None
    if not path.is_file():
        raise LoadError("missing", f"v{version}: its model file {path.name} is missing")
    found = file_sha256(path)
    if found != sha256:
        raise LoadError("sha256", f"v{version} refused: {path.name} has sha256 {found[:12]}…, its record says "
                                  f"{sha256[:12]}… (changed or damaged since it was registered)")
    framework = FRAMEWORKS.get(path.suffix.lower())
    if framework is None:
        raise LoadError("unservable", f"v{version}: {path.name} is not a form the server loads (ONNX, .keras)")
    try:
        predict, shape, dtype = LOADERS[framework](path)
    except LoadError:
        raise
    except Exception as exc:  # whatever the runtime raises for a file it cannot read
        raise LoadError("load", f"v{version}: {framework} cannot load {path.name}: {one_line(exc)}") from None
    if shape is not None and all(isinstance(d, int) for d in shape):
        try:
            predict(np.zeros((1, *shape), dtype=dtype))
        except Exception as exc:
            raise LoadError("load", f"v{version}: {path.name} fails on an input of its own shape "
                                    f"{shape_text(shape)}: {one_line(exc)}") from None
    return Loaded(name, version, record["sha256"], path, framework, predict, shape, dtype)


def _load_onnx(path: Path):
    # heavy optional library (onnx/serve extra): only when an ONNX model is checked or loaded
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise LoadError("load", f"{path.name} has {len(inputs)} inputs: only single-input models are served")
    given = inputs[0]
    dtype = ONNX_TYPES.get(given.type)
    if dtype is None:
        raise LoadError("load", f"{path.name} takes {given.type}: only numeric tensors are served")
    shape = tuple(d if isinstance(d, int) else None for d in given.shape[1:]) if given.shape else None
    first = [session.get_outputs()[0].name]  # labels for a classifier, not its probabilities too

    def predict(x: np.ndarray):
        return session.run(first, {given.name: x})[0]

    return predict, shape, dtype


def _load_keras(path: Path):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # heavy optional library (keras extra): TensorFlow only when a Keras model is loaded
    import keras

    model = keras.models.load_model(path, compile=False, safe_mode=True)  # no lambdas: no code
    shape = model.input_shape
    if isinstance(shape, list):
        if len(shape) != 1:
            raise LoadError("load", f"{path.name} has {len(shape)} inputs: only single-input models are served")
        shape = shape[0]
    instance = tuple(shape[1:]) if shape else None

    def predict(x: np.ndarray):
        return np.asarray(model(x, training=False))

    return predict, instance, np.float32


LOADERS = {"onnx": _load_onnx, "keras": _load_keras}


def shape_text(shape) -> str:
    return "(" + ", ".join("n" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"



def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:400] if text else type(exc).__name__


def predict_sample(record: dict[str, Any]) -> dict[str, Any]:
    """Load the version as the server does and predict the input sample its attempt kept: the
    promotion check (jobs.deploy.servable runs this in a sandboxed subprocess)."""
    try:
        loaded = load_version(record["name"], record)
    except LoadError as exc:
        return {"ok": False, "reason": exc.reason}
    sample_path = Path(record["artifact_path"]).parent / SAMPLE_FILE
    if not sample_path.is_file():
        if loaded.input_shape is not None and all(isinstance(d, int) for d in loaded.input_shape):
            return {"ok": True, "rows": 1, "note": "no input sample: checked on zeros of its input shape"}
        return {"ok": False, "reason": "no input sample was kept and its input shape is not fully known"}
    try:
        sample = np.load(sample_path, allow_pickle=False).astype(loaded.dtype)
        result = np.asarray(loaded.predict(sample))
    except Exception as exc:
        return {"ok": False, "reason": f"v{record['version']} fails on its input sample: "
                                       f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    if result.shape[:1] != sample.shape[:1]:
        return {"ok": False, "reason": f"v{record['version']} answers {result.shape[:1]} predictions "
                                       f"for {len(sample)} instances"}
    return {"ok": True, "rows": int(len(sample))}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    answer = predict_sample(json.loads(args[0]))
    print(json.dumps(answer), flush=True)
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
