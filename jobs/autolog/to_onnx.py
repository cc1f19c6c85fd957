"""ONNX for the model an attempt trained, made inside the attempt (its container, or its
subprocess in the local runtime), never on the host.

At the end of a successful attempt the capture holds the model the framework saw trained last
(the live object: a PyTorch module saved only as a state_dict still exports) and a few rows of
the input it was trained on. This converts it (scikit-learn: skl2onnx; Keras:
`model.export(format="onnx")`, through tf2onnx; PyTorch: `torch.onnx.export`, batch dimension
dynamic), runs the ONNX file in ONNX Runtime on those rows and compares with the framework's own
predictions. It writes, beside the artifact:

    served.onnx          the model as ONNX (only when ONNX Runtime agrees with the framework)
    served-sample.npy    the input rows (a plain array: loaded with allow_pickle=False)
    served.json          {"ok": bool, "framework", "reason", "max_difference", "input": {shape, dtype},
                          "seconds", "python": the interpreter it ran in}

The server (`jobs.serve.server`) loads only the ONNX file (or a Keras file in safe mode), and promotion
first loads it in a sandbox and predicts the sample (`jobs.deploy.servable`). Everything here is what
the attempt left behind: the host reads it as untrusted data.
Standard library only at module level: this runs inside the attempt, in every image.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ONNX_FILE = "served.onnx"
SAMPLE_FILE = "served-sample.npy"
REPORT_FILE = "served.json"
SAMPLE_ROWS = 8  # of the training input, kept to check the export and, later, the served model
OPSET = 18
RTOL, ATOL = 1e-3, 1e-4  # float32 ONNX Runtime against the framework: kernels differ in rounding


class NotExported(Exception):
    """The model has no ONNX form here, with why (one line)."""


def sample_of(data: Any) -> Any:
    """The first SAMPLE_ROWS rows of a training input as a numeric NumPy array, or None (a
    dataset, a generator, a dict of inputs: nothing to sample without consuming it)."""
    try:
        # numpy only once the script's own libraries are in (the launcher imports none first)
        import numpy as np

        if isinstance(data, (tuple, dict)):
            return None
        rows = np.asarray(data[:SAMPLE_ROWS])
        if rows.dtype.kind not in "fiub" or rows.ndim < 2 or not len(rows):
            return None
        return np.array(rows, copy=True)
    except Exception:
        return None


def export(framework: str, model: Any, sample: Any, output: Path) -> dict[str, Any]:
    """Write served.onnx (when the check passes), served-sample.npy and served.json into
    `output`; the report. Never raises: a model that does not export is a report saying why."""
    started = time.perf_counter()
    report: dict[str, Any] = {"ok": False, "framework": framework, "file": None, "reason": None,
                              "python": sys.executable}  # where it ran: the image's interpreter, in Docker
    target = output / ONNX_FILE
    try:
        if model is None or sample is None:
            raise NotExported("no training input was seen (fit on a NumPy array or tensor to export it)"
                              if model is not None else "pushtune saw no trained model")
        # numpy only once the script's own libraries are in (the launcher imports none first)
        import numpy as np

        sample = np.asarray(sample)
        if sample.dtype.kind != "f" or sample.dtype != np.float32:
            sample = sample.astype(np.float32)
        np.save(output / SAMPLE_FILE, sample, allow_pickle=False)
        report["input"] = {"shape": [None, *sample.shape[1:]], "dtype": str(sample.dtype)}
        expected = EXPORTERS[framework](model, sample, target)
        got = _run_onnx(target, sample)
        report["max_difference"] = _compare(np.asarray(expected), np.asarray(got))
        report.update(ok=True, file=ONNX_FILE)
    except Exception as exc:
        report["reason"] = _one_line(exc) if not isinstance(exc, NotExported) else str(exc)
        try:
            target.unlink()
        except OSError:
            pass
    report["seconds"] = round(time.perf_counter() - started, 3)
    try:
        (output / REPORT_FILE).write_text(json.dumps(report))
    except OSError:
        pass
    return report


def _run_onnx(path: Path, sample: Any) -> Any:
    # heavy optional library (onnx/serve extra): only when an ONNX model is checked or loaded
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise NotExported(f"the ONNX model has {len(inputs)} inputs: only single-input models are served")
    return session.run(None, {inputs[0].name: sample})[0]


def _compare(expected: Any, got: Any) -> float:
    """The largest difference; NotExported when ONNX Runtime disagrees with the framework."""
    # numpy only once the script's own libraries are in (the launcher imports none first)
    import numpy as np

    if expected.shape != got.shape:
        expected = expected.reshape(got.shape) if expected.size == got.size else expected
    if expected.shape != got.shape:
        raise NotExported(f"ONNX Runtime answers shape {got.shape}, the framework {expected.shape}")
    if expected.dtype.kind in "fc" or got.dtype.kind in "fc":
        difference = float(np.max(np.abs(expected.astype(np.float64) - got.astype(np.float64)))) \
            if expected.size else 0.0
        if not np.allclose(expected, got, rtol=RTOL, atol=ATOL):
            raise NotExported(f"ONNX Runtime's predictions differ from the framework's by up to {difference:.3g}")
        return difference
    if not np.array_equal(expected, got):  # labels
        wrong = int(np.sum(expected != got))
        raise NotExported(f"ONNX Runtime's labels differ from the framework's on {wrong} of {len(got)} rows")
    return 0.0


def _sklearn(model: Any, sample: Any, target: Path) -> Any:
    # heavy optional library (onnx extra): only when a scikit-learn model is exported
    from skl2onnx import to_onnx

    onnx_model = to_onnx(model, sample[:1], target_opset={"": OPSET, "ai.onnx.ml": 3})
    target.write_bytes(onnx_model.SerializeToString())
    return model.predict(sample)


def _keras(model: Any, sample: Any, target: Path) -> Any:
    # numpy only once the script's own libraries are in (the launcher imports none first)
    import numpy as np

    with contextlib.redirect_stdout(io.StringIO()):  # tf2onnx prints its progress
        model.export(str(target), format="onnx", verbose=False)
    return np.asarray(model(sample, training=False))


def _pytorch(model: Any, sample: Any, target: Path) -> Any:
    # torch: the script's framework, imported only when the script uses it
    import torch

    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        example = torch.from_numpy(sample).to(device)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = model(example)
            torch.onnx.export(model, (example,), str(target), dynamo=False, input_names=["input"],
                              output_names=["output"], opset_version=OPSET,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    finally:
        model.train(was_training)
    if not isinstance(expected, torch.Tensor):
        raise NotExported(f"the module returns a {type(expected).__name__}, not a tensor")
    return expected.detach().cpu().numpy()


EXPORTERS = {"sklearn": _sklearn, "keras": _keras, "pytorch": _pytorch}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:400] if text else type(exc).__name__
