"""`pushtune classify PATH... [--json]`: what kind of model each Python file builds (static)."""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from jobs.classify.classifier import Classification, classify_paths
from jobs.errors import UserError
from jobs.exit_codes import OK
from jobs.steps import files_from_json

COLUMNS = ("path", "kind", "framework", "reason")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="classify model files (cnn / ann / regression / unsupported) without running them",
        description="Classify Python model files statically: files, or every *.py below directories.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="a Python file or a directory (put -- before names that start with -)")
    parser.add_argument("--files-json", metavar="JSON", help="more paths, as a JSON list (MODEL_FILES)")
    parser.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.files_json is not None:
        args.paths += files_from_json(args.files_json)
    elif not args.paths:
        raise UserError("give the paths: PATH... or --files-json JSON")
    results = classify_paths(args.paths)
    if args.json:
        print(json.dumps([result.as_dict() for result in results], indent=2))
    elif not results:
        print("no Python files found", file=sys.stderr)
    else:
        print_table(results)
    return OK


def print_table(results: list[Classification], file: TextIO | None = None) -> None:
    file = file or sys.stdout
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    # In a narrow terminal a long path folds onto more lines (never cut) and the reason wraps.
    table.add_column("path", overflow="fold", min_width=12)
    table.add_column("kind", no_wrap=True)
    table.add_column("framework", no_wrap=True)
    table.add_column("reason", overflow="fold", min_width=12)
    for result in results:
        # Text(), not markup: a path or reason may contain "[" and must print as is.
        table.add_row(*(Text(getattr(result, column)) for column in COLUMNS))
    console = Console(file=file, highlight=False)
    if console.is_terminal:
        console.print(table)
        return
    # A pipe or a CI log: as wide as the longest row, so nothing wraps or is cut; no trailing blanks.
    widths = [max(len(getattr(r, c)) for r in [*results, _header()]) for c in COLUMNS]
    wide = Console(file=io.StringIO(), width=sum(widths) + 4 * len(COLUMNS), color_system=None)
    with wide.capture() as capture:
        wide.print(table)
    file.write("".join(line.rstrip() + "\n" for line in capture.get().splitlines()))


def _header() -> Classification:
    return Classification(*COLUMNS)
