"""One profile per (kind, framework): the image an attempt runs in, the tweaks tried, and how a
killed training resumes.

The classifier names a pushed file's kind (cnn, ann, regression) and framework (keras, pytorch,
sklearn). Everything downstream asks the profile of that pair: `jobs.train.images` (which images
there are, their Dockerfiles and requirements), the Docker runtime (the image of an attempt's
profile, `AttemptSpec.profile`), `pushtune images build|list`
and the job chain's start step (which images to build).

Adding a framework is one `Profile` record here plus its `dockerfiles/<image>.Dockerfile` and
`dockerfiles/requirements-<requirements>.txt` (profiles may share an image, as the two PyTorch
ones do); its tweaks are records in `jobs/tune/tweaks/registry.py`, which also holds its ladder.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs import __version__
from jobs.errors import UserError

# The checkpoint's epoch, in the format Keras' BackupAndRestore writes ({"epoch": n, "batch": 0}),
# next to the weights in <output>/checkpoints; the kit writes it for PyTorch too.
CHECKPOINT_METADATA = "training_metadata.json"


@dataclass(frozen=True)
class Resume:
    """How a training killed mid-way comes back (a restart, a monitor, a warm start)."""

    name: str
    how: str  # for people
    weights: str | None  # the file in <output>/checkpoints holding the last epoch's state; None: none


KERAS_BACKUP = Resume(
    "keras", "kit.callbacks(): Keras BackupAndRestore keeps weights, optimizer state and epoch in "
    "output/checkpoints; fit() starts again at the saved epoch", "latest.weights.h5")
TORCH_CHECKPOINT = Resume(
    "torch", "kit.torch_epoch_end() saves model, optimizer state and epoch to output/checkpoints/torch.pt; "
    "kit.torch_resume() loads them and returns the epoch to start at", "torch.pt")
RESTART = Resume("restart", "no checkpoint: a killed training starts again from the beginning", None)


@dataclass(frozen=True)
class Profile:
    kind: str  # as jobs.classify.classifier names them
    framework: str
    image: str  # pushtune/<image>:<version>, built from dockerfiles/<image>.Dockerfile
    requirements: str  # the set the image installs: dockerfiles/requirements-<requirements>.txt
    resume: Resume
    description: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.framework)

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.framework}"

    @property
    def tag(self) -> str:
        return image_tag(self.image)

    @property
    def dockerfile(self) -> str:
        """The Dockerfile's name in dockerfiles/."""
        return f"{self.image}.Dockerfile"

    @property
    def requirements_file(self) -> str:
        """The requirements file's name in dockerfiles/."""
        return f"requirements-{self.requirements}.txt"


# The first profile of a kind is its default: for a run recorded without a framework, and what
# `pushtune images build KIND` builds.
PROFILES: tuple[Profile, ...] = (
    Profile("cnn", "keras", image="cnn", requirements="tensorflow", resume=KERAS_BACKUP,
            description="convolutional networks in TensorFlow/Keras"),
    Profile("ann", "keras", image="ann", requirements="tensorflow", resume=KERAS_BACKUP,
            description="dense networks in TensorFlow/Keras"),
    Profile("regression", "sklearn", image="regression", requirements="regression", resume=RESTART,
            description="scikit-learn linear models (no TensorFlow)"),
    Profile("cnn", "pytorch", image="torch", requirements="torch", resume=TORCH_CHECKPOINT,
            description="convolutional networks in PyTorch (CPU build)"),
    Profile("ann", "pytorch", image="torch", requirements="torch", resume=TORCH_CHECKPOINT,
            description="dense (Linear) networks in PyTorch (CPU build)"),
)


def _checked(records: tuple[Profile, ...]) -> dict[tuple[str, str], Profile]:
    by_key: dict[tuple[str, str], Profile] = {}
    sets: dict[str, str] = {}
    for record in records:
        if record.key in by_key:
            raise ValueError(f"profile {record.name} is defined twice")
        if sets.setdefault(record.image, record.requirements) != record.requirements:
            raise ValueError(f"image {record.image}: its profiles name different requirements sets")
        by_key[record.key] = record
    return by_key


BY_KEY: dict[tuple[str, str], Profile] = _checked(PROFILES)
KINDS: tuple[str, ...] = tuple(dict.fromkeys(p.kind for p in PROFILES))
# Image name -> the requirements set it installs, in the order the profiles name them.
IMAGES: dict[str, str] = {p.image: p.requirements for p in PROFILES}


def names() -> list[str]:
    return [p.name for p in PROFILES]


def get(kind: str, framework: str | None = None) -> Profile:
    """The profile of (kind, framework); without a framework (a run recorded before profiles,
    a framework-neutral caller) the kind's default. UserError when there is none."""
    if framework in (None, "", "none"):
        found = next((p for p in PROFILES if p.kind == kind), None)
    else:
        found = BY_KEY.get((kind, framework))
    if found is None:
        wanted = f"{kind}/{framework}" if framework not in (None, "", "none") else kind
        raise UserError(f"no profile for {wanted} (profiles: {', '.join(names())})")
    return found


def of_image(image: str) -> tuple[Profile, ...]:
    """The profiles that run in an image."""
    return tuple(p for p in PROFILES if p.image == image)


def image_tag(image: str) -> str:
    return f"pushtune/{image}:{__version__}"


def checkpoint_weights() -> tuple[str, ...]:
    """The files in <output>/checkpoints that hold a resumable training's state, over all profiles."""
    return tuple(dict.fromkeys(p.resume.weights for p in PROFILES if p.resume.weights))
