"""The layout's rules hold, and would catch a break: the import-linter contracts of pyproject.toml
(each one broken on purpose in a copy of the code), and no function-local import of pushtune's own
modules, with every lazy library import saying why it is lazy."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.fixture(scope="module")
def copy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layout")
    for package in ("jobs", "notify"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


# (module, the import added to it, the contract that must then break)
FORBIDDEN_EDGES = [
    ("jobs/tune/objective.py", "import docker", "tuning knows no runtime"),
    ("jobs/tune/strategies.py", "from jobs.train import runtime", "tuning knows no runtime"),
    ("jobs/classify/classifier.py", "from jobs.train import runtime", "classifying never reaches training"),
    ("jobs/serve/server.py", "from jobs.ci import jenkins", "the model server knows nothing of Jenkins"),
    ("jobs/autolog/lines.py", "from jobs import errors", "what runs inside an attempt"),
    ("jobs/train/runtime.py", "from jobs.train import docker_runtime", "the runtimes sit below their registry"),
    ("jobs/store/run_store.py", "from jobs.train import metrics", "commands → ci → pipeline"),
    ("jobs/report/html_report.py", "from jobs import steps", "commands → ci → pipeline"),
]


@pytest.mark.parametrize(("module", "line", "contract"), FORBIDDEN_EDGES,
                         ids=[f"{module}:{line}" for module, line, _ in FORBIDDEN_EDGES])
def test_a_forbidden_edge_breaks_its_contract(copy_root, module, line, contract):
    path = copy_root / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n\ndef _late():\n    {line}  # a function-local import counts too\n")
        result = lint_imports(copy_root)
    finally:
        path.write_text(original)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in broken, result.stdout[-3000:]


def local_imports() -> list[tuple[Path, int, str, bool]]:
    """Every import inside a function of jobs/ and notify/: (file, line, module, has a comment)."""
    found = []
    for path in sorted([*ROOT.joinpath("jobs").rglob("*.py"), *ROOT.joinpath("notify").rglob("*.py")]):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        inside = {node.lineno: node for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))}
        for number, node in sorted(inside.items()):
            module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            first = number  # the first line of its group of imports carries (or follows) the comment
            while first - 1 in inside:
                first -= 1
            said = "#" in lines[first - 1] or lines[first - 2].strip().startswith("#")
            found.append((path.relative_to(ROOT), number, module or "", said))
    return found


def test_no_function_local_import_of_pushtune_and_every_lazy_library_says_why():
    found = local_imports()
    assert found, "the scan found no function-local import at all: it is not looking"
    ours = [f"{path}:{line} {module}" for path, line, module, _ in found if module.split(".")[0] in {"jobs", "notify"}]
    silent = [f"{path}:{line} {module}" for path, line, module, said in found if not said]
    assert not ours, "function-local imports of pushtune's own modules (a hidden cycle?): " + ", ".join(ours)
    assert not silent, "lazy library imports without a comment saying why: " + ", ".join(silent)
