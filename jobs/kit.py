"""Helpers for model scripts run by pushtune: `from jobs import kit`.

A script runs as `python model.py` with the contract's environment (see docs/architecture.md):
PUSHTUNE_OUTPUT, PUSHTUNE_DATA, PUSHTUNE_PARAMS, PUSHTUNE_RESUME, PUSHTUNE_CACHE. Every helper
also works standalone (nothing set): output goes to ./output, the cache to ./.cache.

Importing this module is cheap: only `callbacks()` imports Keras and only the `torch_*` helpers
import torch, each when called. The module is copied alone into the runtime images: it imports
nothing but the standard library at module level.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
PROGRESS_FILE = "progress.json"
HISTORY_FILE = "history.json"
CHECKPOINT_DIR = "checkpoints"
TORCH_CHECKPOINT = "torch.pt"  # in CHECKPOINT_DIR: model and optimizer state, epoch, torch's RNG
CHECKPOINT_METADATA = "training_metadata.json"  # in CHECKPOINT_DIR: {"epoch": n, "batch": 0}, Keras' format

# Parameter names that mean the same thing (architecture.md: `learning_rate` (or `lr`)).
_ALIASES = {"lr": "learning_rate", "learning_rate": "lr"}
_FALSE_WORDS = {"", "0", "false", "no", "off"}


# --- parameters -----------------------------------------------------------------------------


def params(**defaults: Any) -> dict:
    """The defaults overlaid with the JSON object in $PUSHTUNE_PARAMS.

    Keys match the defaults case-insensitively (and `lr` matches `learning_rate`); the result
    keeps the defaults' spelling, and each value is cast to its default's type. Keys that match
    no default are passed through unchanged. Bad JSON or a value that cannot be cast ends the
    script with a one-line message (SystemExit).
    """
    raw = os.environ.get("PUSHTUNE_PARAMS", "").strip()
    if not raw:
        return dict(defaults)
    try:
        given = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"PUSHTUNE_PARAMS is not valid JSON: {exc}") from None
    if not isinstance(given, dict):
        raise SystemExit(f"PUSHTUNE_PARAMS must be a JSON object, got {type(given).__name__}")

    return overlay_params(defaults, given, _cast)


def overlay_params(defaults: dict, given: dict, cast: Callable[[str, Any, Any], Any] | None = None) -> dict:
    """`given` over `defaults`, as `params` does it: keys match the defaults case-insensitively
    (and `lr` matches `learning_rate`) and keep the defaults' spelling; `cast(name, value,
    default)` converts a matched value. Keys that match no default are added as given.
    (pushtune's tweaks merge a script's declared parameters this way too.)"""
    by_lower = {name.lower(): name for name in defaults}
    result = dict(defaults)
    for key, value in given.items():
        name = by_lower.get(key.lower()) or by_lower.get(_ALIASES.get(key.lower(), ""))
        if name is None:
            result[key] = value
        else:
            result[name] = cast(name, value, defaults[name]) if cast else value
    return result


def _cast(name: str, value: Any, default: Any) -> Any:
    """`value` converted to the type of `default`, or SystemExit naming the parameter."""
    kind = type(default)
    try:
        if default is None or value is None or (isinstance(value, kind) and kind is not bool):
            return value
        if kind is bool:
            if isinstance(value, str):
                return value.strip().lower() not in _FALSE_WORDS
            return bool(value)
        if kind is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError("not a whole number")
            return int(number)
        if kind is float:
            return float(value)
        if kind is str:
            return str(value)
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise SystemExit(
            f"parameter {name}={value!r} cannot be used as {kind.__name__} ({exc})"
        ) from None


# --- directories and flags --------------------------------------------------------------------


def output_dir() -> Path:
    """$PUSHTUNE_OUTPUT, or ./output when run standalone; created."""
    path = Path(os.environ.get("PUSHTUNE_OUTPUT") or "output").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(default: str | None = None) -> Path | None:
    """$PUSHTUNE_DATA, else `default` (None when neither is set). Not checked for existence."""
    value = os.environ.get("PUSHTUNE_DATA") or default
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """$PUSHTUNE_CACHE (shared by a run's attempts), else <output>/../.cache; created."""
    value = os.environ.get("PUSHTUNE_CACHE")
    path = Path(value).expanduser() if value else output_dir().resolve().parent / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def resuming() -> bool:
    """True when this attempt continues one whose process died (PUSHTUNE_RESUME=1)."""
    return os.environ.get("PUSHTUNE_RESUME", "").strip().lower() not in _FALSE_WORDS


# --- results ------------------------------------------------------------------------------------


def report(**metrics: Any) -> Path:
    """Merge `metrics` into <output>/metrics.json (atomically), print `name: value` lines."""
    path = output_dir() / METRICS_FILE
    merged = _read_json(path) or {}
    merged.update({name: _plain(value) for name, value in metrics.items()})
    _write_json_atomic(path, merged)
    for name, value in metrics.items():
        print(f"{name}: {_plain(value)}", flush=True)
    return path


def progress() -> dict | None:
    """The last <output>/progress.json written by `callbacks()`:
    {"epoch": n, "epochs": N, "logs": {...}}."""
    return _read_json(output_dir() / PROGRESS_FILE)


def history() -> dict | None:
    """The training curve written by `callbacks()`, <output>/history.json:
    {"epochs": N, "steps": steps per epoch, "history": [{"epoch": 1, "loss": …, …}, …]}."""
    return _read_json(output_dir() / HISTORY_FILE)


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays as plain Python values, so they serialise as JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _finite_or_none(value: Any) -> float | None:
    """A loss of NaN or inf is written as null: JSON has no such numbers."""
    number = float(value)
    return number if math.isfinite(number) else None


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} value {value!r} cannot be written as JSON")


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temp file in the same directory, then rename: readers never see half a file."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, default=_json_default)
            handle.write("\n")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# --- Keras checkpointing -----------------------------------------------------------------------


def callbacks(*, backup: bool = True) -> list:
    """Keras callbacks that make a killed attempt resumable; pass them to `model.fit`.

    With `backup`, `keras.callbacks.BackupAndRestore` keeps the weights, optimizer state and
    epoch number in <output>/checkpoints after every epoch; `fit` then restarts at the saved
    epoch. A progress callback writes <output>/progress.json at each epoch end. A run that is
    not resuming starts from scratch (old checkpoints and progress are removed), so use these
    callbacks for one `fit` per script.
    """
    import keras  # lazy: scripts that never train with Keras should not pay for TensorFlow

    out = output_dir()
    backup_dir = out / CHECKPOINT_DIR
    if resuming():
        _repair_backup_metadata(backup_dir)
        done = (progress() or {}).get("epoch", 0)
        print(f"kit: resuming; progress.json shows {done} epoch(s) done", file=sys.stderr, flush=True)
    else:
        shutil.rmtree(backup_dir, ignore_errors=True)
        (out / PROGRESS_FILE).unlink(missing_ok=True)
        (out / HISTORY_FILE).unlink(missing_ok=True)

    # Order matters: the checkpoint is written before progress.json, so progress never claims
    # an epoch that a resume could not restore.
    result: list = []
    if backup:
        # double_checkpoint keeps the previous checkpoint, which Keras falls back to when a
        # SIGKILL left the latest weights file half-written.
        result.append(
            keras.callbacks.BackupAndRestore(
                backup_dir=str(backup_dir), double_checkpoint=True, delete_checkpoint=False
            )
        )
    result.append(progress_callback())
    return result


def progress_callback():
    """The Keras callback that writes <output>/progress.json and appends each epoch's logs to
    history.json (pushtune's launcher adds it to a `fit` of a script that does not use the kit)."""
    # heavy optional library (keras extra): TensorFlow only when a Keras model is loaded
    import keras

    out = output_dir()

    class ProgressFile(keras.callbacks.Callback):
        """After every epoch: progress.json {"epoch": <epochs completed>, "epochs": <of>, "logs"}
        and the epoch's logs appended to history.json (the curve pushtune diagnoses)."""

        def __init__(self) -> None:
            super().__init__()
            self._first_epoch: int | None = None
            self._curve: dict = {}

        def on_train_begin(self, logs: dict | None = None) -> None:
            self._curve = {"epochs": self.params.get("epochs"), "steps": self.params.get("steps"),
                           "history": (history() or {}).get("history", [])}

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if self._first_epoch is None:
                self._first_epoch = epoch
                if epoch > 0:
                    print(f"kit: resumed at epoch {epoch}", file=sys.stderr, flush=True)
                # a resumed training repeats the epochs after its checkpoint: drop them
                self._curve["history"] = [e for e in self._curve["history"] if e.get("epoch", 0) <= epoch]

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            plain_logs = {name: _finite_or_none(value) for name, value in (logs or {}).items()}
            self._curve["history"].append({"epoch": epoch + 1, **plain_logs})
            _write_json_atomic(out / HISTORY_FILE, self._curve)
            _write_json_atomic(out / PROGRESS_FILE, {"epoch": epoch + 1, "epochs": self._curve["epochs"],
                                                     "logs": plain_logs})

    return ProgressFile()


def _repair_backup_metadata(backup_dir: Path) -> None:
    """Keras rewrites training_metadata.json in place and does not survive a truncated one:
    fall back to the previous copy, or to no metadata (epoch 0), before it is read."""
    metadata = backup_dir / "training_metadata.json"
    if not metadata.exists() or _read_json(metadata) is not None:
        return
    previous = backup_dir / "training_metadata.json.bkp"
    previous_weights = backup_dir / "latest.weights.h5.bkp"
    if _read_json(previous) is not None and previous_weights.exists():
        shutil.copyfile(previous, metadata)
        shutil.copyfile(previous_weights, backup_dir / "latest.weights.h5")
    else:
        metadata.unlink()


# --- PyTorch checkpointing ---------------------------------------------------------------------


def torch_resume(model: Any, optimizer: Any = None) -> int:
    """The epoch a PyTorch training starts at: call it once, after building the model and the
    optimizer, and loop `for epoch in range(start, EPOCHS)`, ending each epoch with
    `torch_epoch_end`.

    When the attempt resumes (PUSHTUNE_RESUME=1: its process died, or a warm start copied its
    parent's checkpoint), the state `torch_epoch_end` saved in <output>/checkpoints/torch.pt is
    loaded into `model` and `optimizer`, with torch's random number generator, and the number of
    epochs it holds is returned. Otherwise (a training from scratch) an old checkpoint,
    progress.json and history.json are removed and 0 is returned.
    """
    import torch  # lazy: only PyTorch scripts pay for it

    out = output_dir()
    checkpoints = out / CHECKPOINT_DIR
    if not resuming():
        shutil.rmtree(checkpoints, ignore_errors=True)
        (out / PROGRESS_FILE).unlink(missing_ok=True)
        (out / HISTORY_FILE).unlink(missing_ok=True)
        return 0
    for leftover in checkpoints.glob(f".{TORCH_CHECKPOINT}.*.tmp"):  # a save the kill cut short
        leftover.unlink(missing_ok=True)
    path = checkpoints / TORCH_CHECKPOINT
    if not path.is_file():
        print("kit: resuming, but no checkpoint yet: starting at epoch 0", file=sys.stderr, flush=True)
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        epoch = int(state["epoch"])
    except (OSError, RuntimeError, EOFError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as exc:
        # saved atomically, so not a kill mid-save: a file damaged otherwise, or not a checkpoint
        print(f"kit: cannot read {path} ({type(exc).__name__}: {exc}); starting at epoch 0",
              file=sys.stderr, flush=True)
        return 0
    model.load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if state.get("rng") is not None:
        torch.set_rng_state(state["rng"])
    print(f"kit: resumed at epoch {epoch}", file=sys.stderr, flush=True)
    return epoch


def torch_epoch_end(epoch: int, model: Any, optimizer: Any = None, *, epochs: int | None = None,
                    steps: int | None = None, **logs: Any) -> None:
    """End epoch `epoch` (counted from 0, as `range` does) of a PyTorch training: save the model's
    and optimizer's state, the epoch and torch's random number generator to
    <output>/checkpoints/torch.pt (atomically), then add the epoch's `logs` (loss=…, accuracy=…,
    val_loss=…, val_accuracy=…: numbers or 0-d tensors) to history.json and write progress.json,
    as `callbacks()` does for Keras. `epochs` (the total) and `steps` (optimizer steps per epoch)
    go into history.json, where pushtune's diagnosis and warm starts read them.
    """
    # torch: the script's framework, imported only when the script uses it
    import torch

    out = output_dir()
    checkpoints = out / CHECKPOINT_DIR
    checkpoints.mkdir(parents=True, exist_ok=True)
    done = int(epoch) + 1
    state = {"epoch": done, "model": model.state_dict(),
             "optimizer": optimizer.state_dict() if optimizer is not None else None,
             "rng": torch.get_rng_state()}
    _save_atomic(checkpoints / TORCH_CHECKPOINT, lambda handle: torch.save(state, handle))
    # The checkpoint first, then its epoch, then the curve and progress.json: progress never
    # claims an epoch that a resume could not restore.
    _write_json_atomic(checkpoints / CHECKPOINT_METADATA, {"epoch": done, "batch": 0})
    plain_logs = {name: _finite_or_none(value) for name, value in logs.items()}
    earlier = (history() or {}).get("history")
    kept = [e for e in earlier or [] if isinstance(e, dict) and isinstance(e.get("epoch"), int)
            and e["epoch"] < done]  # a resumed training repeats the epochs after its checkpoint
    curve = {"epochs": epochs, "steps": steps, "history": [*kept, {"epoch": done, **plain_logs}]}
    _write_json_atomic(out / HISTORY_FILE, curve)
    _write_json_atomic(out / PROGRESS_FILE, {"epoch": done, "epochs": epochs, "logs": plain_logs})


def _save_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """`write(handle)` into a temp file in the same directory, then rename it over `path`."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
