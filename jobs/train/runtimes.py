"""The runtime registry: which runtimes there are, what each needs of the machine, and how `auto`
picks one (`pushtune run --runtime local|docker|auto`).

An entry names its factory and checks either as callables or, like an entry point, as
"module:attribute" text loaded when the runtime is asked for: the Docker runtime's module imports
the Docker SDK, which nobody choosing the local runtime should pay for, and naming it here keeps
the runtimes below the registry (jobs.train.runtime never knows jobs.train.docker_runtime).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from jobs.errors import UserError
from jobs.train.runtime import LocalRuntime, Runtime

AUTO = "auto"  # not a runtime: the first registered one, by `auto_rank`, whose needs are met


@dataclass(frozen=True)
class Need:
    """Something a runtime needs of this machine."""

    what: str  # "a Docker engine"
    check: Callable[[], str | None] | str  # None when met, else why not, in one line ("module:attr")

    def problem(self) -> str | None:
        return _resolve(self.check)()


@dataclass(frozen=True)
class RuntimeEntry:
    """One runtime of the registry. `factory` takes the runtime options (memory, cpus, network,
    keep: what `RunOptions.runtime_options` holds) and ignores those it has no use for; chosen by
    name, it raises a one-line UserError itself when a need is not met."""

    name: str
    description: str
    factory: Callable[..., Runtime] | str  # or "module:attr", imported when asked for
    needs: tuple[Need, ...] = ()
    auto_rank: int | None = None  # `auto` tries lower ranks first; None: `auto` never picks it

    def make(self, **options) -> Runtime:
        return _resolve(self.factory)(**options)

    def unmet(self) -> str | None:
        """Why the runtime cannot run here (the first need that is not met), or None."""
        for need in self.needs:
            reason = need.problem()
            if reason is not None:
                return reason
        return None


RUNTIMES: dict[str, RuntimeEntry] = {}  # name -> entry, in the order the CLI lists them


def register_runtime(entry: RuntimeEntry) -> RuntimeEntry:
    if entry.name == AUTO or entry.name in RUNTIMES:
        raise ValueError(f"runtime {entry.name!r} is registered already")
    RUNTIMES[entry.name] = entry
    return entry


def runtime_choices() -> tuple[str, ...]:
    """What `--runtime` accepts: the registered runtimes, then `auto`."""
    return (*RUNTIMES, AUTO)


def get_runtime(name: str, **options) -> Runtime:
    """The registered runtime `name`, made with `options`; `auto`: the first registered runtime,
    by `auto_rank`, whose needs are met (Docker when an engine answers, else local)."""
    if name == AUTO:
        ranked = [(rank, e) for e in RUNTIMES.values() if (rank := e.auto_rank) is not None]
        reasons = []
        for _, candidate in sorted(ranked, key=lambda pair: pair[0]):
            reason = candidate.unmet()
            if reason is None:
                return candidate.make(**options)
            reasons.append(f"{candidate.name}: {reason}")
        raise UserError(f"no runtime can run here ({'; '.join(reasons) or 'none is registered'})")
    entry = RUNTIMES.get(name)
    if entry is None:
        raise UserError(f"unknown runtime {name!r} (choose {', '.join(RUNTIMES)} or {AUTO})")
    return entry.make(**options)


def _resolve(target: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, attribute = target.partition(":")
    return getattr(import_module(module), attribute)


def _local(**options) -> Runtime:
    return LocalRuntime()


register_runtime(RuntimeEntry(
    "local", "a child process on this machine, with pushtune's own Python", _local, auto_rank=100))
register_runtime(RuntimeEntry(
    "docker", "a container per attempt, from the image of its kind, with memory, CPU and network limits",
    "jobs.train.docker_runtime:create",
    needs=(Need("a Docker engine", "jobs.train.docker_runtime:engine_problem"),), auto_rank=0))
