"""CLI commands: each module adds one subcommand and calls one pipeline step."""

from __future__ import annotations

import sys

from rich.console import Console

from jobs.store.run_store import no_store_yet


def metric_text(value: float | None) -> str:
    """A metric value as every table shows it: four decimals ("" for none)."""
    return "" if value is None else f"{value:.4f}"


def output_console() -> Console:
    """Rich console for stdout; when piped, wide enough that tables are not squeezed."""
    return Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 160)


def said_no_store_yet(as_json: bool) -> bool:
    """For commands that only list: when there is no run store yet, say so (JSON: `[]`) and
    return True, rather than create one where the user happens to stand."""
    nothing = no_store_yet()
    if nothing:
        print("[]" if as_json else nothing)
    return nothing is not None
