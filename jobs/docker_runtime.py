"""`DockerRuntime`: every attempt in a container of its own, from the image of its file's kind.

A container is named `pushtune-<run>-<attempt>` (`-r<n>` for the n-th restart) and labelled with
what a monitor needs to recreate it. It runs as the invoking user (the image's unprivileged user
when that is root), with every capability dropped, memory, CPU and process limits, a read-only
root filesystem (tmpfs `/tmp` and `/work`), the attempt's `model.py` and `params.json` and the
data read-only, and only the output and cache writable.
Its output streams into the attempt's log. Like `LocalRuntime`, a container killed from outside
(a signal, the OOM killer, a lost container) before a metric is written is started again with
`PUSHTUNE_RESUME=1`, a bounded number of times, and the attempt timeout stops it.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import TextIO

import docker
import requests
from docker.errors import APIError, DockerException, NotFound
from docker.types import Mount
from docker.utils import parse_bytes

from jobs import images
from jobs.errors import UserError
from jobs.runtime import (
    AttemptOutcome,
    AttemptSpec,
    Exit,
    LocalRuntime,
    OnRestart,
    Runtime,
    TrainingState,
    append_log,
    contract_env,
    passed_env,
    supervise,
)

WORKDIR, OUTPUT, DATA, CACHE = "/work", "/output", "/data", "/cache"
IMAGE_USER = (1000, 1000)  # the unprivileged `pushtune` user of dockerfiles/*.Dockerfile
STOP_GRACE_SECONDS = 5
MIN_MEMORY = 6 * 2**20  # Docker refuses less
PIDS_LIMIT = 2048  # processes and threads: TensorFlow starts a few per CPU; a fork bomb stops here
TMPFS = ("/tmp", WORKDIR)  # writable on the read-only root, as the image's HOME=/tmp and /work were
REFUSED_NETWORKS = ("host",)  # would share the host's network stack


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
    """`pushtune-<run>-<attempt>[-r<n>]`, within Docker's name rules [a-zA-Z0-9][a-zA-Z0-9_.-]*."""
    base = f"pushtune-{spec.run_id}-{spec.attempt}" + (f"-r{restart}" if restart else "")
    return re.sub(r"[^a-zA-Z0-9_.-]+", "_", base)


def parse_memory(memory: str | int) -> int:
    try:
        value = parse_bytes(memory)
    except DockerException:
        value = None
    if not isinstance(value, int) or value < MIN_MEMORY:
        raise UserError(f"--memory {memory!r}: expected a size of at least 6m, such as 512m or 4g")
    return value


def container_user() -> tuple[int, int]:
    """The invoking user's uid:gid; root gets the image's unprivileged user instead."""
    uid, gid = os.getuid(), os.getgid()
    return IMAGE_USER if uid == 0 else (uid, gid)


def _give_to(path: Path, owner: tuple[int, int]) -> None:
    """As root: hand a writable mount to the container's user (only what it does not own yet)."""
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, entry) for entry in dirs + files)]:
            stat = os.lstat(name)
            if (stat.st_uid, stat.st_gid) != owner:
                os.lchown(name, *owner)


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


class DockerRuntime:
    """Runs each attempt as `python model.py` in a container of the kind's image."""

    name = "docker"

    def __init__(self, client: docker.DockerClient | None = None, *, memory: str | int = "4g",
                 cpus: float = 2.0, network: str = "bridge", keep: bool = False):
        self.client = client or images.connect()
        self.memory = parse_memory(memory)
        if not (isinstance(cpus, (int, float)) and math.isfinite(cpus) and cpus > 0):
            raise UserError(f"--cpus {cpus!r}: expected a positive number")
        available = int(self.client.info().get("NCPU") or os.cpu_count() or 1)
        self.cpus = min(float(cpus), float(available))  # Docker refuses more than the host has
        self.network = self._check_network(network)
        self.keep = keep
        self._images: dict[str, str] = {}

    def _check_network(self, network: str) -> str:
        if network in REFUSED_NETWORKS or network.startswith("container:"):
            raise UserError(f"--network {network}: not allowed (use bridge, none or a user network)")
        if network != "none" and not self.client.networks.list(names=[network]):
            raise UserError(f"--network {network}: no such Docker network")
        return network

    def image_for(self, kind: str) -> str:
        if kind not in self._images:
            self._images[kind] = images.ensure_image(kind, self.client)
        return self._images[kind]

    def _attempt_containers(self, spec: AttemptSpec) -> list:
        labels = ["pushtune.role=train", f"pushtune.run={spec.run_id}",
                  f"pushtune.attempt={spec.attempt}", f"pushtune.workdir={spec.workdir.resolve()}"]
        return self.client.containers.list(all=True, filters={"label": labels})

    def training_state(self, spec: AttemptSpec) -> TrainingState:
        """The attempt's latest container, found by its labels: what a monitor sees."""
        containers = self._attempt_containers(spec)
        if not containers:
            return TrainingState(alive=False, killed="container gone")
        latest = max(containers, key=lambda c: c.attrs["Created"])
        if latest.status in ("running", "paused", "restarting"):
            return TrainingState(alive=True)
        state = latest.attrs["State"]
        code, oom = state.get("ExitCode"), bool(state.get("OOMKilled"))
        if latest.status == "created":  # its driver died before starting it
            return TrainingState(alive=False, killed="container never started")
        return TrainingState(alive=False, exit_code=code, oom_killed=oom,
                             killed=death_by_signal(code, oom) or f"exited with code {code}")

    def collect(self, spec: AttemptSpec) -> AttemptOutcome:
        """How the attempt's latest container ended, when it finished with no driver waiting for
        it (a monitor records it); the attempt's finished containers are removed unless --keep."""
        containers = self._attempt_containers(spec)
        if not containers:
            return AttemptOutcome(exit_code=None)
        latest = max(containers, key=lambda c: c.attrs["Created"])
        state = latest.attrs["State"]
        ended = latest.status in ("exited", "dead")
        outcome = AttemptOutcome(exit_code=state.get("ExitCode") if ended else None,
                                 oom_killed=bool(state.get("OOMKilled")), container=latest.name)
        self._remove_finished(containers)
        return outcome

    def _remove_finished(self, containers: list) -> None:
        if not self.keep:
            for container in containers:
                if container.status not in ("running", "paused", "restarting"):
                    self._remove(container, force=True)

    def run(self, spec: AttemptSpec, on_restart: OnRestart | None = None) -> AttemptOutcome:
        image = self.image_for(spec.kind)
        if spec.resume:  # taking over: the dead driver's finished containers go
            self._remove_finished(self._attempt_containers(spec))
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        spec.cache_dir.mkdir(parents=True, exist_ok=True)
        user = container_user()
        if os.getuid() == 0:
            for path in (spec.output_dir, spec.cache_dir):
                _give_to(path, user)
        with open(spec.log_path, "a", encoding="utf-8", errors="replace") as log:
            def run_once(resume: bool, restart: int, deadline: float | None) -> Exit:
                return self._run_container(spec, image, user, log, resume, restart, deadline)

            return supervise(spec, run_once, log, on_restart)

    def container_config(self, spec: AttemptSpec, image: str, user: tuple[int, int],
                         resume: bool, restart: int) -> dict:
        """The arguments of `containers.create` for one container of the attempt."""
        mounts = mounts_of(spec)
        environment = {
            **passed_env(os.environ, host=False),
            **contract_env(spec, output=OUTPUT, data=DATA if spec.data_dir else None, cache=CACHE,
                           resume=resume),
        }
        labels = {
            "pushtune.role": "train",
            "pushtune.run": str(spec.run_id),
            "pushtune.attempt": str(spec.attempt),
            "pushtune.restart": str(restart),
            "pushtune.kind": spec.kind,
            "pushtune.model": spec.model_name,
            "pushtune.workdir": str(spec.workdir.resolve()),
            # What a monitor needs to start the training again exactly so (with resume).
            "pushtune.spec": json.dumps({
                "image": image, "user": f"{user[0]}:{user[1]}", "mounts": mounts,
                "memory": self.memory, "cpus": self.cpus, "network": self.network,
                "max_restarts": spec.max_restarts, "timeout": spec.timeout,
                "environment": {k: v for k, v in environment.items() if k != "PUSHTUNE_RESUME"},
            }),
        }
        return dict(
            image=image, command=["python", "model.py"], name=container_name(spec, restart),
            labels=labels, environment=environment, user=f"{user[0]}:{user[1]}",
            working_dir=WORKDIR,
            mounts=[Mount(m["target"], m["source"], type="bind", read_only=m["read_only"])
                    for m in mounts],
            mem_limit=self.memory, memswap_limit=self.memory,  # no swap: over the limit is OOM
            nano_cpus=int(self.cpus * 1e9), network_mode=self.network,
            privileged=False, cap_drop=["ALL"], security_opt=["no-new-privileges"],
            init=True,  # a real PID 1 forwards `docker stop`'s SIGTERM to python
            read_only=True, pids_limit=PIDS_LIMIT,
            # exec: the script runs code of its own anyway, and libraries load what they build
            # in /tmp; size: tmpfs is memory, which the memory limit counts too
            tmpfs={path: f"rw,exec,nosuid,nodev,mode=1777,size={self.memory}" for path in TMPFS},
        )

    def _create(self, config: dict):
        try:
            return self.client.containers.create(**config)
        except APIError as exc:
            if exc.status_code != 409:
                raise UserError(f"cannot create container {config['name']}: {exc.explanation}") from None
        # The name is taken: by a kept container of an earlier run with the same numbers (another
        # PUSHTUNE_HOME) when it is not running; else by a live one, and this one gets a suffix.
        old = self.client.containers.get(config["name"])
        if old.status == "running":
            config = {**config, "name": f"{config['name']}-{os.urandom(3).hex()}"}
        else:
            old.remove(force=True)
        return self.client.containers.create(**config)

    def _run_container(self, spec: AttemptSpec, image: str, user: tuple[int, int], log: TextIO,
                       resume: bool, restart: int, deadline: float | None) -> Exit:
        container = self._create(self.container_config(spec, image, user, resume, restart))
        stream = _LogStream(container, log, spec.verbose)
        try:
            container.start()
            stream.start()
            code, timed_out = self._wait(container, deadline)
            oom_killed, lost = False, False
            try:
                container.reload()
                state = container.attrs["State"]
                code, oom_killed = state.get("ExitCode", code), bool(state.get("OOMKilled"))
            except NotFound:
                lost = True
        except BaseException:
            self._remove(container, force=True)
            raise
        finally:
            if stream.ident is not None:
                stream.join(timeout=10)
        if not self.keep:
            self._remove(container)
        killed = "container lost" if lost else death_by_signal(code, oom_killed)
        return Exit(code, timed_out=timed_out, killed=None if timed_out else killed,
                    oom_killed=oom_killed, container=container.name)

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
        try:
            container.remove(force=force)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise


def select(name: str, *, memory: str | int = "4g", cpus: float = 2.0, network: str = "bridge",
           keep: bool = False) -> Runtime:
    """`docker`: a DockerRuntime, or UserError when no engine answers. `auto`: Docker when an
    engine answers, else a LocalRuntime (the caller shows which by `.name`)."""
    if name == "docker":
        return DockerRuntime(images.connect(), memory=memory, cpus=cpus, network=network, keep=keep)
    if name == "auto":
        try:
            client = images.connect(timeout=10)
        except UserError:
            return LocalRuntime()
        return DockerRuntime(client, memory=memory, cpus=cpus, network=network, keep=keep)
    raise UserError(f"unknown runtime {name!r} (choose local, docker or auto)")
