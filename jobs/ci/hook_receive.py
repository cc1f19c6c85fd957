"""What git runs on every push (`python -m jobs.ci.hook_receive`, from the hook jobs.ci.hook
installs): read the pushed refs, start the detached worker (`python -m jobs.ci.hook work`) and
return. It imports nothing of the pipeline, so a push waits only for the hook to read its input,
and it never fails the push: a problem is written to $PUSHTUNE_HOME/hooks/hook.log.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from jobs.clock import utc_text
from jobs.errors import UserError
from jobs.exit_codes import OK
from jobs.git import git
from jobs.store.run_store import home as pushtune_home


def git_output(repo: Path, *args: str) -> str:
    return git(repo, *args).strip()


def log_path(home: Path) -> Path:
    return home / "hooks" / "hook.log"


def pushed_refs(kind: str, stdin_text: str, repo: Path) -> list[tuple[str, str]]:
    """(old, new) commit pairs to look at: the branches a push updated, or the new commit."""
    if kind == "post-commit":
        new = git_output(repo, "rev-parse", "HEAD")
        try:
            old = git_output(repo, "rev-parse", "HEAD^")
        except UserError:
            old = ""
        return [(old, new)]
    pairs = []
    for line in stdin_text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2].startswith("refs/heads/") and fields[1].strip("0"):
            pairs.append((fields[0], fields[1]))
    return pairs


def receive(kind: str, repo: Path, stdin_text: str, run_args: str, home: Path) -> None:
    """Start the detached worker and return: the hook's only wait is reading its input."""
    pairs = pushed_refs(kind, stdin_text, repo)
    if not pairs:
        return
    log = log_path(home)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "jobs.ci.hook", "work", "--repo", str(repo), "--run-args", run_args]
    for old, new in pairs:
        command += ["--push", f"{old}..{new}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # git sets them for the hook
    with open(log, "a") as out:
        subprocess.Popen(command, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True)


def now_text() -> str:
    return utc_text(time.time())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.ci.hook_receive")
    parser.add_argument("--kind", choices=("post-receive", "post-commit"), required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--run-args", default="")
    args = parser.parse_args(argv)
    home = pushtune_home()
    try:
        receive(args.kind, Path(args.repo).resolve(), sys.stdin.read(), args.run_args, home)
    except Exception as exc:  # a push must never fail because of pushtune
        try:
            log_path(home).parent.mkdir(parents=True, exist_ok=True)
            with open(log_path(home), "a") as out:
                out.write(f"{now_text()} hook failed: {type(exc).__name__}: {exc}\n")
        except OSError:
            pass
    return OK


if __name__ == "__main__":
    raise SystemExit(main())
