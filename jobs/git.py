"""The one way pushtune runs git: `git(repo, *args)`, output as text, a one-line UserError when
git fails or is missing. It imports nothing heavy: the git hook uses it inside `git push`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from jobs.errors import UserError


def git_bytes(repo: Path, *args: str, timeout: float = 60) -> bytes:
    """git's raw standard output (a file's content from `git show`)."""
    try:
        result = subprocess.run(["git", *args], cwd=repo, capture_output=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UserError(f"git {args[0]} failed in {repo}: {exc}") from None
    if result.returncode != 0:
        message = (result.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise UserError(f"git {args[0]} failed in {repo}: {message}")
    return result.stdout


def git(repo: Path, *args: str, timeout: float = 60) -> str:
    return git_bytes(repo, *args, timeout=timeout).decode(errors="replace")


def git_or_none(repo: Path, *args: str, timeout: float = 30) -> str | None:
    """git's output stripped, or None when git fails (not a repository, an untracked file)."""
    try:
        return git(repo, *args, timeout=timeout).strip() or None
    except UserError:
        return None
