"""A run's results, copied out of the run store into one folder a CI server can archive.

The run directories live in the run store (PUSHTUNE_ARTIFACTS on agents), not in a build's
workspace, and Jenkins archives and publishes only from the workspace. `collect_results` fills a
folder there:

    pushtune-results.txt    what was copied and what was skipped, and why (also marks the folder)
    show.json               the `pushtune show RUN_ID --json` object
    report/report.html      the run's report, with report.css, metric.png, curves.png beside it
                            (Jenkins serves archived files under a CSP without inline styles or
                            data: images: jobs.report.html_report.report_files)
    winning.diff            the best attempt's change against the pushed file (when it has one)
    output/                 the best attempt's output folder: the model file, served.onnx (its
                            ONNX form, when there is one), whatever else the script saved
    logs/attempt-N.log      each attempt's log

Every file a pushed script left (its outputs, the logs it filled) is untrusted: it is reached
from the run directory the store records one name at a time without following a symbolic link
(a link to /etc/passwd stays a link, and is not copied), copied only when it is a regular file
(a FIFO or a device is not even opened) of at most `max_file_bytes`, at most MAX_FILES of them,
and the folder never holds more than `max_total_bytes`. What is skipped is said, never an error:
the build goes on.
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

from jobs.errors import UserError
from jobs.report.html_report import report_files
from jobs.report.outcome import run_outcome
from jobs.store.run_store import RunStore, run_dir

MAX_FILE_BYTES = 512 * 2**20  # the face example (a VGG16 base) saves ~60 MB; far larger is no model to open
MAX_TOTAL_BYTES = 2 * 2**30
MAX_FILES = 1000  # from the best attempt's output folder
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
    outcome = run_outcome(store, run_id)
    root = run_dir(outcome.run)
    folder = _fresh(Path(folder))
    # first, so a folder left half-filled (a killed build) is still recognised and replaced
    _write_new(folder / INDEX, b"pushtune results: being written\n")
    done = Collected(folder)

    def write(name: str, data: bytes) -> None:
        if done.total + len(data) > max_total_bytes:
            done.skipped.append((name, f"the folder would exceed {max_total_bytes} bytes"))
            return
        _write_new(folder / name, data)
        done.copied.append(name)
        done.total += len(data)

    write("show.json", (json.dumps(details, indent=2) + "\n").encode("utf-8"))
    for name, data in report_files(outcome).items():
        write(f"report/{name}", data)
    best = outcome.best
    if best is not None and best["diff"]:
        write("winning.diff", best["diff"].encode("utf-8"))
    limits = (max_file_bytes, max_total_bytes)
    if best is not None and best["dir"]:
        _copy_folder(done, root, Path(best["dir"]) / "output", "output", *limits)
    for attempt in outcome.attempts:
        if attempt["dir"] and _exists(log := Path(attempt["dir"]) / "log.txt"):
            _copy_from_run(done, root, log, f"logs/attempt-{attempt['n']}.log", *limits)
    (folder / INDEX).unlink()
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


def _relative(done: Collected, root: Path, source: Path, name: str) -> PurePath | None:
    """`source` (a path the store recorded) relative to the run directory `root`; None (and
    why, in `done`) when it is not a plain path inside it."""
    try:
        relative = source.relative_to(root)
    except ValueError:
        done.skipped.append((name, f"{source} is outside the run directory {root}"))
        return None
    if not relative.parts or any(part in ("..", ".") for part in relative.parts):
        done.skipped.append((name, f"{source} is not a plain path inside the run directory"))
        return None
    return relative


def _open_directory(root: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of root/parts…, each part opened without following a link (OSError else)."""
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for part in parts:
        try:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
        finally:
            os.close(directory)
        directory = inner
    return directory


def _copy_from_run(done: Collected, root: Path, source: Path, name: str,
                   max_file_bytes: int, max_total_bytes: int) -> None:
    """Copy the file `source` inside the run directory to the folder as `name`, or say why not."""
    relative = _relative(done, root, source, name)
    if relative is None:
        return
    try:
        directory = _open_directory(root, relative.parts[:-1])
    except OSError as exc:
        done.skipped.append((name, f"{relative.parent}: {_unreachable(exc)}"))
        return
    try:
        _copy_entry(done, directory, relative.name, name, max_file_bytes, max_total_bytes)
    finally:
        os.close(directory)


def _copy_folder(done: Collected, root: Path, source: Path, name: str,
                 max_file_bytes: int, max_total_bytes: int) -> None:
    """Copy the regular files under the folder `source` inside the run directory to `name`/,
    walking it without following links (os.fwalk, follow_symlinks=False, lists a link to a
    directory among the directories and does not enter it: it is said here)."""
    relative = _relative(done, root, source, name)
    if relative is None:
        return
    try:
        top = _open_directory(root, relative.parts)
    except OSError as exc:
        done.skipped.append((name, f"{relative}: {_unreachable(exc)}"))
        return
    try:
        for path, folders, files, directory in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for folder in sorted(folders):
                if _is_link(directory, folder):
                    done.skipped.append((os.path.normpath(os.path.join(name, path, folder)),
                                         "a symbolic link to a directory: not followed"))
            for file in sorted(files):
                target = os.path.normpath(os.path.join(name, path, file))
                if len(done.copied) >= MAX_FILES:
                    done.skipped.append((os.path.normpath(os.path.join(name, path)),
                                         f"more than {MAX_FILES} files: the rest is not copied"))
                    return
                _copy_entry(done, directory, file, target, max_file_bytes, max_total_bytes)
    finally:
        os.close(top)


def _is_link(directory: int, entry: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(entry, dir_fd=directory, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _unreachable(exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "not a directory (a symbolic link?): not followed"
    return "missing" if exc.errno == errno.ENOENT else f"cannot be read: {exc.strerror}"


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def _copy_entry(done: Collected, directory: int, entry: str, name: str,
                max_file_bytes: int, max_total_bytes: int) -> None:
    """Copy `entry` of the open `directory` to the folder as `name` when it is a regular file
    within the limits; else record why not (and leave nothing at `name`)."""
    limit = min(max_file_bytes, max_total_bytes - done.total)
    why: str | None
    try:
        info = os.stat(entry, dir_fd=directory, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device is never opened: that could block
            why = f"{_kind(info.st_mode)}, not a regular file: not copied"
        elif info.st_size > limit:
            why = (f"larger than {max_file_bytes} bytes ({info.st_size}): not copied" if limit == max_file_bytes
                   else f"the folder would exceed {max_total_bytes} bytes: not copied")
        else:
            # O_NOFOLLOW and O_NONBLOCK: swapped for a link or a FIFO since the stat, it fails or
            # does not block, and fstat sees what was opened
            source = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
            try:
                if not stat.S_ISREG(os.fstat(source).st_mode):
                    why = "changed into something other than a regular file: not copied"
                else:
                    why = _copy_bounded(source, done.folder / name, limit)
            finally:
                os.close(source)
    except OSError as exc:
        why = _unreachable(exc) if exc.errno != errno.ELOOP else "a symbolic link, not a regular file: not copied"
    if why is None:
        done.copied.append(name)
        done.total += (done.folder / name).stat().st_size
    else:
        done.skipped.append((name, why))


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
