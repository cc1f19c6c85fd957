"""The per-kind Docker images that attempts run in: build, list, and make sure one is there.

Each kind has `dockerfiles/<kind>.Dockerfile`, built into `pushtune/<kind>:<version>` from a
build context assembled here: the Dockerfile, its requirements file, the part of the `jobs`
package model scripts import, and a wheelhouse. Online builds start from `python:3.11-slim` and
pip installs from PyPI; offline builds start from the local `pushtune/base:bookworm`
(scripts/build-base-image.sh) and install from the wheelhouse only (`pip download` on the host
fills it first, and the build gets no network). An image carries a content hash of its recipe as
a label, so a changed Dockerfile, requirements file or kit module means a rebuild.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import docker
from docker.errors import DockerException, ImageNotFound

from jobs import __version__
from jobs.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = PROJECT_ROOT / "dockerfiles"
ONLINE_BASE_IMAGE = "python:3.11-slim"
OFFLINE_BASE_IMAGE = "pushtune/base:bookworm"
OFFLINE_PIP_OPTIONS = "--no-index --find-links /wheelhouse"
# Kind -> the requirements set its image installs (dockerfiles/requirements-<set>.txt).
REQUIREMENT_SETS = {"cnn": "tensorflow", "ann": "tensorflow", "regression": "regression"}
KINDS = tuple(REQUIREMENT_SETS)
# Model scripts import only `jobs.kit`; copying the rest of the package would only make every
# change to the pipeline rebuild the images.
SCRIPT_MODULES = ("jobs/__init__.py", "jobs/kit.py")
HASH_LABEL = "pushtune.content-hash"
KIND_LABEL = "pushtune.kind"

Echo = Callable[[str], None]


def _stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def connect(timeout: float | None = 60) -> docker.DockerClient:
    """A client of the engine DOCKER_HOST (or the default socket) names, or UserError."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as exc:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise UserError(
            f"no Docker engine answers at {where} ({_first_line(exc)}); start one with "
            f"`sudo systemctl start docker` or scripts/start-docker.sh"
        ) from None
    return client


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_kind(kind: str) -> str:
    if kind not in REQUIREMENT_SETS:
        raise UserError(f"no image for kind {kind!r} (kinds: {', '.join(KINDS)})")
    return kind


def image_tag(kind: str) -> str:
    return f"pushtune/{check_kind(kind)}:{__version__}"


def dockerfile_of(kind: str) -> Path:
    return DOCKERFILES / f"{check_kind(kind)}.Dockerfile"


def requirements_of(kind: str) -> Path:
    return DOCKERFILES / f"requirements-{REQUIREMENT_SETS[check_kind(kind)]}.txt"


def recipe_files(kind: str) -> dict[str, Path]:
    """Build-context path -> file, for everything but the wheelhouse."""
    files = {
        f"dockerfiles/{dockerfile_of(kind).name}": dockerfile_of(kind),
        f"dockerfiles/{requirements_of(kind).name}": requirements_of(kind),
    }
    files.update({name: PROJECT_ROOT / name for name in SCRIPT_MODULES})
    return files


def content_hash(kind: str) -> str:
    """sha256 of the image's recipe: its Dockerfile, requirements and the copied modules."""
    digest = hashlib.sha256()
    for name, path in sorted(recipe_files(kind).items()):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def wheelhouse_dir() -> Path:
    """$PUSHTUNE_WHEELHOUSE, else ~/.cache/pushtune/wheelhouse: kept across runs and homes."""
    configured = os.environ.get("PUSHTUNE_WHEELHOUSE")
    if configured:
        return Path(configured).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "pushtune" / "wheelhouse"


def fill_wheelhouse(kind: str, echo: Echo = _stderr) -> Path:
    """Download (on the host) the wheels the kind's image needs that the wheelhouse lacks."""
    target = wheelhouse_dir() / REQUIREMENT_SETS[check_kind(kind)]
    target.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
           "--only-binary=:all:", "--dest", str(target), "-r", str(requirements_of(kind))]
    # Everything already there resolves from the wheelhouse alone, without touching an index.
    complete = subprocess.run([*pip, "--no-index", "--find-links", str(target)],
                              capture_output=True, text=True)
    if complete.returncode == 0:
        return target
    echo(f"filling the wheelhouse {target} (pip download)\n")
    fetched = subprocess.run([*pip, "--progress-bar", "off"], capture_output=True, text=True)
    if fetched.returncode != 0:
        reason = (fetched.stderr.strip().splitlines() or ["pip download failed"])[-1]
        raise UserError(f"cannot fill the wheelhouse {target}: {reason}")
    return target


def _add_file(archive: tarfile.TarFile, name: str, path: Path) -> None:
    # Owner and times are normalised so the same files always give the same cache key.
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
    with open(path, "rb") as handle:
        archive.addfile(info, handle)


def _add_dir(archive: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    archive.addfile(info)


def build_context(kind: str, wheelhouse: Path | None) -> IO[bytes]:
    """The build context as an uncompressed tar in a temporary file (wheels can be large)."""
    context = tempfile.TemporaryFile(prefix="pushtune-context-")
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, path in sorted(recipe_files(kind).items()):
            _add_file(archive, name, path)
        _add_dir(archive, "wheelhouse")
        if wheelhouse is not None:
            for wheel in sorted(wheelhouse.iterdir()):
                if wheel.is_file() and not wheel.name.startswith("."):
                    _add_file(archive, f"wheelhouse/{wheel.name}", wheel)
    context.seek(0)
    return context


def image_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except ImageNotFound:
        return False
    return True


def build_image(
    kind: str,
    *,
    client: docker.DockerClient | None = None,
    offline: bool = False,
    base_image: str | None = None,
    no_cache: bool = False,
    echo: Echo = _stderr,
) -> str:
    """Build `pushtune/<kind>:<version>`, streaming Docker's output to `echo`; returns the tag."""
    tag = image_tag(kind)
    client = client or connect(timeout=None)
    base = base_image or (OFFLINE_BASE_IMAGE if offline else ONLINE_BASE_IMAGE)
    if offline and not image_exists(client, base):
        hint = " (scripts/build-base-image.sh builds it)" if base == OFFLINE_BASE_IMAGE else ""
        raise UserError(f"offline build: base image {base} is not in the local engine{hint}")
    wheelhouse = fill_wheelhouse(kind, echo) if offline else None
    echo(f"building {tag} from {base} ({'offline' if offline else 'online'})\n")
    labels = {KIND_LABEL: kind, HASH_LABEL: content_hash(kind), "pushtune.version": __version__,
              "pushtune.base-image": base}
    with build_context(kind, wheelhouse) as context:
        try:
            stream = client.api.build(
                fileobj=context, custom_context=True, tag=tag, labels=labels,
                dockerfile=f"dockerfiles/{dockerfile_of(kind).name}", nocache=no_cache,
                rm=True, forcerm=True, pull=False, decode=True,
                buildargs={"BASE_IMAGE": base, "PIP_OPTIONS": OFFLINE_PIP_OPTIONS if offline else ""},
                # An offline build must not need the network: it gets none, so a gap shows at once.
                network_mode="none" if offline else None,
            )
            for chunk in stream:
                if "error" in chunk:
                    lines = str(chunk["error"]).strip().splitlines() or ["unknown error"]
                    raise UserError(f"building {tag} failed: {lines[-1]}")
                text = chunk.get("stream") or (chunk.get("status") and f"{chunk['status']}\n")
                if text:
                    echo(text)
        except DockerException as exc:
            raise UserError(f"building {tag} failed: {_first_line(exc)}") from None
    # The image this tag named before is now untagged: drop it (layers still in use stay).
    client.images.prune(filters={"dangling": True, "label": KIND_LABEL})
    return tag


def is_current(client: docker.DockerClient, kind: str) -> bool:
    """True when the kind's image exists and was built from the recipe as it is now."""
    try:
        image = client.images.get(image_tag(kind))
    except ImageNotFound:
        return False
    return (image.labels or {}).get(HASH_LABEL) == content_hash(kind)


def ensure_image(kind: str, client: docker.DockerClient | None = None, echo: Echo = _stderr) -> str:
    """The kind's image tag, built first when it is missing or out of date.

    The build is offline when the local base image (scripts/build-base-image.sh) is there, else
    online from python:3.11-slim.
    """
    client = client or connect()
    if is_current(client, kind):
        return image_tag(kind)
    offline = image_exists(client, OFFLINE_BASE_IMAGE)
    echo(f"image {image_tag(kind)} is missing or out of date; building it\n")

    def steps_only(text: str) -> None:
        if text.startswith(("Step ", "Successfully", "building ", "filling ")):
            echo(text)

    return build_image(kind, offline=offline, echo=steps_only)  # own client: no read timeout


@dataclass
class ImageInfo:
    kind: str
    tag: str
    size: int
    created: str
    current: bool


def list_images(client: docker.DockerClient | None = None) -> list[ImageInfo]:
    """pushtune's images in the local engine, by kind then tag."""
    client = client or connect()
    found = []
    for image in client.images.list(filters={"label": KIND_LABEL}):
        labels = image.labels or {}
        kind = labels.get(KIND_LABEL, "?")
        current = kind in REQUIREMENT_SETS and labels.get(HASH_LABEL) == content_hash(kind)
        for tag in image.tags:  # untagged ones are old builds
            found.append(ImageInfo(kind, tag, int(image.attrs.get("Size") or 0),
                                   str(image.attrs.get("Created", ""))[:19].replace("T", " "),
                                   current and tag == image_tag(kind)))
    return sorted(found, key=lambda info: (info.kind, info.tag))
