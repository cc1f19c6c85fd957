"""The form in which a version is served: its ONNX file (exported and checked in the attempt's
sandbox, jobs/autolog/to_onnx.py), else a Keras `.keras` file loaded in safe mode; anything else
(pickle, joblib, a whole torch object) is never loaded. Read by registration (which files a new
version keeps), by loading (jobs.deploy.loading) and by the listings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobs.autolog.to_onnx import ONNX_FILE, REPORT_FILE, SAMPLE_FILE
from jobs.train.metrics import is_regular_file


class NotServable(Exception):
    """A version with no form the server may load (the message says why)."""


def file_sha256(path: Path) -> str:
    """The file's sha256, read in blocks (a model file can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


REPORT_LIMIT = 64 << 10  # served.json is the attempt's: read as untrusted data, and only so much
NEVER_LOADED = "is never loaded by the server (loading it can run code)"


def served_file(record: Mapping[str, Any]) -> tuple[Path, str]:
    """(file, sha256) the server loads for a version: its ONNX file, else a Keras `.keras` file (in
    safe mode); NotServable otherwise. Versions registered before ONNX exports have none: only
    their `.keras` files serve."""
    if record.get("unservable"):
        raise NotServable(record["unservable"])
    if record.get("onnx_path"):
        return Path(record["onnx_path"]), record["onnx_sha256"]
    artifact = Path(record["artifact_path"])
    if artifact.suffix.lower() == ".keras":
        return artifact, record["sha256"]
    raise NotServable(f"no ONNX form, and a {artifact.suffix or 'extension-less'} file {NEVER_LOADED}")


def _export_report(output: Path) -> dict[str, Any]:
    path = output / REPORT_FILE
    try:
        if not is_regular_file(path) or path.stat().st_size > REPORT_LIMIT:
            return {}
        report = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def serving_files(artifact: Path) -> tuple[Path | None, Path | None, str | None]:
    """What the attempt left for serving its artifact: (its ONNX file, its input sample, why it has
    no form the server may load). The ONNX file counts only when the export's check passed."""
    output = artifact.parent
    sample = output / SAMPLE_FILE if is_regular_file(output / SAMPLE_FILE) else None
    if artifact.suffix.lower() == ".onnx":  # the script's own ONNX file: ONNX Runtime runs no code either
        return artifact, sample, None
    report = _export_report(output)
    if report.get("ok") is True and is_regular_file(output / ONNX_FILE):
        return output / ONNX_FILE, sample, None
    why = report.get("reason") if isinstance(report.get("reason"), str) else None
    why = " ".join((why or "the attempt left no ONNX export").split())[:300]
    if artifact.suffix.lower() == ".keras":
        return None, sample, None  # Keras in safe mode
    return None, sample, f"no ONNX form ({why}), and its {artifact.suffix or 'extension-less'} file {NEVER_LOADED}"
