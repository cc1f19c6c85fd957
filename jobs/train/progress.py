"""Live progress of one attempt: where its training is, epoch by epoch.

The kit's callbacks (`jobs.kit.callbacks()`) write, after every epoch, `output/history.json`
(the whole curve so far) and then `output/progress.json` (`{"epoch": n, "epochs": N, "logs":
{...}}`). `EpochWatcher` polls them from a daemon thread while the attempt trains and calls back
once per new epoch with `(epoch, epochs, logs)`, in order. Epochs that came and went between two
polls are filled in from history.json, so a fast training skips no line.

The watcher never raises into the caller: a missing, half-written or absent file is "nothing
new yet", and an exception from the callback is swallowed (progress is decoration, the attempt
is what matters). `stop()` joins the thread and reads the files one last time, so the final
epoch is reported even when it was written just before the attempt ended.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.train.metrics import CURVE_LIMIT, read_json_output

PROGRESS_FILE = "progress.json"  # as in jobs.kit (not imported: the kit belongs to the scripts)
HISTORY_FILE = "history.json"
POLL_SECONDS = 0.5

OnEpoch = Callable[[int, "int | None", dict], None]


def _read_json(path: Path) -> dict | None:
    try:  # a link or a FIFO the script planted is never followed, never blocks
        data = read_json_output(path, CURVE_LIMIT)
    except (OSError, ValueError):  # absent, unsafe, unreadable, or caught half-written
        return None
    return data if isinstance(data, dict) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class EpochWatcher:
    """Reports each new epoch of the training writing into `output_dir`.

    Use around one attempt: `with EpochWatcher(output, on_epoch): train()`, or `start()` then
    `stop()`. Epochs already recorded when the watcher starts (a warm start copies its parent's
    progress) are not reported again.
    """

    def __init__(self, output_dir: str | Path, on_epoch: OnEpoch, interval: float = POLL_SECONDS):
        self.output_dir = Path(output_dir)
        self.on_epoch = on_epoch
        self.interval = interval
        self.last: int | None = None  # the last epoch seen (reported, or there at the start)
        self.reported: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> EpochWatcher:
        if self._thread is not None:
            return self
        self._safely(self._baseline)
        self._thread = threading.Thread(target=self._run, name=f"epochs:{self.output_dir}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, wait for the thread, and read once more for a last epoch. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=max(self.interval * 4, 2.0))
        self._safely(self.poll)

    def __enter__(self) -> EpochWatcher:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._safely(self.poll)

    @staticmethod
    def _safely(action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:  # never into the loop: a progress line is not worth an attempt
            pass

    # --- reading ------------------------------------------------------------------------------

    def _baseline(self) -> None:
        progress = _read_json(self.output_dir / PROGRESS_FILE)
        self.last = _int(progress.get("epoch")) if progress else None

    def poll(self) -> None:
        """Report the epochs written since the last poll (safe to call from any thread)."""
        if not self._lock.acquire(timeout=5):  # a callback stuck elsewhere: skip this read
            return
        try:
            progress = _read_json(self.output_dir / PROGRESS_FILE)
            epoch = _int(progress.get("epoch")) if progress else None
            if progress is None or epoch is None or epoch == self.last:
                return
            epochs = _int(progress.get("epochs"))
            logs = reported if isinstance(reported := progress.get("logs"), dict) else {}
            previous = self.last or 0
            if epoch > previous + 1:
                # Several epochs since the last poll: the ones in between from the curve.
                for missed, missed_logs in self._from_history(previous + 1, epoch - 1):
                    self._report(missed, epochs, missed_logs)
            # An epoch lower than the last means the training started over: report it too.
            self._report(epoch, epochs, logs)
            self.last = epoch
        finally:
            self._lock.release()

    def _from_history(self, first: int, last: int) -> list[tuple[int, dict]]:
        curve = _read_json(self.output_dir / HISTORY_FILE) or {}
        entries = history if isinstance(history := curve.get("history"), list) else []
        found: dict[int, dict] = {}
        for entry in entries:
            if isinstance(entry, dict) and _int(entry.get("epoch")) is not None:
                found[entry["epoch"]] = {k: v for k, v in entry.items() if k != "epoch"}
        return [(n, found[n]) for n in range(first, last + 1) if n in found]

    def _report(self, epoch: int, epochs: int | None, logs: dict) -> None:
        self.reported.append(epoch)
        try:
            self.on_epoch(epoch, epochs, logs)
        except Exception:
            pass


# --- formatting ---------------------------------------------------------------------------------


def format_value(value: Any, digits: int = 4) -> str:
    """A log value for a progress line: fixed decimals, tiny or huge numbers in e-notation,
    null (the kit's non-finite) as nan."""
    if value is None:
        return "nan"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if value != 0 and (magnitude < 10 ** -(digits - 1) or magnitude >= 1e6):
        return f"{value:.{max(digits - 1, 1)}e}"
    return f"{value:.{digits}f}"


def shown_logs(logs: dict, metric: str) -> list[str]:
    """The names worth a terminal line: the loss, the gated metric and its val_ twin."""
    base = metric[4:] if metric.startswith("val_") else metric
    names = ["loss", base, f"val_{base}"]
    return [name for i, name in enumerate(names) if name in logs and name not in names[:i]]


def ordered_logs(logs: dict) -> list[str]:
    """Every log name, the training ones first, each group led by its loss (Keras sorts its
    logs by name: accuracy, loss, val_accuracy, val_loss)."""
    def loss_first(names: list[str], loss: str) -> list[str]:
        return sorted(names, key=lambda name: name != loss)  # stable: the rest keep their order

    return (loss_first([n for n in logs if not n.startswith("val_")], "loss")
            + loss_first([n for n in logs if n.startswith("val_")], "val_loss"))


def epoch_text(epoch: int, epochs: int | None, logs: dict, names: list[str] | None = None,
               digits: int = 4, sep: str = ", ") -> str:
    """`epoch 3/4: loss 0.4120, accuracy 0.8710, …` (all logs, loss first, unless `names`)."""
    names = ordered_logs(logs) if names is None else names
    values = sep.join(f"{name} {format_value(logs.get(name), digits)}" for name in names)
    head = f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}"
    return f"{head}: {values}" if values else head


def epoch_line(epoch: int, epochs: int | None, logs: dict) -> str:
    """The plain line printed per epoch in a pipe or a Jenkins console."""
    return "  " + epoch_text(epoch, epochs, logs)
