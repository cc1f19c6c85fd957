"""Run benchmarks and write their figures into docs/benchmarks.md.

Usage: python benchmarks/run.py [NAME ...]   (NAME = bench_<NAME>.py; default: all)

Each `benchmarks/bench_<name>.py` has `main() -> str` returning a Markdown section. Only the
sections of the benchmarks run are replaced, so one benchmark can be re-run alone.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nProduced by `make bench` (`python benchmarks/run.py [NAME ...]`).\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{mem_kb / 2**20:.0f} GiB"
    except OSError:
        mem = "?"
    return (f"{os.cpu_count()} cores ({cpu}), {mem} RAM, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"bench_{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their class's module up while it is made
    spec.loader.exec_module(module)
    return module


def main(names: list[str]) -> int:
    names = names or sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    text = DOC.read_text() if DOC.exists() else HEADER
    sys.path.insert(0, str(HERE.parent))
    for name in names:
        print(f"== bench {name}", flush=True)
        started = time.strftime("%Y-%m-%d")
        section = load(name).main().strip()
        block = (
            f"<!-- bench:{name} -->\n{section}\n\n"
            f"_Command: `python benchmarks/run.py {name}` on {started}; machine: {machine()}._\n"
            f"<!-- /bench:{name} -->"
        )
        pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _, block=block: block, text)
        else:
            text = f"{text.rstrip()}\n\n{block}\n"
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text)
        print(section, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
