"""The Docker runtime's limits (--memory, --cpus), checked when a run starts, before any container."""

from __future__ import annotations

import math

from jobs.errors import UserError

MIN_MEMORY = 6 * 2**20  # Docker refuses less
MIN_CPUS = 0.01  # the smallest CPU limit Docker accepts


def parse_memory(memory: str | int) -> int:
    """Bytes of a size as Docker reads it (512m, 4g); UserError below MIN_MEMORY or unreadable."""
    # heavy library: the Docker SDK (0.16 s to import), only when a Docker limit is read
    from docker.errors import DockerException
    from docker.utils import parse_bytes

    try:
        value = parse_bytes(memory)
    except DockerException:
        value = None
    if not isinstance(value, int) or value < MIN_MEMORY:
        raise UserError(f"--memory {memory!r}: expected a size of at least 6m, such as 512m or 4g")
    return value


def check_limits(memory: str, cpus: float) -> None:
    """The Docker limits, checked before a run starts (not when its first container does)."""
    if not (math.isfinite(cpus) and cpus >= MIN_CPUS):
        raise UserError(f"--cpus {cpus:g}: expected a number of CPUs of at least {MIN_CPUS:g}, such as 0.5 or 2")
    parse_memory(memory)
