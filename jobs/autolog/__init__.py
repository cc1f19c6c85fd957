"""Capture for scripts as people write them: the curve, the metric and the model, without a
changed line.

The launcher (`jobs.launch`) makes one `Capture` per attempt and calls `install`, which hooks the
frameworks a script may import (`jobs.autolog.hooks`): each framework's module is imported, and
its patches applied, only when the script imports the framework. What they see goes into
`$PUSHTUNE_OUTPUT/autolog.json`, which pushtune reads on the host like every other file the
script leaves: as untrusted data.

autolog.json:
    {"frameworks": ["keras"],                      # the frameworks the script trained with
     "metrics": [{"name": "accuracy", "value": 0.97, "source": "model.evaluate()", "line": 20}, …],
     "printed": [{"label": "Test accuracy", "value": 0.97, "line": 21}, …],  # stdout metric lines
     "saved": [{"path": "face.h5", "call": "model.save()", "line": 30, "model": true}, …],
     "training": {"keras": {"epochs": 5, "batch_size": 32, …}},
     "artifact": {"file": "model.h5", "how": "saved by the script as face.h5 (line 30)"},
     "warnings": ["WARNING: VGG16 imagenet weights unavailable (…); TRAINING FROM RANDOM WEIGHTS"],
     "notes": {…},                                 # framework-specific findings (scikit-learn's fit)
     "onnx": {"ok": true, "reason": null, "seconds": 0.6}}  # the export the server loads (to_onnx.py)

Every patch keeps mlflow's promise (safe_patch): the original is called exactly once, whatever
happens around it, and a failure of the capture is one line on stderr, never the script's.
Standard library only at module level: this runs inside the attempt, in every image.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from jobs.autolog import hooks, lines, to_onnx

CAPTURE_FILE = "autolog.json"
ARTIFACT_NAMES = ("model.keras", "model.h5", "model.joblib", "model.pkl", "model.pt", "model.onnx")
# A model saved under the script's own name becomes the attempt's artifact under the known one.
ARTIFACT_BY_SUFFIX = {".keras": "model.keras", ".h5": "model.h5", ".hdf5": "model.h5",
                      ".joblib": "model.joblib", ".pkl": "model.pkl", ".pickle": "model.pkl",
                      ".sav": "model.pkl", ".pt": "model.pt", ".pth": "model.pt", ".onnx": "model.onnx"}
WRITE_INTERVAL = 1.0  # seconds between two writes of autolog.json while the script runs
MAX_ENTRIES = 200  # of each list: a script evaluating in a loop must not grow the file without end
MAX_WARNINGS = 5  # of the script's own warning lines kept
SAVED_MODEL_LIMIT = 4 << 30


def warn(message: str) -> None:
    print(f"[pushtune] autolog: {message}", file=sys.stderr, flush=True)


@dataclass
class Trained:
    """The model a framework saw trained last, and how to save it when the script does not."""

    framework: str
    how: str  # "the last fitted Keras model"
    line: int | None
    save: Callable[[Path], Path]  # into the output directory; returns the file written
    model: Any = None
    sample: Any = None  # a few rows of the input it was trained on (to_onnx.sample_of)


class Capture:
    """What one attempt's script did, as the framework patches see it."""

    def __init__(self, output: Path, script: Path):
        self.output = output
        self.script = os.path.realpath(script)
        self.data: dict[str, Any] = {"frameworks": [], "metrics": [], "printed": [], "saved": [],
                                     "training": {}, "artifact": None, "notes": {}, "warnings": []}
        self.trained: Trained | None = None
        self.kit_used = False  # the script calls the kit itself: its curve and checkpoints are its own
        self._lock = threading.RLock()
        self._stdout: _LineWatcher | None = None
        self._stderr: _LineWatcher | None = None
        self._at_finish: list[Callable[[], None]] = []
        self._written_at = -WRITE_INTERVAL

    # --- where a call came from ---------------------------------------------------------------

    def script_frame(self, depth: int = 2) -> FrameType | None:
        """The frame of the script that called the patched function `depth` frames up, or None
        when the caller is not the script (a library calling it, e.g. fit calling evaluate)."""
        frame: FrameType | None = sys._getframe(depth)
        if frame is not None and os.path.realpath(frame.f_code.co_filename) == self.script:
            return frame
        return None

    def script_line(self) -> int | None:
        """The line of the script the current call stack passes through last (innermost)."""
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            if os.path.realpath(frame.f_code.co_filename) == self.script:
                return frame.f_lineno
            frame = frame.f_back
        return None

    # --- what the patches record --------------------------------------------------------------

    def framework(self, name: str) -> None:
        with self._lock:
            if name not in self.data["frameworks"]:
                self.data["frameworks"].append(name)
                self.write()

    def metric(self, name: str, value: Any, source: str, line: int | None) -> None:
        """A metric the script computed with a framework call (`source`: "model.evaluate()")."""
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return
        self._append("metrics", {"name": name, "value": number, "source": source, "line": line})

    def saved(self, path: str | os.PathLike, call: str, *, model: bool, line: int | None) -> None:
        """A file the script saved (`model`: what it saved is a trained model, not a scaler)."""
        self._append("saved", {"path": os.path.abspath(os.fspath(path)), "call": call,
                               "line": line, "model": model})

    def trained_model(self, trained: Trained) -> None:
        with self._lock:
            self.trained = trained

    def training(self, framework: str, **values: Any) -> None:
        with self._lock:
            self.data["training"].setdefault(framework, {}).update(values)
            self.write()

    def note(self, key: str, value: Any) -> None:
        with self._lock:
            self.data["notes"][key] = value
            self.write()

    def _append(self, key: str, entry: dict) -> None:
        with self._lock:
            entries = self.data[key]
            entries.append(entry)
            del entries[:-MAX_ENTRIES]
            self.write()

    # --- stdout ----------------------------------------------------------------------------------

    def watch_output(self) -> None:
        """Read metric lines from what the script prints on stdout (never stderr, where warnings
        go), in the order it printed them; and the warnings the script itself writes to stderr
        (`WARNING: …` lines of its own code, not of the libraries it calls)."""
        self._stdout = _LineWatcher(sys.stdout, self._printed)
        self._stderr = _LineWatcher(sys.stderr, self._warned)
        sys.stdout, sys.stderr = self._stdout, self._stderr

    def _warned(self, text: str) -> None:
        if not text.lstrip().upper().startswith("WARNING"):
            return
        caller = sys._getframe(2)  # _warned ← _LineWatcher.write ← the writer (print is C code)
        if os.path.realpath(caller.f_code.co_filename) == self.script:
            warned = self.data["warnings"]
            if text.strip() not in warned and len(warned) < MAX_WARNINGS:
                warned.append(text.strip()[:lines.MAX_LINE])
                self.write()

    def _printed(self, text: str) -> None:
        found = lines.pairs(text)
        if found:
            line = self.script_line()
            for label, value in found:
                self._append("printed", {"label": label, "value": value, "line": line})

    # --- the end ---------------------------------------------------------------------------------

    def at_finish(self, step: Callable[[], None]) -> None:
        """Run `step` when the script has ended, before the artifact is chosen (a framework
        writes what it still holds, e.g. the last epochs of a curve written every few epochs)."""
        self._at_finish.append(step)

    def finish(self, succeeded: bool) -> None:
        """After the script: make sure a script that trained a model leaves it as the attempt's
        artifact, then write autolog.json for the last time."""
        for watcher, name in ((self._stdout, "stdout"), (self._stderr, "stderr")):
            if watcher is not None:
                watcher.flush_pending()
                if getattr(sys, name) is watcher:
                    setattr(sys, name, watcher.wrapped)
        for step in self._at_finish:
            step()
        try:
            if succeeded:
                self.data["artifact"] = self._artifact()
        except Exception as exc:  # the script's result stands without an artifact
            warn(f"could not keep the trained model: {type(exc).__name__}: {exc}")
        if succeeded and self.data["artifact"] is not None:
            self._export_onnx()
        self.write(now=True)

    def _export_onnx(self) -> None:
        """The trained model as ONNX, checked against the framework (jobs.autolog.to_onnx): the
        only form of it the server loads, made here, in the attempt's sandbox."""
        trained = self.trained
        if trained is None:
            report = to_onnx.export("unknown", None, None, self.output)
        else:
            report = to_onnx.export(trained.framework, trained.model, trained.sample, self.output)
        self.data["onnx"] = {key: report.get(key) for key in ("ok", "reason", "seconds")}
        if not report["ok"]:
            warn(f"no ONNX form of the model: {report['reason']}")

    def _artifact(self) -> dict | None:
        for name in ARTIFACT_NAMES:
            if (self.output / name).exists():
                return {"file": name, "how": f"written by the script as {name}"}
        for entry in reversed(self.data["saved"]):
            if not entry["model"]:
                continue
            source = Path(entry["path"])
            target = ARTIFACT_BY_SUFFIX.get(source.suffix.lower())
            if target and _regular_file(source):
                shutil.copyfile(source, self.output / target)
                where = f"{source.name} ({entry['call']}" + (f" at line {entry['line']})" if entry["line"] else ")")
                return {"file": target, "how": f"saved by the script as {where}"}
        if self.trained is not None:
            written = self.trained.save(self.output)
            where = f" (line {self.trained.line})" if self.trained.line else ""
            return {"file": written.name, "how": f"saved by pushtune: {self.trained.how}{where}"}
        return None

    def write(self, *, now: bool = False) -> None:
        """autolog.json as it stands: at most every WRITE_INTERVAL seconds while the script runs
        (a script scoring in a loop must not pay a file per call), at once with `now`."""
        with self._lock:
            if not now and time.monotonic() - self._written_at < WRITE_INTERVAL:
                return  # finish() writes it at the end
            self._written_at = time.monotonic()
            try:
                self.output.mkdir(parents=True, exist_ok=True)
                fd, temp = tempfile.mkstemp(dir=self.output, prefix=f".{CAPTURE_FILE}.", suffix=".tmp")
                with os.fdopen(fd, "w") as handle:
                    json.dump(self.data, handle, default=_plain)
                os.replace(temp, self.output / CAPTURE_FILE)
            except OSError as exc:
                warn(f"cannot write {CAPTURE_FILE}: {exc}")


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _regular_file(path: Path) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size <= SAVED_MODEL_LIMIT


class _LineWatcher:
    """sys.stdout as it was, with every complete line also handed to `on_line`."""

    def __init__(self, wrapped, on_line: Callable[[str], None]):
        self.wrapped, self._on_line, self._pending = wrapped, on_line, ""

    def write(self, text):
        written = self.wrapped.write(text)
        try:
            if isinstance(text, str):
                self._pending += text
                if "\n" in self._pending or "\r" in self._pending:
                    *complete, self._pending = self._pending.replace("\r", "\n").split("\n")
                    for line in complete:
                        self._on_line(line)
                self._pending = self._pending[-lines.MAX_LINE * 2:]
        except Exception:  # capture never breaks the script's printing
            pass
        return written

    def writelines(self, texts):
        for text in texts:
            self.write(text)

    def flush_pending(self) -> None:
        if self._pending.strip():
            self._on_line(self._pending)
        self._pending = ""

    def __getattr__(self, name):
        return getattr(self.wrapped, name)


# What the script imports -> the module of jobs.autolog whose `patch(capture, module)` hooks it.
PATCHES = {
    "jobs.kit": "jobs.autolog.for_kit",
    "pickle": "jobs.autolog.for_pickle",
    "joblib": "jobs.autolog.for_pickle",
    "keras": "jobs.autolog.for_keras",
    "torch": "jobs.autolog.for_torch",
    "sklearn.base": "jobs.autolog.for_sklearn",
    "sklearn.metrics": "jobs.autolog.for_sklearn",
}


def install(capture: Capture) -> None:
    """Hook every framework pushtune captures; each is patched when the script imports it."""
    for module_name, patcher in PATCHES.items():
        def patch(module, patcher=patcher):
            importlib.import_module(patcher).patch(capture, module)

        hooks.when_imported(module_name, patch)
