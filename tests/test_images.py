"""The images of the profiles: recipes, build contexts, the wheelhouse, and `pushtune images`."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import docker
import pytest

from conftest import requires_engine, unavailable
from jobs.errors import UserError
from jobs.train import images, profiles
from jobs.tune import tweaks

ROOT = Path(__file__).resolve().parent.parent




def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)==(\S+)", line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_every_image_has_a_dockerfile_pinned_like_the_project():
    project = pins(ROOT / "requirements.txt")
    assert images.IMAGES == ("cnn", "ann", "regression", "torch")
    for name in images.IMAGES:
        dockerfile = images.dockerfile_of(name).read_text()
        assert "ARG BASE_IMAGE=python:3.11-slim" in dockerfile
        assert "USER 1000:1000" in dockerfile
        assert f"COPY dockerfiles/{images.requirements_of(name).name} /tmp/requirements.txt" in dockerfile
        image_pins = pins(images.requirements_of(name))
        assert image_pins, name
        for package, version in image_pins.items():
            assert project.get(package) == version, f"{name}: {package}=={version} vs requirements.txt"
    assert "tensorflow-cpu" not in pins(images.requirements_of("regression"))
    assert "tensorflow-cpu" in pins(images.requirements_of("ann"))
    torch = pins(images.requirements_of("torch"))
    assert torch["torch"] == "2.13.0" and "tensorflow-cpu" not in torch  # 2.13.0+cpu where served
    assert {"numpy", "scikit-learn", "pillow"} <= set(torch)


def test_each_profile_names_its_image_and_how_it_resumes():
    assert [p.name for p in profiles.PROFILES] == [
        "cnn/keras", "ann/keras", "regression/sklearn", "cnn/pytorch", "ann/pytorch"]
    by_name = {p.name: p for p in profiles.PROFILES}
    assert {name: p.image for name, p in by_name.items()} == {
        "cnn/keras": "cnn", "ann/keras": "ann", "regression/sklearn": "regression",
        "cnn/pytorch": "torch", "ann/pytorch": "torch"}
    assert by_name["cnn/pytorch"].resume.weights == "torch.pt"
    assert by_name["ann/keras"].resume.weights == "latest.weights.h5"
    assert by_name["regression/sklearn"].resume is profiles.RESTART
    for p in profiles.PROFILES:
        assert images.image_name(p) == images.image_name(p.name) == p.image
        assert images.image_tag(p) == p.tag == f"pushtune/{p.image}:{images.__version__}"
        assert images.dockerfile_of(p).name == p.dockerfile and images.dockerfile_of(p).is_file()
        assert images.requirements_of(p).name == p.requirements_file and images.requirements_of(p).is_file()
        assert tweaks.ladder_of(p.kind, p.framework) == tweaks.PROFILE_LADDERS[(p.kind, p.framework)] != ()
    # a kind alone means its first profile: what older runs (and `images build cnn`) name
    assert profiles.get("cnn") is by_name["cnn/keras"] and images.image_name("cnn") == "cnn"
    assert profiles.get("ann", "none") is by_name["ann/keras"]
    assert images.image_name("ann/pytorch") == "torch"
    assert profiles.checkpoint_weights() == ("latest.weights.h5", "torch.pt")


def test_unknown_image_or_profile_is_a_user_error():
    with pytest.raises(UserError, match=r"no image for 'svm' \(images: cnn, ann, regression, torch; profiles: "
                                        r"cnn/keras, ann/keras, regression/sklearn, cnn/pytorch, ann/pytorch\)"):
        images.image_tag("svm")
    with pytest.raises(UserError, match="no profile for cnn/jax"):
        images.image_tag("cnn/jax")
    with pytest.raises(UserError, match="no profile for rnn"):
        profiles.get("rnn")


def _copy_recipes(tmp_path: Path, monkeypatch) -> Path:
    root = tmp_path / "project"
    shutil.copytree(ROOT / "dockerfiles", root / "dockerfiles")
    for name in images.SCRIPT_MODULES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    monkeypatch.setattr(images, "PROJECT_ROOT", root)
    monkeypatch.setattr(images, "DOCKERFILES", root / "dockerfiles")
    return root


def test_content_hash_follows_the_dockerfile_requirements_and_kit(tmp_path, monkeypatch):
    root = _copy_recipes(tmp_path, monkeypatch)
    before = {name: images.content_hash(name) for name in images.IMAGES}
    assert len(set(before.values())) == len(images.IMAGES) == 4  # every image has its own recipe
    assert images.content_hash("cnn/pytorch") == images.content_hash("ann/pytorch") == before["torch"]

    with open(root / "dockerfiles" / "cnn.Dockerfile", "a") as handle:
        handle.write("# changed\n")
    assert images.content_hash("cnn") != before["cnn"]
    assert images.content_hash("ann") == before["ann"]

    with open(root / "jobs" / "kit.py", "a") as handle:
        handle.write("\n# changed\n")
    assert images.content_hash("regression") != before["regression"]
    assert images.content_hash("torch") != before["torch"]

    (root / "jobs" / "loop.py").write_text("# not copied into images\n")
    changed = images.content_hash("ann")
    (root / "jobs" / "loop.py").write_text("# still not copied\n")
    assert images.content_hash("ann") == changed


def test_build_context_holds_the_recipe_and_the_wheels_only(tmp_path):
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    (wheelhouse / "demo-1.0-py3-none-any.whl").write_bytes(b"not really a wheel")
    with images.build_context("ann", wheelhouse) as context:
        data = context.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert set(members) == {
            "dockerfiles/ann.Dockerfile", "dockerfiles/requirements-tensorflow.txt",
            *images.SCRIPT_MODULES, "wheelhouse", "wheelhouse/demo-1.0-py3-none-any.whl",
        }
        assert {"jobs/kit.py", "jobs/launch.py", "jobs/autolog/for_keras.py"} <= set(members)
        assert archive.extractfile("jobs/kit.py").read() == (ROOT / "jobs/kit.py").read_bytes()
        assert {(m.uid, m.gid, m.mtime) for m in members.values()} == {(0, 0, 0)}
    with images.build_context("ann", wheelhouse) as again:
        assert again.read() == data  # same files, same bytes: Docker's cache key does not move
    with images.build_context("regression", None) as online:
        with tarfile.open(fileobj=online) as archive:
            names = archive.getnames()
    assert "wheelhouse" in names and not any(n.startswith("wheelhouse/") for n in names)


def test_wheelhouse_is_filled_only_with_what_is_missing(tmp_path, monkeypatch):
    cached = images.wheelhouse_dir() / "regression"
    if not cached.is_dir() or not any(cached.glob("scikit_learn-*.whl")):
        unavailable(f"no filled regression wheelhouse at {cached} (pushtune images build --offline)")
    local = tmp_path / "wheelhouse"
    (local / "regression").mkdir(parents=True)
    for wheel in cached.glob("*.whl"):
        (local / "regression" / wheel.name).symlink_to(wheel)
    monkeypatch.setenv("PUSHTUNE_WHEELHOUSE", str(local))
    # Any index pip would reach is dead: filling succeeds only when nothing needs fetching.
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")

    assert images.fill_wheelhouse("regression", echo=lambda text: None) == local / "regression"

    next((local / "regression").glob("scikit_learn-*.whl")).unlink()
    messages: list[str] = []
    with pytest.raises(UserError, match="cannot fill the wheelhouse"):
        images.fill_wheelhouse("regression", echo=messages.append)
    assert messages and "pip download" in messages[0]


def test_images_build_rejects_an_unknown_kind_in_one_line(cli):
    result = cli("images", "build", "svm")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "pushtune: error: no image for 'svm' (images: cnn, ann, regression, torch; "
        "profiles: cnn/keras, ann/keras, regression/sklearn, cnn/pytorch, ann/pytorch)")
    result = cli("images", "build", "ann/jax")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("pushtune: error: no profile for ann/jax (profiles: cnn/keras, ")


def test_images_build_takes_images_kinds_and_profiles(cli):
    usage = cli("images", "build", "--help")
    assert usage.returncode == 0
    text = " ".join(usage.stdout.split())
    assert "an image (cnn, ann, regression, torch)" in text and "cnn/pytorch" in text


# A framework added the way profiles.py says: one record, a Dockerfile and a requirements file.
NEW_PROFILE = """
PROFILES = PROFILES + (
    Profile("ann", "jax", image="jax", requirements="jax", resume=RESTART, description="JAX networks"),
)
BY_KEY = _checked(PROFILES)
IMAGES = {p.image: p.requirements for p in PROFILES}
"""

CHECK_NEW_PROFILE = textwrap.dedent("""\
    import json
    from pathlib import Path
    from jobs.train import images
    from jobs.train.runtime import AttemptSpec

    spec = AttemptSpec(run_id=1, attempt=1, kind="ann", framework="jax", model_name="m.py",
                       workdir=Path("."), data_dir=None, cache_dir=Path("."), params={})
    print(json.dumps({
        "images": images.IMAGES, "tag": images.image_tag("ann/jax"), "spec_image": spec.profile.image,
        "dockerfile": images.dockerfile_of("jax").name, "requirements": images.requirements_of("jax").name,
        "context": sorted(images.recipe_files("jax")), "hash": len(images.content_hash("jax")),
    }))
""")


def test_adding_a_profile_is_one_record_plus_its_dockerfile_and_requirements(tmp_path):
    root = tmp_path / "project"
    shutil.copytree(ROOT / "jobs", root / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "dockerfiles", root / "dockerfiles")
    before = {path.relative_to(root) for path in root.rglob("*") if path.is_file()}
    with open(root / "jobs" / "train" / "profiles.py", "a") as handle:  # the one module touched
        handle.write(NEW_PROFILE)
    (root / "dockerfiles" / "jax.Dockerfile").write_text(
        (ROOT / "dockerfiles" / "regression.Dockerfile").read_text().replace("regression", "jax"))
    (root / "dockerfiles" / "requirements-jax.txt").write_text("jax==0.0.0\n")
    after = {path.relative_to(root) for path in root.rglob("*") if path.is_file()}
    assert after - before == {Path("dockerfiles/jax.Dockerfile"), Path("dockerfiles/requirements-jax.txt")}

    env = {**os.environ, "PYTHONPATH": str(root)}

    def python(*args: str) -> str:
        result = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    seen = json.loads(python("-c", CHECK_NEW_PROFILE))
    assert seen["images"] == ["cnn", "ann", "regression", "torch", "jax"]
    assert seen["tag"] == f"pushtune/jax:{images.__version__}" and seen["spec_image"] == "jax"
    assert (seen["dockerfile"], seen["requirements"]) == ("jax.Dockerfile", "requirements-jax.txt")
    assert seen["context"] == sorted(["dockerfiles/jax.Dockerfile", "dockerfiles/requirements-jax.txt",
                                      *images.SCRIPT_MODULES])
    assert seen["hash"] == 64
    usage = " ".join(python("-m", "jobs", "images", "build", "--help").split())
    assert "an image (cnn, ann, regression, torch, jax)" in usage and "ann/jax" in usage


def test_images_list_without_an_engine_is_one_line(cli, tmp_path):
    result = cli("images", "list", env={"DOCKER_HOST": f"unix://{tmp_path}/dead.sock"})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no Docker engine answers" in result.stderr


@pytest.mark.docker
@requires_engine
def test_offline_build_then_list_shows_a_current_labelled_image(cli):
    client = docker.from_env()
    if not images.image_exists(client, images.OFFLINE_BASE_IMAGE):
        unavailable(f"{images.OFFLINE_BASE_IMAGE} not built (scripts/build-base-image.sh)")
    built = cli("images", "build", "regression", "--offline")
    assert built.returncode == 0, built.stderr
    assert "Successfully tagged pushtune/regression:" in built.stdout
    assert re.search(r"^built pushtune/regression:\S+ in [\d.]+ s$", built.stdout, re.M)

    image = client.images.get(images.image_tag("regression"))
    assert image.labels[images.HASH_LABEL] == images.content_hash("regression")
    assert image.labels[images.KIND_LABEL] == "regression"
    assert image.labels[images.IMAGE_LABEL] == "regression"
    assert image.labels[images.PROFILES_LABEL] == "regression/sklearn"
    assert image.attrs["Config"]["User"] == "1000:1000"
    assert images.is_current(client, "regression")

    listed = cli("images", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "pushtune/regression:" in line)
    assert "regression" in row and "regression/sklearn" in row and "MB" in row and "yes" in row
