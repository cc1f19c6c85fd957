"""Push to train without Jenkins: a git hook that starts `pushtune run` on the changed models.

`install_hook` writes a tiny hook (post-receive in a bare repository, post-commit in a working
one) that hands the pushed refs to `python -m jobs.ci.hook_receive`. That reads them, starts a
detached worker (`python -m jobs.ci.hook work`) and returns at once, so the push never waits and
never fails because of pushtune. The worker clones the pushed commit under
$PUSHTUNE_HOME/checkouts, finds the changed model files (unsupported ones are skipped) and runs
`pushtune run` on each; everything it says goes to $PUSHTUNE_HOME/hooks/hook.log.

A changed file that is a symbolic link is trained only when it leads to a file of the pushed
commit itself: one leading outside the checkout (an absolute path, `..`) or into its `.git` is
skipped with the reason, like an unsupported file, so a push cannot have a file of this machine
trained (and its content sent into the log, the store and the mail).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

from jobs.ci.hook_receive import git_output, log_path, now_text
from jobs.errors import UserError
from jobs.exit_codes import FAILED, USER_ERROR, meaning
from jobs.paths import PROJECT_ROOT
from jobs.run_options import add_run_options, options_from
from jobs.steps import changed_paths, model_files
from jobs.store.run_store import home as pushtune_home

MARKER = "# installed by `pushtune hook install`"
CHAINED_SUFFIX = ".pushtune-chained"

HOOK_TEMPLATE = """\
#!/bin/sh
{marker}: trains the model files a push changed, in the background.
# It never blocks or fails the push; see {log}
input=$(cat)
status=0
if [ -x "$0{chained}" ]; then
    printf '%s\\n' "$input" | "$0{chained}" "$@" || status=$?
fi
printf '%s\\n' "$input" | PUSHTUNE_HOME={home} PYTHONPATH={pythonpath} \\
    {python} -m jobs.ci.hook_receive --kind {kind} --repo "$(pwd)"{run_args} >/dev/null 2>&1 || true
exit $status
"""


def hook_path(repo: Path) -> tuple[Path, str]:
    """Where the hook goes and which one it is: post-receive (bare) or post-commit."""
    if not repo.is_dir():
        raise UserError(f"no such directory: {repo}")
    try:
        bare = git_output(repo, "rev-parse", "--is-bare-repository") == "true"
        hooks = Path(git_output(repo, "rev-parse", "--git-path", "hooks"))
    except UserError:
        raise UserError(f"not a git repository: {repo}") from None
    kind = "post-receive" if bare else "post-commit"
    return (hooks if hooks.is_absolute() else repo / hooks) / kind, kind


def split_run_args(text: str) -> list[str]:
    """`--run-args` as the words the hook passes to `pushtune run`."""
    try:
        return shlex.split(text)
    except ValueError as exc:  # an unclosed quote, a trailing backslash
        raise UserError(f"--run-args {text!r}: {exc}") from None


def validate_run_args(run_args: list[str]) -> None:
    """Fail at install time, not at every push, when the `pushtune run` options are wrong: they
    are parsed and checked as `pushtune run` does (--data and --space name paths in the pushed
    checkout, so only they are left to the run)."""

    class Strict(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise UserError(f"--run-args: {message}")

        def exit(self, status: int = 0, message: str | None = None) -> NoReturn:  # after -h
            raise UserError("--run-args: -h/--help is not an option for a run")

    parser = Strict(prog="pushtune run", add_help=False)
    parser.add_argument("model")
    add_run_options(parser)
    args = parser.parse_args(["model.py", *run_args])
    try:
        options = options_from(argparse.Namespace(**{**vars(args), "data": None, "space": None}), environ={})
        options.space = {"--space": args.space} if args.space else None  # read at run time
        options.validate()
    except UserError as exc:
        raise UserError(f"--run-args: {exc}") from None


def _refuse_control_characters(what: str, text: str) -> None:
    """Everything written into the hook is one shell word on one line: no newline can end a
    comment or a command there."""
    if not text.isprintable():
        raise UserError(f"{what} {text!r} contains control characters; the hook cannot hold it safely")


def install_hook(repo: Path, *, home: Path, run_args: list[str] | None = None,
                 force: bool = False, chain: bool = False) -> Path:
    """Write the hook; an existing foreign hook is kept and run first (chain), replaced
    (force), or makes this fail."""
    run_args = list(run_args or [])
    for what, text in [("PUSHTUNE_HOME", str(home)), ("the pushtune directory", str(PROJECT_ROOT)),
                       ("the Python executable", sys.executable), *(("--run-args", a) for a in run_args)]:
        _refuse_control_characters(what, text)
    validate_run_args(run_args)
    path, kind = hook_path(repo.resolve())
    if path.exists() and MARKER not in path.read_text(errors="replace"):
        if chain:
            path.rename(path.with_name(path.name + CHAINED_SUFFIX))
        elif not force:
            raise UserError(f"{path} exists and is not pushtune's: use --chain to run it first, "
                            "or --force to replace it")
    script = HOOK_TEMPLATE.format(
        marker=MARKER, log=shlex.quote(str(log_path(home))), chained=CHAINED_SUFFIX,
        home=shlex.quote(str(home)), pythonpath=shlex.quote(str(PROJECT_ROOT)),
        python=shlex.quote(sys.executable), kind=kind,
        run_args=f" --run-args {shlex.quote(shlex.join(run_args))}" if run_args else "",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    path.chmod(0o755)
    return path


# --- what the hook runs -------------------------------------------------------------------------


def checkout(repo: Path, commit: str, home: Path) -> Path:
    """A clone of the repository at the commit, under $PUSHTUNE_HOME/checkouts (reused)."""
    target = home / "checkouts" / commit
    if not (target / ".git").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        git_output(target.parent, "clone", "--quiet", "--shared", "--no-checkout", str(repo), str(target))
        git_output(target, "checkout", "--quiet", "--detach", commit)
    return target


def work(repo: Path, pushes: list[tuple[str, str]], run_args: list[str], home: Path) -> int:
    """Run `pushtune run` on every supported model file the pushes changed; the failures."""

    failures = 0
    for old, new in pushes:
        tree = checkout(repo, new, home)
        changed = changed_paths(tree, old or None, new)
        models, skipped = model_files(tree, changed)
        for path, why in skipped:
            print(f"{now_text()} skipped {path}@{new[:10]}: {why}", flush=True)
        for path in models:
            print(f"{now_text()} pushtune run {path}@{new[:10]}", flush=True)
            command = [sys.executable, "-m", "jobs", "run", *run_args, "--", path]  # a path may start with -
            code = subprocess.run(command, cwd=tree, stdin=subprocess.DEVNULL).returncode
            print(f"{now_text()} pushtune run {path}@{new[:10]} exited {code} ({meaning(code)})", flush=True)
            failures += code not in (0, 3)
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.ci.hook")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("work")
    p.add_argument("--repo", required=True)
    p.add_argument("--push", action="append", default=[], metavar="OLD..NEW")
    p.add_argument("--run-args", default="")
    args = parser.parse_args(argv)

    home = pushtune_home()
    pushes = [tuple(p.split("..", 1)) for p in args.push]
    try:
        return min(work(Path(args.repo), pushes, split_run_args(args.run_args), home), FAILED)
    except UserError as exc:
        print(f"{now_text()} pushtune: error: {exc}", flush=True)
        return USER_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
