"""Where things are: pushtune's own files (the checkout or installed tree holding `jobs/`,
`jenkins/` and `dockerfiles/`), and the git work tree a directory belongs to."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def work_tree_root(start: Path) -> Path | None:
    """The top of the git work tree holding `start` (the nearest directory with a `.git`, a
    directory or a worktree's file), or None outside any. Read from disk: git itself may be absent."""
    start = start.absolute()
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return None
