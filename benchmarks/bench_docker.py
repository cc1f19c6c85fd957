"""The Docker runtime's cost: per-attempt overhead against the local runtime, and image builds.

Overhead: a trivial script (writes metrics.json, imports nothing heavy) run as attempts by
`LocalRuntime` and by `DockerRuntime` (regression image), median of several each. Builds: cold
(base image from Debian's archive, wheelhouse from the index, `--no-cache` image builds) and warm
(every layer cached, wheelhouse full). Cold builds take minutes; BENCH_DOCKER_COLD=0 skips them.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 7
TARGET_OVERHEAD = 1.5
TRIVIAL_SCRIPT = """\
import json, os
with open(os.path.join(os.environ["PUSHTUNE_OUTPUT"], "metrics.json"), "w") as handle:
    json.dump({"accuracy": 1.0}, handle)
"""


def _attempt_seconds(runtime, root: Path, n: int) -> float:
    from jobs.train.runtime import AttemptSpec

    workdir = root / f"attempt-{n}"
    (workdir / "output").mkdir(parents=True)
    (workdir / "model.py").write_text(TRIVIAL_SCRIPT)
    (workdir / "params.json").write_text("{}\n")
    spec = AttemptSpec(run_id=990000 + n, attempt=1, kind="regression", model_name="trivial.py",
                       workdir=workdir, data_dir=None, cache_dir=root / "cache", params={},
                       timeout=120, max_restarts=0)
    started = time.perf_counter()
    outcome = runtime.run(spec)
    seconds = time.perf_counter() - started
    if outcome.exit_code != 0 or not (workdir / "output" / "metrics.json").exists():
        raise RuntimeError(f"trivial attempt failed: {outcome} {(workdir / 'log.txt').read_text()}")
    return seconds


def overhead() -> tuple[float, float]:
    from jobs.train.docker_runtime import DockerRuntime
    from jobs.train.runtime import LocalRuntime

    docker_runtime = DockerRuntime(memory="512m", cpus=1)
    docker_runtime.image_for("regression")  # a missing image is built here, not timed
    with tempfile.TemporaryDirectory(prefix="bench-docker-") as tmp:
        root = Path(tmp)
        (root / "cache").mkdir()
        _attempt_seconds(docker_runtime, root / "warmup", 0)  # page cache, first container
        local = [_attempt_seconds(LocalRuntime(), root / "local", n) for n in range(RUNS)]
        docker = [_attempt_seconds(docker_runtime, root / "docker", n) for n in range(RUNS)]
    return statistics.median(local), statistics.median(docker)


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def builds(cold: bool) -> list[tuple[str, str]]:
    from jobs.train import images

    quiet = lambda text: None  # noqa: E731
    rows = []
    if cold:
        tag = "pushtune/base:bench-cold"
        seconds = _timed(lambda: subprocess.run(
            [str(ROOT / "scripts/build-base-image.sh"), "--force", "--tag", tag],
            check=True, capture_output=True))
        subprocess.run(["docker", "image", "rm", tag], capture_output=True)
        rows.append(("base image (debootstrap + import), cold", f"{seconds:.0f} s"))
        with tempfile.TemporaryDirectory(prefix="bench-wheelhouse-") as tmp:
            os.environ["PUSHTUNE_WHEELHOUSE"] = tmp
            one_per_set = {wheels: image for image, wheels in images.REQUIREMENT_SETS.items()}
            try:
                seconds = _timed(lambda: [images.fill_wheelhouse(k, quiet) for k in one_per_set.values()])
            finally:
                del os.environ["PUSHTUNE_WHEELHOUSE"]
                shutil.rmtree(tmp, ignore_errors=True)
        rows.append((f"wheelhouse (pip download, {len(one_per_set)} sets), cold", f"{seconds:.0f} s"))
        for kind in ("regression", "ann", "cnn", "torch"):
            seconds = _timed(lambda kind=kind: images.build_image(kind, offline=True, no_cache=kind != "cnn",
                                                                  echo=quiet))
            label = "cold (--no-cache)" if kind != "cnn" else "after ann (shares its layers)"
            rows.append((f"`{kind}` image offline, {label}", f"{seconds:.0f} s"))
    for kind in images.KINDS:
        seconds = _timed(lambda kind=kind: images.build_image(kind, offline=True, echo=quiet))
        rows.append((f"`{kind}` image offline, warm (all layers cached)", f"{seconds:.1f} s"))
    return rows


def main() -> str:
    import docker
    from docker.errors import DockerException

    try:
        docker.from_env(timeout=5).ping()
    except DockerException as exc:
        return f"## Docker runtime\n\nNot measured: no Docker engine answers ({exc})."
    cold = os.environ.get("BENCH_DOCKER_COLD", "1") != "0"
    build_rows = builds(cold)
    local, in_docker = overhead()
    extra = in_docker - local
    verdict = "meets" if extra < TARGET_OVERHEAD else "misses"
    lines = [
        "## Docker runtime",
        "",
        f"Per-attempt overhead on a trivial script (writes metrics.json), median of {RUNS}:",
        "",
        "| runtime | seconds per attempt |",
        "| --- | --- |",
        f"| local (a child process) | {local:.2f} |",
        f"| docker (create, start, stream logs, wait, inspect, remove) | {in_docker:.2f} |",
        f"| **overhead** | **{extra:.2f}** ({verdict} the {TARGET_OVERHEAD:g} s target) |",
        "",
        "Image builds (`pushtune images build --offline`):",
        "",
        "| build | time |",
        "| --- | --- |",
        *[f"| {name} | {value} |" for name, value in build_rows],
    ]
    if not cold:
        lines += ["", "Cold builds not measured (BENCH_DOCKER_COLD=0)."]
    return "\n".join(lines)
