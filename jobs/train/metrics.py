"""Reading what a model script reported, in the forms the contract accepts.

In order: `$PUSHTUNE_OUTPUT/metrics.json` (a JSON object), `accuracy.txt` holding a number (for
scripts written for the old recipe), or a last stdout line such as `accuracy: 0.91`.

The script may be hostile, and whatever it leaves in its output directory is read by pushtune on
the host: `read_output` follows no symbolic link (a container could point one at a host file),
opens only regular files without blocking (a FIFO would wait forever) and reads a bounded size.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from jobs.autolog import CAPTURE_FILE, lines
from jobs.tune.objective import Objective

ARTIFACT_NAMES = ("model.keras", "model.h5", "model.joblib", "model.pkl", "model.pt", "model.onnx")
OUTPUT_LIMIT = 1 << 20  # metrics.json, accuracy.txt, progress.json
CURVE_LIMIT = 16 << 20  # history.json: thousands of epochs of a dozen metrics
LOG_TAIL_BYTES = 64 << 10  # what of log.txt goes into the store; the whole log stays in the file

# Metrics with a known range, by name (case-insensitive; `val_`, `test_`, `train_` twins and
# scikit-learn's averaging suffixes included). A value outside it is a bug in the script.
_PREFIX = r"(?:(?:val|valid|validation|test|train|training)_)?"
_SUFFIX = r"(?:_(?:macro|micro|weighted|samples|binary|ovr|ovo))?(?:_\d+)?"
RANGES = (
    (re.compile(_PREFIX + r"(?:[a-z0-9_]*accuracy|acc|precision|recall|f1|f1_score|[a-z_]*auc|roc_auc_score"
                          r"|average_precision|sensitivity|specificity)" + _SUFFIX), 0.0, 1.0, "[0, 1]"),
    (re.compile(_PREFIX + r"(?:mse|mae|rmse|msle|mape|log_loss|mean_squared_error|mean_absolute_error"
                          r"|root_mean_squared_error|mean_absolute_percentage_error)" + _SUFFIX),
     0.0, math.inf, "[0, ∞)"),
)


class UnsafeOutput(OSError):
    """A file of the output directory that pushtune will not read: a link, not a regular file, too big."""


def _open_output(path: Path) -> BinaryIO:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeOutput(f"{path.name} is a symbolic link (not followed)") from None
        raise
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise UnsafeOutput(f"{path.name} is not a regular file")
    return handle


def read_output(path: Path, limit: int = OUTPUT_LIMIT) -> bytes:
    """The content of a file the script wrote: FileNotFoundError when there is none, UnsafeOutput
    (saying why, never what it holds) for a link, a FIFO or other non-regular file, or over `limit` bytes."""
    with _open_output(path) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UnsafeOutput(f"{path.name} is larger than {limit} bytes")
    return data


def copy_output(path: Path, dest: Path, limit: int) -> None:
    """Copy a file the script wrote to `dest`, with `read_output`'s refusals, without reading it
    into memory: UnsafeOutput for a link, a FIFO, another non-regular file, or over `limit` bytes."""
    with _open_output(path) as handle:
        if os.fstat(handle.fileno()).st_size > limit:
            raise UnsafeOutput(f"{path.name} is larger than {limit} bytes")
        with open(dest, "xb") as out:
            shutil.copyfileobj(handle, out)


def read_json_output(path: Path, limit: int = OUTPUT_LIMIT):
    """`read_output` parsed as JSON; ValueError (also for nesting too deep to parse) when it is not."""
    try:
        return json.loads(read_output(path, limit))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def is_regular_file(path: Path) -> bool:
    """Whether the path is a regular file itself (a link to one is not)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def out_of_range(name: str, value: float) -> str | None:
    """Why a reported value cannot be what its name says (e.g. an accuracy of 5), or None."""
    for pattern, low, high, shown in RANGES:
        if pattern.fullmatch(name.lower()) and not low <= value <= high:
            return f"{name} = {value:g} is outside its range {shown}"
    return None


def _finite_numbers(values: dict) -> dict[str, float]:
    numbers = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        try:
            number = float(value)  # an int too big for a float is no usable metric
        except OverflowError:
            continue
        if math.isfinite(number):
            numbers[str(key)] = number
    return numbers


def _script_file(path: Path) -> tuple[bytes | None, str | None]:
    """(its bytes, None); (None, None) when the script wrote no such file; (None, why) when it
    wrote one pushtune will not or cannot read."""
    try:
        return read_output(path), None
    except FileNotFoundError:
        return None, None
    except UnsafeOutput as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"{path.name} cannot be read: {exc.strerror}"


@dataclass
class MetricReading:
    metrics: dict  # everything the script reported that pushtune read
    missing: str | None  # why the gated metric is missing, or None
    source: str | None = None  # where the gated metric came from, in words


def read_metrics(output_dir: Path, log_path: Path | None, metric: str) -> tuple[dict, str | None]:
    """Returns (everything reported, the reason the gated metric is missing or None)."""
    reading = read_metric(output_dir, log_path, metric)
    return reading.metrics, reading.missing


def read_metric(output_dir: Path, log_path: Path | None, metric: str,
                capture: dict | None = None) -> MetricReading:
    """The gated metric and where it came from, in the order of this module's docstring.
    `capture` is the attempt's `read_capture`, None when it ran without one."""
    data, problem = _script_file(output_dir / "metrics.json")
    if problem:
        return MetricReading({}, problem)
    if data is not None:
        return _from_metrics_json(data, metric)
    if metric == "accuracy":
        data, problem = _script_file(output_dir / "accuracy.txt")
        if problem:
            return MetricReading({}, problem)
        if data is not None:
            return _from_accuracy_txt(data)
    if capture is not None:
        return _from_capture(capture, metric)
    return _from_log(log_path, metric)


def _from_metrics_json(data: bytes, metric: str) -> MetricReading:
    try:
        reported = json.loads(data)
    except RecursionError:
        return MetricReading({}, "metrics.json is not valid JSON: nested too deeply")
    except ValueError as exc:
        return MetricReading({}, f"metrics.json is not valid JSON: {exc}")
    if not isinstance(reported, dict):
        return MetricReading({}, "metrics.json is not a JSON object")
    numbers = _finite_numbers(reported)
    for name, value in numbers.items():
        if problem := out_of_range(name, value):
            return MetricReading(reported, f"metrics.json: {problem}")
    if metric not in numbers:
        return MetricReading(reported, f"metrics.json has no finite number {metric!r}")
    return MetricReading({**reported, metric: numbers[metric]}, None, f"{metric} from metrics.json")


def _from_accuracy_txt(data: bytes) -> MetricReading:
    text = data.decode("utf-8", errors="replace").strip()
    try:
        value = float(text)
    except ValueError:
        return MetricReading({}, f"accuracy.txt does not hold a number: {text[:40]!r}")
    if not math.isfinite(value):
        return MetricReading({}, "accuracy.txt does not hold a finite number")
    if problem := out_of_range("accuracy", value):
        return MetricReading({"accuracy": value}, f"accuracy.txt: {problem}")
    return MetricReading({"accuracy": value}, None, "accuracy from accuracy.txt")


def _checked(metric: str, value: float, source: str, where: str) -> MetricReading:
    if problem := out_of_range(metric, value):
        return MetricReading({metric: value}, f"{where}: {problem}")
    return MetricReading({metric: value}, None, source)


def _at(line: object) -> str:
    return f" at line {line}" if isinstance(line, int) else ""


def _from_capture(capture: dict, metric: str) -> MetricReading:
    calls = [c for c in capture["metrics"] if lines.matches(c["name"], metric)]
    if calls:
        call = calls[-1]
        return _checked(metric, call["value"], f"{metric} from {call['source']}{_at(call['line'])}", call["source"])
    printed = lines.last_printed([(p["label"], p["value"], p["line"]) for p in capture["printed"]], metric)
    if printed:
        label, value, line = printed
        return _checked(metric, value, f"{metric} printed as {label!r}{_at(line)}", f"printed {label!r}")
    seen = sorted({c["name"] for c in capture["metrics"]} | {p["label"] for p in capture["printed"]})
    told = f"; it reported {', '.join(seen[:8])}" if seen else ""
    if not capture["frameworks"]:
        told += "; it trained nothing pushtune saw (no Keras fit, PyTorch optimizer step or scikit-learn fit)"
    return MetricReading({}, f"the script reported no {metric!r}: no metrics.json, no evaluate()/score()/"
                             f"{metric} call and no printed {metric!r} line{told}")


def _from_log(log_path: Path | None, metric: str) -> MetricReading:
    found: list[tuple[str, float, int | None]] = [
        (label, value, None) for text in _log_lines(log_path) for label, value in lines.pairs(text)]
    printed = lines.last_printed(found, metric)
    if printed:
        label, value, _ = printed
        return _checked(metric, value, f"{metric} printed as {label!r} (read from the log)", "printed in the log")
    return MetricReading({}, f"the script reported no {metric!r} (metrics.json, accuracy.txt or a printed "
                             f"line such as '{metric}: N')")


def read_capture(output_dir: Path) -> dict | None:
    """autolog.json as the launcher's capture wrote it (None when the attempt ran without one, or
    it cannot be read). The script could have written it too: only the expected keys are kept,
    each of its expected type, strings and lists cut short."""
    try:
        raw = read_json_output(output_dir / CAPTURE_FILE)
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None

    def entries(key: str, fields: dict[str, type]) -> list[dict]:
        kept = []
        listed = raw.get(key)
        for entry in listed if isinstance(listed, list) else []:
            if isinstance(entry, dict):
                clean = {name: _plain_value(entry.get(name), kind) for name, kind in fields.items()}
                if None not in (clean.get("value", 0), clean.get("name", ""), clean.get("label", "")):
                    kept.append(clean)
        return kept[-MAX_CAPTURED:]

    given = raw.get("artifact")
    artifact: dict = given if isinstance(given, dict) else {}
    return {
        "frameworks": [f[:40] for f in raw.get("frameworks") or [] if isinstance(f, str)][:10]
        if isinstance(raw.get("frameworks"), list) else [],
        "metrics": entries("metrics", {"name": str, "value": float, "source": str, "line": int}),
        "printed": entries("printed", {"label": str, "value": float, "line": int}),
        "training": _plain_tree(raw.get("training"), 3) if isinstance(raw.get("training"), dict) else {},
        "notes": _plain_tree(raw.get("notes"), 3) if isinstance(raw.get("notes"), dict) else {},
        "artifact": {"file": _plain_value(artifact.get("file"), str), "how": _plain_value(artifact.get("how"), str)}
        if artifact.get("file") else None,
        "warnings": [w[:MAX_TEXT] for w in raw.get("warnings") or [] if isinstance(w, str)][:5]
        if isinstance(raw.get("warnings"), list) else [],
    }


def captured(attempt: dict, *keys: str):
    """What the launcher's capture recorded for the attempt under `keys` (None when not)."""
    value = attempt.get("capture")
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


MAX_CAPTURED = 50  # entries of each list kept from autolog.json
MAX_TEXT = 200


def _plain_value(value: object, kind: type):
    """`value` if it is of `kind` (a finite float for float, ints accepted; text cut short), else None."""
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value[:MAX_TEXT]
    return None


def _plain_tree(value: object, depth: int):
    """Plain JSON of bounded depth, width and text: numbers (finite), text, booleans, None."""
    if isinstance(value, dict) and depth > 0:
        return {str(k)[:60]: _plain_tree(v, depth - 1) for k, v in list(value.items())[:MAX_CAPTURED]}
    if isinstance(value, list) and depth > 0:
        return [_plain_tree(v, depth - 1) for v in value[:MAX_CAPTURED]]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[:MAX_TEXT]
    return None


def read_curve(output_dir: Path) -> dict | None:
    """The per-epoch training curve the kit's callbacks wrote (history.json), when there is one:
    {"epochs": N, "steps": S, "history": [{"epoch": 1, "loss": …, "val_accuracy": …}, …]}."""
    try:
        curve = read_json_output(output_dir / "history.json", CURVE_LIMIT)
    except (OSError, ValueError):
        return None
    if not isinstance(curve, dict) or not isinstance(curve.get("history"), list):
        return None
    return curve


def _read_end(path: Path, limit: int) -> tuple[str, bool]:
    """The text of the file's last `limit` bytes, and whether that cut it (its first line may
    then be a part of one). Never reads more, however big the file."""
    with _open_output(path) as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(size - limit, 0))
        return handle.read(limit).decode("utf-8", errors="replace"), size > limit


def _log_lines(log_path: Path | None) -> list[str]:
    """The log's lines from its last LOG_TAIL_BYTES (a cut first line left out), pushtune's own
    notes left out."""
    try:
        text, cut = _read_end(log_path, LOG_TAIL_BYTES) if log_path else ("", False)
    except OSError:
        return []
    return [line for line in text.splitlines()[1 if cut else 0:] if not line.startswith("[pushtune]")]


def find_artifact(output_dir: Path) -> Path | None:
    for name in ARTIFACT_NAMES:
        if is_regular_file(output_dir / name):
            return output_dir / name
    return None


# A terminal escape: CSI (colours, cursor moves), OSC (titles, links) or a two-character one.
_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-_])")


def as_plain_line(line: str) -> str:
    """A line of terminal output as the terminal ended up showing it: without colour and cursor
    escapes, each backspace taking back a character, only what follows the last carriage return
    (a progress bar redrawn in place is its last state)."""
    line = _ESCAPE.sub("", line).rstrip("\r").rsplit("\r", 1)[-1]
    shown: list[str] = []
    for char in line:
        if char == "\b":
            if shown:
                shown.pop()
        else:
            shown.append(char)
    return "".join(shown)


def log_tail(log_path: Path, lines: int = 15, limit: int = LOG_TAIL_BYTES) -> str:
    """The log's last `lines` lines as plain text (`as_plain_line`), from at most its last `limit`
    bytes ("…" marks a line cut short)."""
    try:
        text, cut = _read_end(log_path, limit)
    except OSError:
        return ""
    all_lines = text.split("\n")
    if all_lines and all_lines[-1] == "":
        all_lines.pop()
    kept = [as_plain_line(line) for line in all_lines[-lines:]]
    if cut and kept and len(kept) == len(all_lines):
        kept[0] = "…" + kept[0]
    return "\n".join(kept)


def meets(value: float | None, threshold: float, mode: str) -> bool:
    """`Objective(…, mode, threshold).meets(value)` (jobs.tune.objective), kept for
    benchmarks/bench_tuning.py; pushtune itself asks the run's Objective."""
    return Objective("", mode, threshold).meets(value)
