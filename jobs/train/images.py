"""The Docker images that attempts run in: build, list, and make sure one is there.

Which images there are comes from the profiles (`jobs.train.profiles`): each (kind, framework)
profile names its image (cnn, ann, regression, torch), built from `dockerfiles/<image>.Dockerfile`
into `pushtune/<image>:<version>`, and the requirements set it installs; profiles may share an
image (cnn/pytorch and ann/pytorch both run in torch). The functions here take an image name,
a kind (its default profile's image), a `kind/framework` profile name or a `Profile`.

An image is built from a build context assembled here: the Dockerfile, its requirements file,
the part of the `jobs` package model scripts import, and a wheelhouse. Online builds start from
`python:3.11-slim` and pip installs from PyPI; offline builds start from the local
`pushtune/base:bookworm` (scripts/build-base-image.sh) and install from the wheelhouse only (`pip
download` on the host, from its configured indexes, fills it first, and the build gets no
network). An image carries a content hash of its recipe as a label, so a changed Dockerfile,
requirements file or kit module means a rebuild.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import docker
from docker.errors import DockerException, ImageNotFound

from jobs import __version__
from jobs.errors import UserError
from jobs.paths import DOCKERFILES, PROJECT_ROOT
from jobs.train import profiles
from jobs.train.profiles import Profile

ONLINE_BASE_IMAGE = "python:3.11-slim"
OFFLINE_BASE_IMAGE = "pushtune/base:bookworm"
OFFLINE_PIP_OPTIONS = "--no-index --find-links /wheelhouse"
# Image -> the requirements set it installs (dockerfiles/requirements-<set>.txt), from the profiles.
REQUIREMENT_SETS: dict[str, str] = dict(profiles.IMAGES)
IMAGES: tuple[str, ...] = tuple(REQUIREMENT_SETS)
KINDS = IMAGES  # the older name: cnn, ann and regression are named after the kind they first served
# Model scripts import only `jobs.kit`; copying the rest of the package would only make every
# change to the pipeline rebuild the images.
# What of pushtune runs inside an attempt: the kit model scripts import, and the launcher every
# attempt runs with its capture (standard library at module level, frameworks when imported).
SCRIPT_MODULES = ("jobs/__init__.py", "jobs/kit.py", "jobs/launch.py", *sorted(
    f"jobs/autolog/{path.name}" for path in (PROJECT_ROOT / "jobs" / "autolog").glob("*.py")))
HASH_LABEL = "pushtune.content-hash"
KIND_LABEL = "pushtune.kind"  # the image's name (older images: their kind); every pushtune image has it
IMAGE_LABEL = "pushtune.image"
PROFILES_LABEL = "pushtune.profiles"  # "cnn/pytorch ann/pytorch"

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


Which = str | Profile  # an image name, a kind, "kind/framework", or a profile


def image_name(which: Which) -> str:
    """The image `which` names: an image (cnn, ann, regression, torch), a kind (its default
    profile's image), a profile `kind/framework`, or a `Profile`; UserError for anything else."""
    if isinstance(which, Profile):
        return which.image
    if which in REQUIREMENT_SETS:
        return which
    if "/" in which:  # a profile: a UserError when there is none
        kind, _, framework = which.partition("/")
        return profiles.get(kind, framework).image
    if which in profiles.KINDS:
        return profiles.get(which).image
    raise UserError(f"no image for {which!r} (images: {', '.join(IMAGES)}; "
                    f"profiles: {', '.join(profiles.names())})")


def _profile_of(which: Which) -> Profile:
    """A profile of the image: where its Dockerfile's and requirements file's names come from."""
    return profiles.of_image(image_name(which))[0]


def image_tag(which: Which) -> str:
    return profiles.image_tag(image_name(which))


def dockerfile_of(which: Which) -> Path:
    return DOCKERFILES / _profile_of(which).dockerfile


def requirements_of(which: Which) -> Path:
    return DOCKERFILES / _profile_of(which).requirements_file


def recipe_files(which: Which) -> dict[str, Path]:
    """Build-context path -> file, for everything but the wheelhouse."""
    files = {
        f"dockerfiles/{dockerfile_of(which).name}": dockerfile_of(which),
        f"dockerfiles/{requirements_of(which).name}": requirements_of(which),
    }
    files.update({name: PROJECT_ROOT / name for name in SCRIPT_MODULES})
    return files


def content_hash(which: Which) -> str:
    """sha256 of the image's recipe: its Dockerfile, requirements and the copied modules."""
    digest = hashlib.sha256()
    for name, path in sorted(recipe_files(which).items()):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def wheelhouse_dir() -> Path:
    """$PUSHTUNE_WHEELHOUSE, else ~/.cache/pushtune/wheelhouse: kept across runs and homes."""
    configured = os.environ.get("PUSHTUNE_WHEELHOUSE")
    if configured:
        return Path(configured).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "pushtune" / "wheelhouse"


def fill_wheelhouse(which: Which, echo: Echo = _stderr) -> Path:
    """Download (on the host, from pip's configured indexes) the wheels the image needs that the
    wheelhouse lacks. One wheelhouse per requirements set: images sharing a set share it."""
    target = wheelhouse_dir() / REQUIREMENT_SETS[image_name(which)]
    target.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
           "--only-binary=:all:", "--dest", str(target), "-r", str(requirements_of(which))]
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


def build_context(which: Which, wheelhouse: Path | None) -> IO[bytes]:
    """The build context as an uncompressed tar in a temporary file (wheels can be large)."""
    context = tempfile.TemporaryFile(prefix="pushtune-context-")
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, path in sorted(recipe_files(which).items()):
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
    which: Which,
    *,
    client: docker.DockerClient | None = None,
    offline: bool = False,
    base_image: str | None = None,
    no_cache: bool = False,
    echo: Echo = _stderr,
) -> str:
    """Build `pushtune/<image>:<version>`, streaming Docker's output to `echo`; returns the tag."""
    name = image_name(which)
    tag = image_tag(name)
    client = client or connect(timeout=None)
    base = base_image or (OFFLINE_BASE_IMAGE if offline else ONLINE_BASE_IMAGE)
    if offline and not image_exists(client, base):
        hint = " (scripts/build-base-image.sh builds it)" if base == OFFLINE_BASE_IMAGE else ""
        raise UserError(f"offline build: base image {base} is not in the local engine{hint}")
    wheelhouse = fill_wheelhouse(name, echo) if offline else None
    echo(f"building {tag} from {base} ({'offline' if offline else 'online'})\n")
    labels = {KIND_LABEL: name, IMAGE_LABEL: name, HASH_LABEL: content_hash(name),
              PROFILES_LABEL: " ".join(p.name for p in profiles.of_image(name)),
              "pushtune.version": __version__, "pushtune.base-image": base}
    with build_context(name, wheelhouse) as context:
        try:
            stream = client.api.build(
                fileobj=context, custom_context=True, tag=tag, labels=labels,
                dockerfile=f"dockerfiles/{dockerfile_of(name).name}", nocache=no_cache,
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


def is_current(client: docker.DockerClient, which: Which) -> bool:
    """True when the image exists and was built from the recipe as it is now."""
    try:
        image = client.images.get(image_tag(which))
    except ImageNotFound:
        return False
    return (image.labels or {}).get(HASH_LABEL) == content_hash(which)


def ensure_image(which: Which, client: docker.DockerClient | None = None, echo: Echo = _stderr) -> str:
    """The image's tag (of a profile, kind or image name), built first when it is missing or
    out of date.

    The build is offline when the local base image (scripts/build-base-image.sh) is there, else
    online from python:3.11-slim.
    """
    name = image_name(which)
    client = client or connect()
    if is_current(client, name):
        return image_tag(name)
    offline = image_exists(client, OFFLINE_BASE_IMAGE)
    echo(f"image {image_tag(name)} is missing or out of date; building it\n")

    def steps_only(text: str) -> None:
        if text.startswith(("Step ", "Successfully", "building ", "filling ")):
            echo(text)

    return build_image(name, offline=offline, echo=steps_only)  # own client: no read timeout


@dataclass
class ImageInfo:
    image: str
    profiles: str  # the profiles that run in it: "cnn/pytorch ann/pytorch"
    tag: str
    size: int
    created: str
    current: bool


def list_images(client: docker.DockerClient | None = None) -> list[ImageInfo]:
    """pushtune's images in the local engine, by image then tag."""
    client = client or connect()
    found = []
    for image in client.images.list(filters={"label": KIND_LABEL}):
        labels = image.labels or {}
        name = labels.get(IMAGE_LABEL) or labels.get(KIND_LABEL, "?")
        current = name in REQUIREMENT_SETS and labels.get(HASH_LABEL) == content_hash(name)
        served = " ".join(p.name for p in profiles.of_image(name)) or labels.get(PROFILES_LABEL, "")
        for tag in image.tags:  # untagged ones are old builds
            found.append(ImageInfo(name, served, tag, int(image.attrs.get("Size") or 0),
                                   str(image.attrs.get("Created", ""))[:19].replace("T", " "),
                                   current and tag == image_tag(name)))
    return sorted(found, key=lambda info: (info.image, info.tag))
