"""Where things are: pushtune's own files (the checkout or installed tree holding `jobs/`,
`jenkins/` and `dockerfiles/`), and the git work tree a directory belongs to."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# A checkout has the image recipes and the Jenkins job definitions beside jobs/; an installed
# pushtune carries copies of them in jobs/recipes/ (pyproject.toml maps them there).
_PACKAGED = Path(__file__).resolve().parent / "recipes"
_IN_CHECKOUT = (PROJECT_ROOT / "dockerfiles").is_dir()
DOCKERFILES = PROJECT_ROOT / "dockerfiles" if _IN_CHECKOUT else _PACKAGED / "dockerfiles"
JENKINS_JOBS = PROJECT_ROOT / "jenkins" / "jobs" if _IN_CHECKOUT else _PACKAGED / "jenkins_jobs"


def work_tree_root(start: Path) -> Path | None:
    """The top of the git work tree holding `start` (the nearest directory with a `.git`, a
    directory or a worktree's file), or None outside any. Read from disk: git itself may be absent."""
    start = start.absolute()
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return None
