"""Promote only what serves: before a version becomes production, load it the way the server
does (`jobs.deploy.loading.load_version`: its ONNX file through ONNX Runtime, or its `.keras` file in safe
mode, after the sha256 check) and predict the input sample its attempt kept, in a subprocess
with an empty environment (no store URL, no mail or Jenkins secrets), bounded in time.

    check(record) -> None | "why it cannot serve"

The subprocess is `python -m jobs.deploy.loading RECORD_JSON` (one JSON line on stdout, {"ok": true,
"rows": N} or {"ok": false, "reason": "…"}); this side imports no model library.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

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
            done = subprocess.run([sys.executable, "-m", "jobs.deploy.loading", json.dumps(given)], cwd=home,
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
