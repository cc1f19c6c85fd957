"""A run's results, copied out of the run store into one folder a CI server can archive.

The run directories live in the run store (PUSHTUNE_ARTIFACTS on agents), not in a build's
workspace, and Jenkins archives and publishes only from the workspace. `collect_results` fills a
folder there:

    pushtune-results.txt    what was copied and what was skipped, and why (also marks the folder)
    show.json               the `pushtune show RUN_ID --json` object
    report/report.html      the run's report, with report.css, metric.png, curves.png beside it
                            (Jenkins serves archived files under a CSP without inline styles or
                            data: images: jobs.report.report_files)
    winning.diff            the best attempt's change against the pushed file (when it has one)
    model/NAME              the best attempt's model file, and model/served.onnx when it exists
    logs/attempt-N.log      each attempt's log

Every file a pushed script left (the model, served.onnx, the logs it filled) is untrusted: it is
reached from the run directory the store records one name at a time without following a
symbolic link (a link to /etc/passwd stays a link), copied only when it is a regular file (never
a FIFO or a device, which are not even opened) of at most `max_file_bytes`, and the folder never
holds more than `max_total_bytes`. What is skipped is said, never an error: the build goes on.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from jobs.autolog.to_onnx import ONNX_FILE
from jobs.errors import UserError
from jobs.report import report_files
from jobs.store import RunStore, run_dir

MAX_FILE_BYTES = 512 * 2**20  # a Keras VGG16 model is ~60 MB; a file far larger is no model to open
MAX_TOTAL_BYTES = 2 * 2**30
INDEX = "pushtune-results.txt"  # its presence is what makes a folder one that may be replaced
_CHUNK = 2**20


@dataclass
class Collected:
    """What `collect_results` put in the folder (relative names) and what it left out, and why."""

    folder: Path
    copied: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0


def collect_results(store: RunStore, run_id: int, folder: Path, details: dict[str, Any], *,
                    max_file_bytes: int = MAX_FILE_BYTES,
                    max_total_bytes: int = MAX_TOTAL_BYTES) -> Collected:
    """Fill `folder` (new, empty, or an earlier results folder, which is replaced) with run
    `run_id`'s results; `details` is its `pushtune show --json` object."""
    run = store.get_run(run_id)
    root = run_dir(run)
    folder = _fresh(Path(folder))
    done = Collected(folder)

    def write(name: str, data: bytes) -> None:
        if done.total + len(data) > max_total_bytes:
            done.skipped.append((name, f"the folder would exceed {max_total_bytes} bytes"))
            return
        _write_new(folder / name, data)
        done.copied.append(name)
        done.total += len(data)

    write("show.json", (json.dumps(details, indent=2) + "\n").encode("utf-8"))
    for name, data in report_files(store, run_id).items():
        write(f"report/{name}", data)
    best_n = (details.get("best") or {}).get("attempt")
    attempts = {a["n"]: a for a in store.attempts(run_id)}
    best = attempts.get(best_n) if best_n is not None else None
    if best is not None and best["diff"]:
        write("winning.diff", best["diff"].encode("utf-8"))
    if best is not None:
        model = Path(best["artifact_path"]) if best["artifact_path"] else None
        if model is not None:
            _copy_from_run(done, root, model, f"model/{model.name}", max_file_bytes, max_total_bytes)
        onnx = Path(best["dir"]) / "output" / ONNX_FILE if best["dir"] else None
        if onnx is not None and onnx != model and _exists(onnx):
            _copy_from_run(done, root, onnx, f"model/{ONNX_FILE}", max_file_bytes, max_total_bytes)
    for n, attempt in sorted(attempts.items()):
        if attempt["dir"] and _exists(log := Path(attempt["dir"]) / "log.txt"):
            _copy_from_run(done, root, log, f"logs/attempt-{n}.log", max_file_bytes, max_total_bytes)
    _write_new(folder / INDEX, _index(run_id, done).encode("utf-8"))
    return done


def _fresh(folder: Path) -> Path:
    """The folder, created empty; an earlier results folder (it has INDEX) is removed first,
    any other non-empty directory (or a link) is refused rather than emptied."""
    if folder.is_symlink():
        raise UserError(f"{folder} is a symbolic link: give a directory for the results")
    if folder.exists():
        if not folder.is_dir():
            raise UserError(f"{folder} exists and is not a directory")
        if any(folder.iterdir()):
            index = folder / INDEX
            if index.is_symlink() or not index.is_file():
                raise UserError(f"{folder} is not empty and holds no earlier results ({INDEX}): "
                                "give a new or empty directory")
            shutil.rmtree(folder)  # removes links, never what they point to
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {folder}: {exc.strerror}") from None
    return folder


def _exists(path: Path) -> bool:
    """Whether anything (a link too) is there: what is there is judged when it is copied."""
    return os.path.lexists(path)


def _write_new(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)


def _copy_from_run(done: Collected, root: Path, source: Path, name: str,
                   max_file_bytes: int, max_total_bytes: int) -> None:
    """Copy `source` (a path the store recorded, inside the run directory `root`) to the
    folder as `name`, or record why not."""
    try:
        relative = source.relative_to(root)
    except ValueError:
        done.skipped.append((name, f"{source} is outside the run directory {root}"))
        return
    if not relative.parts or any(part in ("..", ".") for part in relative.parts):
        done.skipped.append((name, f"{source} is not a plain path inside the run directory"))
        return
    limit = min(max_file_bytes, max_total_bytes - done.total)
    why = _copy_regular(root, relative, done.folder / name, limit)
    if why is None:
        done.copied.append(name)
        done.total += (done.folder / name).stat().st_size
    else:
        over = limit < max_file_bytes and why.startswith("larger than")
        done.skipped.append((name, f"{relative}: " + (f"the folder would exceed {max_total_bytes} bytes"
                                                       if over else why)))


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def _copy_regular(root: Path, relative: PurePath, target: Path, limit: int) -> str | None:
    """Copy root/relative to target when every directory on the way is a real directory (no
    link) and the file is a regular one of at most `limit` bytes; else why not (target absent)."""
    opened: list[int] = []
    try:
        directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        opened.append(directory)
        for part in relative.parts[:-1]:
            try:
                directory = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    return f"{part} on the way is not a directory (a link?): not followed"
                raise
            opened.append(directory)
        name = relative.parts[-1]
        info = os.stat(name, dir_fd=directory, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device is never opened: that could block
            return f"{_kind(info.st_mode)}, not a regular file: not copied"
        if info.st_size > limit:
            return f"larger than {limit} bytes ({info.st_size}): not copied"
        # O_NOFOLLOW and O_NONBLOCK: swapped for a link or a FIFO since the stat, it still fails
        # or does not block, and fstat below sees what was opened
        source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
        opened.append(source)
        if not stat.S_ISREG(os.fstat(source).st_mode):
            return "changed into something other than a regular file: not copied"
        return _copy_bounded(source, target, limit)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    finally:
        for descriptor in reversed(opened):
            os.close(descriptor)


def _copy_bounded(source: int, target: Path, limit: int) -> str | None:
    """Copy at most `limit` bytes; a file that grew past it is removed again."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as out:
        while chunk := os.read(source, min(_CHUNK, limit + 1 - written)):
            written += len(chunk)
            if written > limit:
                break
            out.write(chunk)
    if written > limit:
        target.unlink()
        return f"larger than {limit} bytes (it grew while copied): not copied"
    return None


def _index(run_id: int, done: Collected) -> str:
    lines = [f"Results of pushtune run {run_id} (pushtune results), {done.total} bytes.", "", "copied:"]
    lines += [f"  {name}" for name in done.copied] or ["  nothing"]
    if done.skipped:
        lines += ["", "skipped (files a pushed script left are copied only when regular and not too large):"]
        lines += [f"  {name}: {why}" for name, why in done.skipped]
    return "\n".join(lines) + "\n"
