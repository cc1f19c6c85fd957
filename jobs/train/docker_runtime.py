"""`DockerRuntime`: every attempt in a container of its own, from the image of its file's profile.

A container is named `pushtune-<run>-<attempt>` (`-r<n>` for the n-th restart) and labelled with
what a monitor needs to recreate it. It runs as the invoking user (the image's unprivileged user
when that is root), with every capability dropped, memory, CPU and process limits, a read-only
root filesystem (tmpfs `/tmp` and `/work`), the attempt's `model.py` and `params.json` and the
data read-only, and only the output and cache writable.
Its output streams into the attempt's log. Like `LocalRuntime`, a container killed from outside
(a signal, the OOM killer, a lost container) before a metric is written is started again with
`PUSHTUNE_RESUME=1`, a bounded number of times, and the attempt timeout stops it.

How the attempt's files reach the container (`PUSHTUNE_DOCKER_TRANSFER`): `mount` bind-mounts the
host's paths; `copy`, for an engine that cannot see them (a remote one, or pushtune itself in a
container), copies them in through the Docker API before the start, into volumes of the
container's own, and copies `/output` back after every exit: its regular files and directories,
up to `PUSHTUNE_MAX_OUTPUT_BYTES`, never a path outside it; links, FIFOs and devices stay in the
container, with a note in the log, as the readers of a mounted output pass them by.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import IO, TextIO

import docker
import requests
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container
from docker.types import Mount
from docker.utils import parse_bytes

from jobs.errors import UserError
from jobs.train import images
from jobs.train.limits import parse_memory
from jobs.train.metrics import CURVE_LIMIT, is_regular_file
from jobs.train.progress import HISTORY_FILE, PROGRESS_FILE
from jobs.train.runtime import (
    LAUNCH_COMMAND,
    AttemptOutcome,
    AttemptSpec,
    Exit,
    OnRestart,
    TrainingState,
    append_log,
    contract_env,
    metric_written,
    passed_env,
    supervise,
)

WORKDIR, OUTPUT, DATA, CACHE = "/work", "/output", "/data", "/cache"
IMAGE_USER = (1000, 1000)  # the unprivileged `pushtune` user of dockerfiles/*.Dockerfile
ROOT_USER = (0, 0)  # owns what a container may read but not change (copy transfer)
STOP_GRACE_SECONDS = 5
PIDS_LIMIT = 2048  # processes and threads: TensorFlow starts a few per CPU; a fork bomb stops here
TMPFS = ("/tmp", WORKDIR)  # writable on the read-only root, as the image's HOME=/tmp and /work were
REFUSED_NETWORKS = ("host",)  # would share the host's network stack

TRANSFER_VARIABLE, MAX_OUTPUT_VARIABLE = "PUSHTUNE_DOCKER_TRANSFER", "PUSHTUNE_MAX_OUTPUT_BYTES"
TRANSFERS = ("auto", "mount", "copy")
DEFAULT_MAX_OUTPUT = 2 * 2**30
CACHE_VOLUME = "pushtune-cache"  # the copy transfer's shared cache, kept by the engine
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")  # Docker's and Podman's
PROGRESS_COPY_SECONDS = 2.0
RUNNING = ("running", "paused", "restarting")
NOTES_SHOWN = 20  # links and special files left in a container, named one by one in the log


def death_by_signal(exit_code: int | None, oom_killed: bool) -> str | None:
    """Why a container's main process was killed, from its exit code (128 + signal)."""
    if oom_killed:
        return "killed by the OOM killer (memory limit)"
    if exit_code is not None and 128 < exit_code <= 128 + 64:
        try:
            return f"killed by {signal.Signals(exit_code - 128).name}"
        except ValueError:
            return f"killed by signal {exit_code - 128}"
    return None


# --- names, limits, mounts --------------------------------------------------------------------


def container_name(spec: AttemptSpec, restart: int = 0) -> str:
    """`pushtune-<run>-<attempt>-<store>[-r<n>]`, within Docker's name rules
    [a-zA-Z0-9][a-zA-Z0-9_.-]*. `<store>` (8 hex digits of the attempt directory's path) keeps
    the runs of two stores sharing one engine apart: both have a run 1."""
    store = hashlib.sha256(str(spec.workdir.resolve()).encode()).hexdigest()[:8]
    base = f"pushtune-{spec.run_id}-{spec.attempt}-{store}" + (f"-r{restart}" if restart else "")
    return re.sub(r"[^a-zA-Z0-9_.-]+", "_", base)


def container_user() -> tuple[int, int]:
    """The invoking user's uid:gid; root gets the image's unprivileged user instead."""
    uid, gid = os.getuid(), os.getgid()
    return IMAGE_USER if uid == 0 else (uid, gid)


def _give_to(path: Path, owner: tuple[int, int]) -> None:
    """As root: hand a writable mount to the container's user (only what it does not own yet)."""
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, entry) for entry in dirs + files)]:
            stat_ = os.lstat(name)
            if (stat_.st_uid, stat_.st_gid) != owner:
                os.lchown(name, *owner)


def hand_back(output_dir: Path) -> None:
    """As root, once the attempt's containers have ended: what they wrote into the mounted output
    (as IMAGE_USER) goes back to the invoking user, so no uid-1000 files stay in the user's
    directory. Not the cache: other attempts' containers may be writing to it."""
    _give_to(output_dir, (os.getuid(), os.getgid()))


def mounts_of(spec: AttemptSpec) -> list[dict]:
    """Host path, container path and read-only flag of every bind mount, as plain data."""
    mounts = [
        {"source": str(spec.script.resolve()), "target": f"{WORKDIR}/model.py", "read_only": True},
        {"source": str(spec.output_dir.resolve()), "target": OUTPUT, "read_only": False},
        {"source": str(spec.cache_dir.resolve()), "target": CACHE, "read_only": False},
    ]
    params = spec.workdir / "params.json"
    if params.exists():
        mounts.append({"source": str(params.resolve()), "target": f"{WORKDIR}/params.json",
                       "read_only": True})
    if spec.data_dir:
        mounts.append({"source": str(Path(spec.data_dir).resolve()), "target": DATA, "read_only": True})
    return mounts


def volumes_of(spec: AttemptSpec) -> list[dict]:
    """Copy transfer: the container's own volumes (removed with it) that the attempt's files are
    copied into, and the engine's shared cache volume, as plain data."""
    targets = [WORKDIR, OUTPUT, *([DATA] if spec.data_dir else [])]
    return [*({"source": None, "target": target} for target in targets),
            {"source": CACHE_VOLUME, "target": CACHE}]


# --- mount or copy ----------------------------------------------------------------------------


def transfer_setting(environ: Mapping[str, str] = os.environ) -> str:
    """PUSHTUNE_DOCKER_TRANSFER: auto (the default), mount or copy."""
    value = environ.get(TRANSFER_VARIABLE, "").strip() or "auto"
    if value not in TRANSFERS:
        raise UserError(f"{TRANSFER_VARIABLE}={value!r}: expected auto, mount or copy")
    return value


def max_output_bytes(environ: Mapping[str, str] = os.environ) -> int:
    """PUSHTUNE_MAX_OUTPUT_BYTES: the most a container's /output may bring back (copy transfer)."""
    value = environ.get(MAX_OUTPUT_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_OUTPUT
    try:
        size = parse_bytes(value)
    except DockerException:
        size = None
    if not isinstance(size, int) or size <= 0:
        raise UserError(f"{MAX_OUTPUT_VARIABLE}={value!r}: expected a size in bytes, such as 2g or 500m")
    return size


def engine_is_remote(docker_host: str | None) -> bool:
    """Whether DOCKER_HOST names an engine reached over the network (tcp://, ssh://, https://)."""
    if not docker_host:
        return False
    return not docker_host.startswith(("unix://", "npipe://", "/"))


def in_a_container() -> bool:
    return any(os.path.exists(marker) for marker in CONTAINER_MARKERS)


def engine_runs_here(client: docker.DockerClient) -> bool:
    """Whether the engine is a daemon of this very container (Docker in Docker), which sees its
    paths: it answers with this container's hostname, and its data root is on this filesystem.
    An engine of the host, whose socket was mounted into the container, does neither."""
    try:
        info = client.info()
    except (DockerException, requests.RequestException):
        return False
    root = info.get("DockerRootDir") or ""
    return info.get("Name") == socket.gethostname() and bool(root) and os.path.isdir(root)


def choose_transfer(setting: str, *, docker_host: str | None, in_container: bool,
                    engine_here: Callable[[], bool]) -> str:
    """`mount` or `copy`: `auto` copies for an engine that cannot bind-mount this machine's paths,
    a remote one or, from inside a container, one that does not run in that container."""
    if setting != "auto":
        return setting
    if engine_is_remote(docker_host):
        return "copy"
    if in_container and not engine_here():
        return "copy"
    return "mount"


# --- copy transfer: into the container --------------------------------------------------------


def _tree(root: Path) -> list[tuple[Path, str]]:
    """The regular files and directories below `root`, parents first, with their names relative
    to it. Links and special files are left out, never followed."""
    def unreadable(error: OSError) -> None:
        raise error

    found = []
    for directory, dirs, files in os.walk(root, onerror=unreadable):
        for name in sorted(dirs + files):
            path = Path(directory, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
                found.append((path, path.relative_to(root).as_posix()))
    return found


def _archive_mode(info: tarfile.TarInfo, writable: bool) -> int:
    if info.isdir():
        return 0o755 if writable else 0o555
    executable = 0o111 if info.mode & 0o100 else 0
    return (0o644 if writable else 0o444) | executable


def _add(tar: tarfile.TarFile, path: Path, name: str, owner: tuple[int, int], writable: bool) -> None:
    """One host file or directory into the tar, owned by `owner` in the container."""
    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid = owner
        info.uname = info.gname = ""
        info.mode = _archive_mode(info, writable)
        return info

    if stat.S_ISDIR(os.lstat(path).st_mode):
        tar.addfile(owned(tar.gettarinfo(path, arcname=name)))
        return
    # never through a link, never blocking on a FIFO, should one take the file's place meanwhile
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as content:
        info = tar.gettarinfo(arcname=name, fileobj=content)
        if info.isreg():
            tar.addfile(owned(info), content)


def _archive(entries: list[tuple[Path, str]], owner: tuple[int, int], writable: bool) -> IO[bytes]:
    """A tar, in a temporary file, of host files and directories under the given names, owned by
    `owner` in the container and writable by it or read-only to everyone."""
    spool = tempfile.TemporaryFile()
    with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, name in entries:
            _add(tar, path, name, owner, writable)
    spool.seek(0)
    return spool


def copy_in(container, target: str, entries: list[tuple[Path, str]], owner: tuple[int, int],
            writable: bool) -> None:
    """Copy host files into a created container's volume at `target` (UserError if it fails)."""
    if not entries:
        return
    try:
        with _archive(entries, owner, writable) as archive:
            container.put_archive(target, archive)
    except OSError as exc:
        raise UserError(f"cannot copy {exc.filename or 'a file'} into container {container.name}: "
                        f"{exc.strerror or exc}") from None
    except (DockerException, requests.RequestException) as exc:
        reason = getattr(exc, "explanation", None) or exc
        raise UserError(f"cannot copy into {target} of container {container.name}: {reason}") from None


# --- copy transfer: out of the container ------------------------------------------------------


class TransferFailed(Exception):
    """What a container left in its output cannot come back; the message says why, in one line."""


def _fetch(container, path: str, limit: int) -> IO[bytes]:
    """The tar of `path` in the container (running or not), in a temporary file; TransferFailed
    past `limit` bytes. docker.errors.NotFound when the container or the path is gone."""
    chunks, _ = container.get_archive(path)
    spool = tempfile.TemporaryFile()
    size = 0
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise _over(path, limit, container.name)
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _refusal(member: tarfile.TarInfo) -> str | None:
    """Why a member's path makes the whole output suspect (no engine archives one so), or None."""
    name = PurePosixPath(member.name)
    if name.is_absolute():
        return "an absolute path"
    if ".." in name.parts:
        return "a path with '..'"
    return None


def _below(member: tarfile.TarInfo, top: str) -> str | None:
    """The member's path relative to the container's directory `top` (None for `top` itself);
    TransferFailed for a path outside it."""
    problem = _refusal(member)
    parts = PurePosixPath(member.name).parts
    if problem is None and (not parts or parts[0] != PurePosixPath(top).name):
        problem = f"outside {top}"
    if problem:
        raise TransferFailed(f"output not copied back: {member.name!r} is {problem}; nothing comes "
                             f"back from an archive with a path outside {top}")
    return PurePosixPath(*parts[1:]).as_posix() if len(parts) > 1 else None


def left_out(relative: str, member: tarfile.TarInfo) -> str | None:
    """Why a member stays in the container, in the words pushtune uses for a mounted output's
    files (jobs.train.metrics.UnsafeOutput), or None for a regular file or a directory."""
    if member.isreg() or member.isdir():
        return None
    return _note(relative, "a symbolic link (not followed)" if member.issym() else "not a regular file")


def _note(relative: str, what: str) -> str:
    shown = relative if relative.isprintable() else repr(relative)  # one line in the log
    return f"{shown} is {what}"


def _over(path: str, limit: int, container_name: str) -> TransferFailed:
    return TransferFailed(f"output not copied back: {path} of container {container_name} "
                          f"is over {limit} bytes ({MAX_OUTPUT_VARIABLE})")


def unpack_output(tar: tarfile.TarFile, top: str, destination: Path, limit: int,
                  container_name: str = "?") -> dict[str, str]:
    """Unpack the tar of a container's directory `top` into the empty directory `destination`,
    member by member: directories, and regular files with the modes of tarfile's `data` filter
    and no owner of their own; a hard link to a regular file as a copy of it. Links, FIFOs and
    devices are left out: the note on each is returned, by its path relative to `top`. Only
    directories and regular files are created, so nothing is ever written through a link.
    TransferFailed for a path outside `top` (absolute, `..`), a `top` that is no directory, or
    more than `limit` bytes written."""
    notes: dict[str, str] = {}
    earlier: dict[str, tarfile.TarInfo] = {}  # by name in the archive: what a hard link names
    written = 0
    for member in tar:
        relative = _below(member, top)
        if relative is None:
            if not member.isdir():
                raise TransferFailed(f"output not copied back: {top} is not a directory")
            continue
        earlier[PurePosixPath(member.name).as_posix()] = member
        # a hard link is what it links to, as a mounted output shows it: a file, a link, a FIFO
        source = earlier.get(PurePosixPath(member.linkname).as_posix()) if member.islnk() else member
        if source is None or (member.islnk() and source.isdir()):  # nothing to copy
            notes[relative] = _note(relative, "not a regular file")
            continue
        if note := left_out(relative, source):
            notes[relative] = note
            continue
        # the data filter's checks and modes, for the member under the name it is unpacked as
        filtered = tarfile.data_filter(source.replace(name=relative, deep=False), str(destination))
        target = destination / relative
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)  # the default mode: the filter sets none
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        content = tar.extractfile(source)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            while content and (chunk := content.read(1 << 20)):
                written += len(chunk)
                if written > limit:  # hard links to one big file: each name is a full copy
                    raise _over(top, limit, container_name)
                out.write(chunk)
            os.fchmod(fd, filtered.mode)
            os.utime(fd, (member.mtime, member.mtime))
    return notes


def _make_staging(beside: Path) -> Path:
    """A new, empty directory next to `beside`, with the mode a plain `mkdir` gives (the output
    directory's, as the runtimes create it), not mkdtemp's 0700."""
    while True:
        staging = beside.with_name(f".{beside.name}-incoming-{os.urandom(4).hex()}")
        try:
            staging.mkdir()
            return staging
        except FileExistsError:
            continue


def _replace_dir(new: Path, old: Path) -> None:
    """`new` takes the place of `old` (the old one, if any, goes)."""
    trash = old.with_name(f".{old.name}-old-{os.urandom(4).hex()}")
    if os.path.lexists(old):
        old.rename(trash)
    new.rename(old)
    if trash.is_symlink():
        trash.unlink()
    elif trash.exists():
        shutil.rmtree(trash)


def copy_output_back(container, output_dir: Path, limit: int) -> dict[str, str]:
    """Make `output_dir` what the container's /output is, but for its links, FIFOs and devices,
    which stay in the container: the notes on them are returned (`unpack_output`). Unpacked
    beside it first, so nothing is written when the archive is refused. TransferFailed says why
    not; NotFound when the container is gone."""
    try:
        archive = _fetch(container, OUTPUT, limit)
    except NotFound:
        raise  # not a failure: there is nothing to copy back, the caller says so
    except (DockerException, requests.RequestException) as exc:
        raise TransferFailed(f"cannot copy {OUTPUT} back from container {container.name}: "
                             f"{getattr(exc, 'explanation', None) or exc}") from None
    staging = None
    try:
        staging = _make_staging(output_dir)
        with archive, tarfile.open(fileobj=archive, mode="r:") as tar:
            notes = unpack_output(tar, OUTPUT, staging, limit, container.name)
        _replace_dir(staging, output_dir)
    except (tarfile.TarError, OSError) as exc:  # a damaged archive; a full disk here
        raise TransferFailed(f"output not copied back from container {container.name}: {exc}") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return notes


def metric_left_out(left: dict[str, str], output_dir: Path) -> str | None:
    """The note on a metric file left in the container, when reading a mounted output would have
    failed on it (jobs.train.metrics.read_metric: metrics.json first, then accuracy.txt): the attempt's
    error then, in the same words."""
    if "metrics.json" in left:
        return left["metrics.json"]
    if "accuracy.txt" in left and not is_regular_file(output_dir / "metrics.json"):
        return left["accuracy.txt"]
    return None


class _ProgressCopy(threading.Thread):
    """Copy transfer: brings the kit's history.json and progress.json back every few seconds
    while the container runs, so the attempt's progress shows as it trains."""

    def __init__(self, container, output_dir: Path, interval: float = PROGRESS_COPY_SECONDS):
        super().__init__(daemon=True)
        self.container, self.output_dir, self.interval = container, output_dir, interval
        self._finished = threading.Event()

    def run(self) -> None:
        while not self._finished.wait(self.interval):
            for name in (HISTORY_FILE, PROGRESS_FILE):  # the kit's order: the curve, then the epoch
                try:
                    self._copy(name)
                except (DockerException, requests.RequestException, OSError, tarfile.TarError,
                        TransferFailed):
                    pass  # not there yet, or the container is ending: the copy after it exits counts

    def stop(self) -> None:
        self._finished.set()
        if self.ident is not None:
            self.join(timeout=30)

    def _copy(self, name: str) -> None:
        with _fetch(self.container, f"{OUTPUT}/{name}", CURVE_LIMIT + 2**16) as archive, \
                tarfile.open(fileobj=archive, mode="r:") as tar:
            member = tar.next()
            if member is None or not member.isreg() or member.name != name or member.size > CURVE_LIMIT:
                return
            extracted = tar.extractfile(member)  # a regular file's: never None
            if extracted is None:
                return
            content = extracted.read()
        partial = self.output_dir / f".{name}.incoming"
        partial.write_bytes(content)
        os.replace(partial, self.output_dir / name)  # the watcher never sees a half-written file


# --- the runtime ----------------------------------------------------------------------------------


class _LogStream(threading.Thread):
    """Copies a container's output into the attempt log (and to the terminal when verbose)."""

    def __init__(self, container, log: TextIO, echo: bool):
        super().__init__(daemon=True)
        self.container, self.log, self.echo = container, log, echo

    def run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            for chunk in self.container.logs(stream=True, follow=True):
                append_log(self.log, decoder.decode(chunk), self.echo)
        except (DockerException, requests.RequestException):
            pass  # the container is gone: its output ends here
        append_log(self.log, decoder.decode(b"", final=True), self.echo)


class _AttemptFailed(Exception):
    """Ends an attempt at once, with its outcome (the output of its container was refused)."""

    def __init__(self, outcome: AttemptOutcome):
        super().__init__(outcome.error)
        self.outcome = outcome


class DockerRuntime:
    """Runs each attempt as `python model.py` in a container of its profile's image."""

    name = "docker"

    def __init__(self, client: docker.DockerClient | None = None, *, memory: str | int = "4g",
                 cpus: float = 2.0, network: str = "bridge", keep: bool = False):
        setting = transfer_setting()
        self.max_output = max_output_bytes()
        self.client = client or images.connect()
        self.memory = parse_memory(memory)
        if not (isinstance(cpus, (int, float)) and math.isfinite(cpus) and cpus > 0):
            raise UserError(f"--cpus {cpus!r}: expected a positive number")
        available = int(self.client.info().get("NCPU") or os.cpu_count() or 1)
        self.cpus = min(float(cpus), float(available))  # Docker refuses more than the host has
        self.network = self._check_network(network)
        self.keep = keep
        self.transfer = choose_transfer(setting, docker_host=os.environ.get("DOCKER_HOST"),
                                        in_container=in_a_container(),
                                        engine_here=lambda: engine_runs_here(self.client))
        self._images: dict[str, str] = {}
        self._running: dict[Path, Container] = {}  # attempt directory -> its container (stop_training)

    @property
    def copies(self) -> bool:
        return self.transfer == "copy"

    def _check_network(self, network: str) -> str:
        if network in REFUSED_NETWORKS or network.startswith("container:"):
            raise UserError(f"--network {network}: not allowed (use bridge, none or a user network)")
        if network != "none" and not self.client.networks.list(names=[network]):
            raise UserError(f"--network {network}: no such Docker network")
        return network

    def image_for(self, which: images.Which) -> str:
        """The image of a profile (or an image name, or a kind), built when missing or stale."""
        name = images.image_name(which)
        if name not in self._images:
            self._images[name] = images.ensure_image(name, self.client)
        return self._images[name]

    def _attempt_containers(self, spec: AttemptSpec) -> list:
        labels = ["pushtune.role=train", f"pushtune.run={spec.run_id}",
                  f"pushtune.attempt={spec.attempt}", f"pushtune.workdir={spec.workdir.resolve()}"]
        return self.client.containers.list(all=True, filters={"label": labels})

    def _copy_back(self, container, spec: AttemptSpec) -> str | None:
        """Copy transfer: the output of a container that ended, back into the attempt's output
        directory; why it was refused (also noted in the log), or None."""
        try:
            notes = copy_output_back(container, spec.output_dir, self.max_output)
        except NotFound:
            return None  # the container is gone: nothing came back, the output stays as it was
        except TransferFailed as exc:
            with open(spec.log_path, "a", encoding="utf-8", errors="replace") as log:
                log.write(f"\n[pushtune] {exc}\n")
            return str(exc)
        if notes:
            with open(spec.log_path, "a", encoding="utf-8", errors="replace") as log:
                log.write("\n" + "".join(f"[pushtune] {note}: left in the container\n"
                                          for note in list(notes.values())[:NOTES_SHOWN]))
                if len(notes) > NOTES_SHOWN:
                    log.write(f"[pushtune] … and {len(notes) - NOTES_SHOWN} more links or special files"
                              " left in the container\n")
        return metric_left_out(notes, spec.output_dir)

    def training_state(self, spec: AttemptSpec) -> TrainingState:
        """The attempt's latest container, found by its labels: what a monitor sees. With the copy
        transfer, the output of one that ended comes back first, as a driver would have copied it."""
        containers = self._attempt_containers(spec)
        if not containers:
            return TrainingState(alive=False, killed="container gone")
        latest = max(containers, key=lambda c: c.attrs["Created"])
        if latest.status in RUNNING:
            return TrainingState(alive=True)
        state = latest.attrs["State"]
        code, oom = state.get("ExitCode"), bool(state.get("OOMKilled"))
        if latest.status == "created":  # its driver died before starting it
            return TrainingState(alive=False, killed="container never started")
        refused = self._copy_back(latest, spec) if self.copies else None
        return TrainingState(alive=False, exit_code=code, oom_killed=oom,
                             killed=refused or death_by_signal(code, oom) or f"exited with code {code}")

    def collect(self, spec: AttemptSpec) -> AttemptOutcome:
        """How the attempt's latest container ended, when it finished with no driver waiting for
        it (a monitor records it); the attempt's finished containers are removed unless --keep.
        With the copy transfer its output comes back first."""
        containers = self._attempt_containers(spec)
        if not containers:
            return AttemptOutcome(exit_code=None)
        latest = max(containers, key=lambda c: c.attrs["Created"])
        outcome = self._ended(latest, spec)
        self._remove_finished(containers)
        return outcome

    def stop_training(self, spec: AttemptSpec) -> None:
        """Kill the container this runtime runs for the attempt (its driver lost the lease),
        never another driver's of the same attempt."""
        container = self._running.get(spec.workdir)
        if container is not None:
            try:
                container.kill()
            except (DockerException, requests.RequestException):
                pass  # it had ended already

    def _ended(self, container, spec: AttemptSpec) -> AttemptOutcome:
        state = container.attrs["State"]
        ended = container.status in ("exited", "dead")
        outcome = AttemptOutcome(exit_code=state.get("ExitCode") if ended else None,
                                 oom_killed=bool(state.get("OOMKilled")), container=container.name)
        if ended and self.copies:
            outcome.error = self._copy_back(container, spec)
        return outcome

    def _remove_finished(self, containers: list) -> None:
        if not self.keep:
            for container in containers:
                if container.status not in RUNNING:
                    self._remove(container, force=True)

    def _take_over(self, spec: AttemptSpec) -> AttemptOutcome | None:
        """A driver taking an attempt over: its dead driver's finished containers go. With the copy
        transfer, the latest one's output comes back first; when it holds the metric (or was
        refused) that is the attempt's outcome, and nothing is started again."""
        containers = self._attempt_containers(spec)
        outcome = None
        if self.copies and containers:
            ended = self._ended(max(containers, key=lambda c: c.attrs["Created"]), spec)
            if ended.error or (ended.exit_code is not None and metric_written(spec.output_dir)):
                outcome = ended
        self._remove_finished(containers)
        return outcome

    def run(self, spec: AttemptSpec, on_restart: OnRestart | None = None) -> AttemptOutcome:
        image = self.image_for(spec.profile)
        if spec.resume:
            taken = self._take_over(spec)
            if taken:
                return taken
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        spec.cache_dir.mkdir(parents=True, exist_ok=True)
        user = container_user()
        if os.getuid() == 0 and not self.copies:
            for path in (spec.output_dir, spec.cache_dir):
                _give_to(path, user)
        with open(spec.log_path, "a", encoding="utf-8", errors="replace") as log:
            def run_once(resume: bool, restart: int, deadline: float | None) -> Exit:
                return self._run_container(spec, image, user, log, resume, restart, deadline)

            try:
                outcome = supervise(spec, run_once, log, on_restart)
            except _AttemptFailed as failed:
                outcome = failed.outcome
        if os.getuid() == 0 and not self.copies:
            hand_back(spec.output_dir)
        return outcome

    def container_config(self, spec: AttemptSpec, image: str, user: tuple[int, int],
                         resume: bool, restart: int) -> dict:
        """The arguments of `containers.create` for one container of the attempt."""
        environment = {
            **passed_env(os.environ, host=False),
            **contract_env(spec, output=OUTPUT, data=DATA if spec.data_dir else None, cache=CACHE,
                           resume=resume),
        }
        tmpfs: tuple[str, ...]
        if self.copies:
            mounts, volumes, tmpfs = [], volumes_of(spec), ("/tmp",)  # /work is a volume instead
            docker_mounts = [Mount(v["target"], v["source"], type="volume") for v in volumes]
        else:
            mounts, volumes, tmpfs = mounts_of(spec), [], TMPFS
            docker_mounts = [Mount(m["target"], m["source"], type="bind", read_only=m["read_only"])
                             for m in mounts]
        labels = {
            "pushtune.role": "train",
            "pushtune.run": str(spec.run_id),
            "pushtune.attempt": str(spec.attempt),
            "pushtune.restart": str(restart),
            "pushtune.kind": spec.kind,
            "pushtune.model": spec.model_name,
            "pushtune.workdir": str(spec.workdir.resolve()),
            # How the container was made, for whoever inspects it (`docker inspect`); pushtune itself
            # rebuilds an attempt's spec from the store (loop.attempt_spec).
            "pushtune.spec": json.dumps({
                "image": image, "user": f"{user[0]}:{user[1]}", "transfer": self.transfer,
                "mounts": mounts, "volumes": volumes,
                "memory": self.memory, "cpus": self.cpus, "network": self.network,
                "max_restarts": spec.max_restarts, "timeout": spec.timeout,
                "environment": {k: v for k, v in environment.items() if k != "PUSHTUNE_RESUME"},
            }),
        }
        return dict(
            image=image, command=LAUNCH_COMMAND, name=container_name(spec, restart),
            labels=labels, environment=environment, user=f"{user[0]}:{user[1]}",
            working_dir=WORKDIR, mounts=docker_mounts,
            mem_limit=self.memory, memswap_limit=self.memory,  # no swap: over the limit is OOM
            nano_cpus=int(self.cpus * 1e9), network_mode=self.network,
            privileged=False, cap_drop=["ALL"], security_opt=["no-new-privileges"],
            init=True,  # a real PID 1 forwards `docker stop`'s SIGTERM to python
            read_only=True, pids_limit=PIDS_LIMIT,
            # exec: the script runs code of its own anyway, and libraries load what they build
            # in /tmp; size: tmpfs is memory, which the memory limit counts too
            tmpfs={path: f"rw,exec,nosuid,nodev,mode=1777,size={self.memory}" for path in tmpfs},
        )

    def _copy_inputs(self, container, spec: AttemptSpec, user: tuple[int, int]) -> None:
        """Copy transfer: model.py and params.json (read-only) into /work, the attempt's output so
        far (its checkpoints, on a resume) into /output as the container user's, the data
        (read-only) into /data."""
        work = [(path, path.name) for path in (spec.script, spec.workdir / "params.json")
                if path.is_file()]
        try:
            output = _tree(spec.output_dir)
            data = _tree(Path(spec.data_dir)) if spec.data_dir else []
        except OSError as exc:
            raise UserError(f"cannot read {exc.filename}: {exc.strerror or exc}") from None
        copy_in(container, WORKDIR, work, ROOT_USER, writable=False)
        copy_in(container, OUTPUT, output, user, writable=True)
        copy_in(container, DATA, data, ROOT_USER, writable=False)

    def _create(self, config: dict):
        try:
            return self.client.containers.create(**config)
        except APIError as exc:
            if exc.status_code != 409:
                raise UserError(f"cannot create container {config['name']}: {exc.explanation}") from None
        # The name is taken: by a kept container of this attempt (an earlier driver's) when it is
        # not running; else by a live one, and this one gets a suffix.
        old = self.client.containers.get(config["name"])
        if old.status == "running":
            config = {**config, "name": f"{config['name']}-{os.urandom(3).hex()}"}
        else:
            old.remove(force=True, v=True)
        return self.client.containers.create(**config)

    def _run_container(self, spec: AttemptSpec, image: str, user: tuple[int, int], log: TextIO,
                       resume: bool, restart: int, deadline: float | None) -> Exit:
        container = self._create(self.container_config(spec, image, user, resume, restart))
        self._running[spec.workdir] = container
        stream = _LogStream(container, log, spec.verbose)
        progress = _ProgressCopy(container, spec.output_dir) if self.copies else None
        started = False
        try:
            if self.copies:
                self._copy_inputs(container, spec, user)
            container.start()
            started = True
            stream.start()
            if progress:
                progress.start()
            code, timed_out = self._wait(container, deadline)
            oom_killed, lost = False, False
            try:
                container.reload()
                state = container.attrs["State"]
                code, oom_killed = state.get("ExitCode", code), bool(state.get("OOMKilled"))
            except NotFound:
                lost = True
        except BaseException:
            self._abandon(container, spec, progress, started)
            raise
        finally:
            if stream.ident is not None:
                stream.join(timeout=10)
        if progress:
            progress.stop()
        refused = self._copy_back(container, spec) if self.copies and not lost else None
        if not self.keep:
            self._remove(container)
        if refused:
            raise _AttemptFailed(AttemptOutcome(
                code, oom_killed=oom_killed, restarts=restart - spec.previous_restarts,
                container=container.name, error=refused))
        killed = "container lost" if lost else death_by_signal(code, oom_killed)
        return Exit(code, timed_out=timed_out, killed=None if timed_out else killed,
                    oom_killed=oom_killed, container=container.name)

    def _abandon(self, container, spec: AttemptSpec, progress: _ProgressCopy | None,
                 started: bool) -> None:
        """The driver is interrupted: the container goes. With the copy transfer the output of a
        started one comes back first (best effort), so a resume finds the checkpoints it would
        have found mounted."""
        if progress:
            progress.stop()
        if self.copies and started:
            try:
                container.kill()
            except (DockerException, requests.RequestException):
                pass  # it had ended already
            try:
                self._copy_back(container, spec)
            except Exception:  # the interruption is what is reported
                pass
        self._remove(container, force=True)

    def _wait(self, container, deadline: float | None) -> tuple[int | None, bool]:
        """(exit code, timed out): waits for the container, stops it at the deadline."""
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.1)
        try:
            return container.wait(timeout=remaining).get("StatusCode"), False
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError):
            if deadline is None or time.monotonic() < deadline:
                raise
        except NotFound:
            return None, False
        try:
            container.stop(timeout=STOP_GRACE_SECONDS)
            return container.wait(timeout=STOP_GRACE_SECONDS * 4).get("StatusCode"), True
        except NotFound:
            return None, True

    def _remove(self, container, force: bool = False) -> None:
        """Removes a container with its own volumes (the copy transfer's; never the shared cache)."""
        try:
            container.remove(force=force, v=True)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise


AUTO_PROBE_SECONDS = 10  # how long `auto` waits for an engine before it runs locally


def engine_problem(timeout: float = AUTO_PROBE_SECONDS) -> str | None:
    """The registry's need "a Docker engine": None when one answers, else why not (one line)."""
    try:
        client = images.connect(timeout=timeout)
    except UserError as exc:
        return str(exc)
    client.close()
    return None


def create(*, memory: str | int = "4g", cpus: float = 2.0, network: str = "bridge",
           keep: bool = False, **unused) -> DockerRuntime:
    """The registry's factory: a DockerRuntime of the engine DOCKER_HOST names, or UserError when
    no engine answers (said before any option is checked)."""
    return DockerRuntime(images.connect(), memory=memory, cpus=cpus, network=network, keep=keep)
