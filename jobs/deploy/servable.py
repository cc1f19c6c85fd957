"""Promote only what serves: before a version becomes production, load it the way the server
does (`jobs.serve.load_version`: its ONNX file through ONNX Runtime, or its `.keras` file in safe
mode, after the sha256 check) and predict the input sample its attempt kept, in a subprocess
with an empty environment (no store URL, no mail or Jenkins secrets), bounded in time.

    check(record) -> None | "why it cannot serve"

`python -m jobs.servable RECORD_JSON` is that subprocess: one JSON line on stdout,
{"ok": true, "rows": N} or {"ok": false, "reason": "…"}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobs.autolog.to_onnx import SAMPLE_FILE
from jobs.paths import PROJECT_ROOT

CHECK_SECONDS = 300.0  # a Keras import alone takes seconds on a busy machine
FIELDS = ("name", "version", "sha256", "artifact_path", "onnx_path", "onnx_sha256", "unservable")


def check(record: Mapping[str, Any]) -> str | None:
    """None when the version loads as the server loads it and predicts its sample; else why not."""
    given = {key: record.get(key) for key in FIELDS}
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(PROJECT_ROOT),
                   "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory(prefix="pushtune-servable-") as home:
        environment["HOME"] = home
        try:
            done = subprocess.run([sys.executable, "-m", "jobs.servable", json.dumps(given)], cwd=home,
                                  env=environment, capture_output=True, text=True, timeout=CHECK_SECONDS)
        except subprocess.TimeoutExpired:
            return f"loading it and predicting its sample took more than {CHECK_SECONDS:g} s"
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if answer.get("ok") is True and done.returncode == 0:
        return None
    if isinstance(answer.get("reason"), str):
        return answer["reason"]
    last = (done.stderr.strip().splitlines() or ["no answer"])[-1]
    return f"the check ended with exit code {done.returncode}: {last[:300]}"


def _predict_sample(record: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from jobs.serve import LoadError, load_version

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
    answer = _predict_sample(json.loads(args[0]))
    print(json.dumps(answer), flush=True)
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
