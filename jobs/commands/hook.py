"""`pushtune hook install REPO`: train on every push, without Jenkins."""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs.ci import hook
from jobs.exit_codes import OK
from jobs.store.run_store import home


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("hook", help="a git hook that trains the models a push changed")
    commands = parser.add_subparsers(dest="hook_command", metavar="ACTION", required=True,
                                     parser_class=type(parser))
    p = commands.add_parser(
        "install", help="install the hook in a repository",
        description="Install a post-receive hook (bare repository) or post-commit hook (working "
                    "repository) that runs `pushtune run` in the background on the model files "
                    "each push changed, with this Python and PUSHTUNE_HOME.")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--run-args", default="", metavar="ARGS",
                   help='options for `pushtune run`, e.g. "--threshold 0.95 --max-attempts 3"')
    group = p.add_mutually_exclusive_group()
    group.add_argument("--chain", action="store_true", help="keep an existing hook and run it first")
    group.add_argument("--force", action="store_true", help="replace an existing hook")
    p.set_defaults(func=install)


def install(args: argparse.Namespace) -> int:
    store = home()  # fixed now, whichever directory the push later runs from
    path = hook.install_hook(Path(args.repo), home=store, run_args=hook.split_run_args(args.run_args),
                             force=args.force, chain=args.chain)
    print(f"installed {path}: runs go to the store at {store} (log: {hook.log_path(store)})")
    return OK
