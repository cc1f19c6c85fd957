"""What people install: `make install` (requirements.txt, every pin), `pip install .` (the core of
pyproject.toml, extras for the frameworks), and the Jenkins images (the core under the same pins).

The pins must resolve where pip sees only the public index (no local version labels such as
`+cpu`), and the core must run a model through the Docker runtime without TensorFlow, torch or
scikit-learn on the host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT, requires_engine

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
JENKINS_DOCKERFILES = {"controller": ROOT / "jenkins" / "Dockerfile", "agent": ROOT / "jenkins" / "agent.Dockerfile"}
HEAVY = {"tensorflow", "tensorflow-cpu", "keras", "torch", "scikit-learn"}


def pinned(path: Path) -> dict[str, str]:
    """Package name (canonical) -> the version its `==` pin names."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            [spec] = requirement.specifier
            assert spec.operator == "==", (path.name, line)
            found[canonicalize_name(requirement.name)] = spec.version
    return found


def requirement_files() -> list[Path]:
    return [ROOT / "requirements.txt", ROOT / "requirements-bench.txt",
            *sorted((ROOT / "dockerfiles").glob("requirements-*.txt"))]


def declared() -> list[Requirement]:
    """pyproject.toml's dependencies and its extras' (not the extras naming other extras)."""
    project = PYPROJECT["project"]
    lines = [*project["dependencies"], *(line for extra in project["optional-dependencies"].values()
                                         for line in extra)]
    return [Requirement(line) for line in lines if not line.startswith("pushtune[")]


def test_every_pin_is_on_the_public_index_and_names_no_index():
    """A local version label (`torch==2.13.0+cpu`) exists only on the index that built it."""
    for path in requirement_files():
        text = path.read_text()
        assert not re.search(r"^\s*-", text, re.M), f"{path.name}: pip options belong to pip's configuration"
        for name, version in pinned(path).items():
            assert "+" not in version, f"{path.name}: {name}=={version} has a local version label"


def test_pyproject_declares_what_requirements_txt_pins():
    pins = pinned(ROOT / "requirements.txt")
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not pinned in requirements.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (str(requirement), pins[name])
        for extra in requirement.extras:  # psycopg[binary]: its binary package pinned alike
            assert pins.get(f"{name}-{extra}") == pins[name], requirement
    core = {canonicalize_name(Requirement(line).name) for line in PYPROJECT["project"]["dependencies"]}
    assert not core & HEAVY, "the core must not need a framework"


def test_the_package_holds_every_module_and_the_files_it_builds_from():
    setuptools = PYPROJECT["tool"]["setuptools"]
    mapped = setuptools["package-dir"]
    found = {str(path.parent.relative_to(ROOT)).replace("/", ".")
             for top in ("jobs", "notify") for path in (ROOT / top).rglob("__init__.py")}
    assert set(setuptools["packages"]) == found | set(mapped)
    from jobs import paths
    from jobs.ci import jenkins
    from jobs.train import images
    assert mapped == {"jobs.recipes.dockerfiles": "dockerfiles", "jobs.recipes.jenkins_jobs": "jenkins/jobs"}
    assert images.DOCKERFILES == paths.DOCKERFILES == ROOT / "dockerfiles"  # a checkout uses its own
    assert jenkins.JOBS_DIR == ROOT / "jenkins" / "jobs"


def _install_line(dockerfile: Path) -> list[str]:
    """The arguments of the Dockerfile's `pip install` of pushtune, as a list."""
    text = dockerfile.read_text().replace("\\\n", " ")
    [line] = re.findall(r"/opt/pushtune/venv/bin/pip install ([^&\n]*/opt/pushtune/src\S*)", text)
    return line.replace("'", "").split()


@pytest.mark.parametrize("image", sorted(JENKINS_DOCKERFILES))
def test_jenkins_images_install_the_core_under_the_projects_pins(image):
    dockerfile = JENKINS_DOCKERFILES[image]
    text = dockerfile.read_text()
    args = _install_line(dockerfile)
    assert args[-3:-1] == ["-c", "/opt/pushtune/src/requirements.txt"]
    assert args[-1] == {"controller": "/opt/pushtune/src", "agent": "/opt/pushtune/src[postgres]"}[image]
    assert "-r" not in args and "$PIP_OPTIONS" in args
    # pip's index comes from the host running compose, as build arguments pip reads
    for variable in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        assert re.search(rf"^ARG {variable}$", text, re.M), variable
    compose = yaml.safe_load((ROOT / "jenkins" / "docker-compose.yml").read_text())
    [build] = [s["build"] for s in compose["services"].values()
               if s.get("build", {}).get("dockerfile") == str(dockerfile.relative_to(ROOT))]
    assert build["args"] == ["PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"]


@pytest.mark.slow
def test_jenkins_images_resolve_without_a_framework_at_the_pinned_versions(tmp_path):
    """pip (this machine's configuration) resolves each Jenkins image's install as the Dockerfile
    writes it: nothing heavy, and every package requirements.txt pins at its pin."""
    pins = pinned(ROOT / "requirements.txt")
    for image, dockerfile in sorted(JENKINS_DOCKERFILES.items()):
        args = [arg.replace("/opt/pushtune/src", str(ROOT)) for arg in _install_line(dockerfile)
                if arg not in ("$PIP_OPTIONS", "--no-cache-dir")]
        report = tmp_path / f"{image}.json"
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                                 "--quiet", "--report", str(report), *args],
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]
        installed = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
                     for item in json.loads(report.read_text())["install"]}
        assert not installed.keys() & HEAVY, (image, installed.keys() & HEAVY)
        assert ("psycopg" in installed) == (image == "agent")
        for name, version in installed.items():
            assert name not in pins or pins[name] == version, (image, name, version)


@pytest.mark.docker
@pytest.mark.slow
@requires_engine
def test_a_fresh_venv_with_the_core_alone_trains_a_model_in_docker(tmp_path):
    """`pip install <checkout>` (no extras, this machine's pip configuration) into a new venv, then
    that pushtune, away from the checkout, runs a scikit-learn model in the regression image."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    installed = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", str(ROOT)],
                               capture_output=True, text=True, timeout=1800)
    assert installed.returncode == 0, installed.stderr[-2000:]
    listed = subprocess.run([venv / "bin" / "python", "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, timeout=300, check=True)
    packages = {canonicalize_name(p["name"]) for p in json.loads(listed.stdout)}
    assert "pushtune" in packages and not packages & HEAVY, packages & HEAVY

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "models" / "regression_logistic.py", work)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHTUNE_", "PYTHON"))}
    env["PUSHTUNE_HOME"] = str(tmp_path / "home")

    def pushtune(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([venv / "bin" / "pushtune", *args], cwd=work, env={**env, **extra},
                              capture_output=True, text=True, timeout=1800)

    run = pushtune("run", "regression_logistic.py", "--runtime", "docker", "--threshold", "0.5",
                   "--max-attempts", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "passed: best accuracy" in run.stdout
    shown = json.loads(pushtune("show", "1", "--json").stdout)
    assert shown["status"] == "passed" and shown["attempts"][0]["accuracy"] > 0.5
    # a library of an extra that is not installed: one line naming the extra, before anything is recorded
    optuna = pushtune("run", "regression_logistic.py", "--runtime", "docker", "--strategy", "optuna")
    assert optuna.returncode == 2 and optuna.stderr.strip().splitlines() == [
        "pushtune: error: --strategy optuna: optuna is not installed: pip install 'pushtune[optuna]' (or make install)"]
    assert [run["run_id"] for run in json.loads(pushtune("runs", "--json").stdout)] == [1]
    missing = pushtune("runs", PUSHTUNE_DB="postgresql://pushtune@127.0.0.1:1/pushtune")
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.strip() == ("pushtune: error: psycopg is not installed: "
                                      "pip install 'pushtune[postgres]' (or make install)")
