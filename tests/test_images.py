"""The per-kind images: recipes, build contexts, the wheelhouse, and `pushtune images`."""

from __future__ import annotations

import io
import re
import shutil
import tarfile
from pathlib import Path

import docker
import pytest

from jobs import images
from conftest import requires_engine
from jobs.errors import UserError

ROOT = Path(__file__).resolve().parent.parent




def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)==(\S+)", line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_every_kind_has_a_dockerfile_pinned_like_the_project():
    project = pins(ROOT / "requirements.txt")
    for kind in images.KINDS:
        dockerfile = images.dockerfile_of(kind).read_text()
        assert "ARG BASE_IMAGE=python:3.11-slim" in dockerfile
        assert "USER 1000:1000" in dockerfile
        image_pins = pins(images.requirements_of(kind))
        assert image_pins, kind
        for name, version in image_pins.items():
            assert project.get(name) == version, f"{kind}: {name}=={version} vs requirements.txt"
    assert "tensorflow-cpu" not in pins(images.requirements_of("regression"))
    assert "tensorflow-cpu" in pins(images.requirements_of("ann"))


def test_unknown_kind_is_a_user_error():
    with pytest.raises(UserError, match="no image for kind 'svm'"):
        images.image_tag("svm")


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
    before = {kind: images.content_hash(kind) for kind in images.KINDS}
    assert len(set(before.values())) == 3  # every kind has its own recipe

    with open(root / "dockerfiles" / "cnn.Dockerfile", "a") as handle:
        handle.write("# changed\n")
    assert images.content_hash("cnn") != before["cnn"]
    assert images.content_hash("ann") == before["ann"]

    with open(root / "jobs" / "kit.py", "a") as handle:
        handle.write("\n# changed\n")
    assert images.content_hash("regression") != before["regression"]

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
            "jobs/__init__.py", "jobs/kit.py", "wheelhouse", "wheelhouse/demo-1.0-py3-none-any.whl",
        }
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
        pytest.skip(f"no filled regression wheelhouse at {cached} (pushtune images build --offline)")
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
    assert result.stderr.strip() == "pushtune: error: no image for kind 'svm' (kinds: cnn, ann, regression)"


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
        pytest.skip(f"{images.OFFLINE_BASE_IMAGE} not built (scripts/build-base-image.sh)")
    built = cli("images", "build", "regression", "--offline")
    assert built.returncode == 0, built.stderr
    assert "Successfully tagged pushtune/regression:" in built.stdout
    assert re.search(r"^built pushtune/regression:\S+ in [\d.]+ s$", built.stdout, re.M)

    image = client.images.get(images.image_tag("regression"))
    assert image.labels[images.HASH_LABEL] == images.content_hash("regression")
    assert image.labels[images.KIND_LABEL] == "regression"
    assert image.attrs["Config"]["User"] == "1000:1000"
    assert images.is_current(client, "regression")

    listed = cli("images", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "pushtune/regression:" in line)
    assert "regression" in row and "MB" in row and "yes" in row
