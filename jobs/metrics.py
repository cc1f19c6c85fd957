"""Reading what a model script reported, in the forms the contract accepts.

In order: `$PUSHTUNE_OUTPUT/metrics.json` (a JSON object), `accuracy.txt` holding a number (for
scripts written for the old recipe), or a last stdout line such as `accuracy: 0.91`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

_LINE = re.compile(r"^\s*([A-Za-z_][\w.\- ]*?)\s*[:=]\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
ARTIFACT_NAMES = ("model.keras", "model.h5", "model.joblib", "model.pkl", "model.pt", "model.onnx")


def _finite_numbers(values: dict) -> dict[str, float]:
    numbers = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            numbers[str(key)] = float(value)
    return numbers


def read_metrics(output_dir: Path, log_path: Path | None, metric: str) -> tuple[dict, str | None]:
    """Returns (everything reported, the reason the gated metric is missing or None)."""
    metrics_file = output_dir / "metrics.json"
    if metrics_file.exists():
        try:
            reported = json.loads(metrics_file.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            return {}, f"metrics.json is not valid JSON: {exc}"
        if not isinstance(reported, dict):
            return {}, "metrics.json is not a JSON object"
        numbers = _finite_numbers(reported)
        if metric not in numbers:
            return reported, f"metrics.json has no finite number {metric!r}"
        return {**reported, metric: numbers[metric]}, None

    if metric == "accuracy" and (output_dir / "accuracy.txt").exists():
        text = (output_dir / "accuracy.txt").read_text(encoding="utf-8", errors="replace").strip()
        try:
            value = float(text)
        except ValueError:
            return {}, f"accuracy.txt does not hold a number: {text[:40]!r}"
        if math.isfinite(value):
            return {"accuracy": value}, None
        return {}, "accuracy.txt does not hold a finite number"

    last = _last_line(log_path)
    match = _LINE.match(last) if last else None
    if match and match.group(1).strip().lower() == metric.lower():
        value = float(match.group(2))
        if math.isfinite(value):
            return {metric: value}, None
    return {}, f"the script reported no {metric!r} (metrics.json, accuracy.txt or a last line '{metric}: N')"


def read_curve(output_dir: Path) -> dict | None:
    """The per-epoch training curve the kit's callbacks wrote (history.json), when there is one:
    {"epochs": N, "steps": S, "history": [{"epoch": 1, "loss": …, "val_accuracy": …}, …]}."""
    try:
        curve = json.loads((output_dir / "history.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(curve, dict) or not isinstance(curve.get("history"), list):
        return None
    return curve


def _last_line(log_path: Path | None) -> str | None:
    if log_path is None or not log_path.exists():
        return None
    lines = [line for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("[pushtune]")]
    return lines[-1] if lines else None


def find_artifact(output_dir: Path) -> Path | None:
    for name in ARTIFACT_NAMES:
        if (output_dir / name).is_file():
            return output_dir / name
    return None


def log_tail(log_path: Path, lines: int = 15) -> str:
    if not log_path.exists():
        return ""
    text = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def is_better(value: float, than: float | None, mode: str) -> bool:
    if than is None:
        return True
    return value > than if mode == "max" else value < than


def best_attempt(attempts: list[dict], mode: str) -> dict | None:
    """The succeeded attempt with the best metric (the first of equals), or None."""
    best = None
    for attempt in attempts:
        if attempt["status"] == "ok" and attempt["metric_value"] is not None:
            if best is None or is_better(attempt["metric_value"], best["metric_value"], mode):
                best = attempt
    return best


def meets(value: float | None, threshold: float, mode: str) -> bool:
    if value is None:
        return False
    return value >= threshold if mode == "max" else value <= threshold
