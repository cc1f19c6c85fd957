"""`pushtune …` (= `python -m jobs …`): a thin shell over the pipeline steps.

Each command lives in `jobs/commands/<name>.py` with `add_parser(subparsers)`, which sets the
parser's `func(args) -> int`. Errors a user can fix print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import NoReturn

from jobs import __version__, exit_codes
from jobs.errors import UserError
from jobs.store.lease import lease_seconds

COMMAND_MODULES = (
    "jobs.commands.classify",
    "jobs.commands.run",
    "jobs.commands.runs",
    "jobs.commands.notify",
    "jobs.commands.monitor",
    "jobs.commands.steps",
    "jobs.commands.jenkins",
    "jobs.commands.hook",
    "jobs.commands.images",
    "jobs.commands.models",
    "jobs.commands.results",
)

# Top-level modules of the optional libraries -> the extra of pyproject.toml that installs them.
EXTRAS = {"tensorflow": "keras", "keras": "keras", "torch": "torch", "sklearn": "sklearn",
          "pandas": "sklearn", "joblib": "sklearn", "optuna": "optuna", "fastapi": "serve",
          "starlette": "serve", "uvicorn": "serve", "psycopg": "postgres", "onnx": "onnx",
          "onnxruntime": "onnx", "skl2onnx": "onnx", "tf2onnx": "onnx", "mlflow": "mlflow"}


def missing_extra(exc: BaseException) -> str | None:
    """For a missing optional library: one line naming the extra that installs it."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    module = exc.name.partition(".")[0]
    extra = EXTRAS.get(module)
    return extra and f"{module} is not installed: pip install 'pushtune[{extra}]' (or make install)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, as for every bad input
        self.exit(exit_codes.USER_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pushtune", description="Turn a git push of a model training script into a "
                     "trained, tuned model and an email.")
    parser.add_argument("--version", action="version", version=f"pushtune {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def check_settings() -> None:
    """The environment's settings that a command may only read midway (a driver's first lease),
    checked before anything is recorded."""
    lease_seconds()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_settings()
        return int(args.func(args) or exit_codes.OK)
    except UserError as exc:
        print(f"pushtune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pushtune: interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
    except BrokenPipeError:
        return exit_codes.FAILED
    except Exception as exc:  # never a traceback for the user, unless asked for
        if hint := missing_extra(exc):
            print(f"pushtune: error: {hint}", file=sys.stderr)
            return exit_codes.USER_ERROR
        if os.environ.get("PUSHTUNE_DEBUG"):
            traceback.print_exc()
        print(f"pushtune: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exit_codes.FAILED
