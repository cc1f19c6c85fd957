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
import stat
from pathlib import Path
from typing import BinaryIO

from jobs.objective import Objective

_LINE = re.compile(r"^\s*([A-Za-z_][\w.\- ]*?)\s*[:=]\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
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


def read_metrics(output_dir: Path, log_path: Path | None, metric: str) -> tuple[dict, str | None]:
    """Returns (everything reported, the reason the gated metric is missing or None)."""
    data, problem = _script_file(output_dir / "metrics.json")
    if problem:
        return {}, problem
    if data is not None:
        try:
            reported = json.loads(data)
        except RecursionError:
            return {}, "metrics.json is not valid JSON: nested too deeply"
        except ValueError as exc:
            return {}, f"metrics.json is not valid JSON: {exc}"
        if not isinstance(reported, dict):
            return {}, "metrics.json is not a JSON object"
        numbers = _finite_numbers(reported)
        for name, value in numbers.items():
            if problem := out_of_range(name, value):
                return reported, f"metrics.json: {problem}"
        if metric not in numbers:
            return reported, f"metrics.json has no finite number {metric!r}"
        return {**reported, metric: numbers[metric]}, None

    if metric == "accuracy":
        data, problem = _script_file(output_dir / "accuracy.txt")
        if problem:
            return {}, problem
        if data is not None:
            text = data.decode("utf-8", errors="replace").strip()
            try:
                value = float(text)
            except ValueError:
                return {}, f"accuracy.txt does not hold a number: {text[:40]!r}"
            if not math.isfinite(value):
                return {}, "accuracy.txt does not hold a finite number"
            if problem := out_of_range("accuracy", value):
                return {"accuracy": value}, f"accuracy.txt: {problem}"
            return {"accuracy": value}, None

    last = _last_line(log_path)
    match = _LINE.match(last) if last else None
    if match and match.group(1).strip().lower() == metric.lower():
        value = float(match.group(2))
        if math.isfinite(value):
            if problem := out_of_range(metric, value):
                return {metric: value}, f"last line of the log: {problem}"
            return {metric: value}, None
    return {}, f"the script reported no {metric!r} (metrics.json, accuracy.txt or a last line '{metric}: N')"


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


def _last_line(log_path: Path | None) -> str | None:
    try:
        text, cut = _read_end(log_path, LOG_TAIL_BYTES) if log_path else ("", False)
    except OSError:
        return None
    lines = text.splitlines()[1 if cut else 0:]
    lines = [line for line in lines if line.strip() and not line.startswith("[pushtune]")]
    return lines[-1] if lines else None


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
    """`Objective(…, mode, threshold).meets(value)` (jobs.objective), kept for
    benchmarks/bench_tuning.py; pushtune itself asks the run's Objective."""
    return Objective("", mode, threshold).meets(value)
