"""The options of a run as command-line words: `pushtune run`, `pushtune start` and the git
hook (which checks its `--run-args` when it is installed) share this one definition."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from jobs.deploy.versions import check_name
from jobs.errors import UserError
from jobs.loop import RunOptions
from jobs.mirror.mlflow import tracking_uri
from jobs.train.limits import check_limits
from jobs.train.metrics import out_of_range
from jobs.train.runtimes import runtime_choices
from jobs.tune.objective import MODES, Objective, default_mode
from jobs.tune.strategies import STRATEGIES, load_space


def parse_param(text: str) -> tuple[str, object]:
    """`k=v`; v is read as JSON when it parses (numbers, booleans, null), else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--param {text!r}: expected KEY=VALUE")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    if isinstance(parsed, float) and not math.isfinite(parsed):
        raise UserError(f"--param {text!r}: value must be finite")
    return key.strip(), parsed


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of a run, shared by `pushtune run` and `pushtune start`."""
    p.add_argument("--threshold", type=float, default=0.9, help="metric to reach (default 0.9)")
    p.add_argument("--metric", default="accuracy", help="metric gated on (default accuracy)")
    p.add_argument("--mode", choices=MODES,
                   help="higher (max) or lower (min) is better (default: min for a loss or error, else max)")
    p.add_argument("--max-attempts", type=int, default=5, help="at most this many attempts (default 5)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="for the whole run")
    p.add_argument("--attempt-timeout", type=float, metavar="SECONDS", help="for one attempt")
    p.add_argument("--max-restarts", type=int, default=3, help="restarts of a killed attempt (default 3)")
    p.add_argument("--data", metavar="DIR", help="data directory, given to the script as PUSHTUNE_DATA "
                                                 "(default: $PUSHTUNE_DATA, when set)")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="a hyperparameter (repeatable)")
    p.add_argument("--strategy", choices=sorted(STRATEGIES), default="diagnose",
                   help="diagnose (default): read the training curves and fix what they show")
    p.add_argument("--min-delta", type=float, default=0.0, metavar="D",
                   help="a smaller change of the metric is noise (default 0; at least one test example)")
    p.add_argument("--space", metavar="FILE", help="JSON search space for grid/optuna")
    p.add_argument("--runtime", choices=runtime_choices(), default="auto",
                   help="auto (default): Docker when an engine answers, else a local process")
    p.add_argument("--memory", default="4g", help="docker: memory limit (default 4g)")
    p.add_argument("--cpus", type=float, default=2.0, help="docker: CPU limit (default 2)")
    p.add_argument("--network", default="bridge", help="docker: network (default bridge; none to cut it)")
    p.add_argument("--keep", action="store_true", help="docker: keep containers after the attempt")
    p.add_argument("--notify", action="append", default=[], metavar="ADDR", help="mail the result to ADDR")
    p.add_argument("-v", "--verbose", action="store_true", help="stream the script's output")
    p.add_argument("--name", metavar="NAME", help="the model name a passing run registers its model under "
                                                  "(default: the file's stem; see `pushtune models`)")
    p.add_argument("--force", action="store_true",
                   help="register under the model name even when another file registered it")
    p.add_argument("--no-autolog", action="store_true",
                   help="run the script with no capture: pushtune reads only metrics.json, accuracy.txt, "
                        "the log and model.* files in $PUSHTUNE_OUTPUT")
    p.add_argument("--mlflow", metavar="URI", help="mirror the run to the MLflow tracking server at URI "
                                                   "(default: $MLFLOW_TRACKING_URI, when set; docs/mlflow.md)")
    p.add_argument("--no-promote", action="store_true",
                   help="register a passing run's model as a candidate, never production (`pushtune promote`)")


def data_option(given: str | None, environ: Mapping[str, str]) -> str | None:
    """The run's data directory: --data, else a PUSHTUNE_DATA exported in the environment. It is
    recorded with the run, so a resume, a monitor and the job chain's steps give the script the
    same one (the runtimes never pass pushtune's own PUSHTUNE_DATA on)."""
    if given:
        return str(Path(given).resolve())
    exported = environ.get("PUSHTUNE_DATA")
    if not exported:
        return None
    if not Path(exported).is_dir():
        raise UserError(f"PUSHTUNE_DATA: no such directory: {exported} (give --data DIR, or unset it)")
    return str(Path(exported).resolve())


def met_by_any_value(objective: Objective) -> bool:
    """Whether the threshold is the end of the metric's range that every value meets (accuracy
    ≥ 0): then the value just beyond it, towards worse, is outside the range."""
    worse = math.nextafter(objective.threshold, -math.inf if objective.mode == "max" else math.inf)
    metric = objective.metric
    return out_of_range(metric, objective.threshold) is None and out_of_range(metric, worse) is not None


def options_from(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> RunOptions:
    """The run's options from its command-line words; `environ` supplies PUSHTUNE_DATA when --data
    is not given (the git hook passes none: it checks the words alone)."""
    check_limits(args.memory, args.cpus)
    space = None
    if args.space:
        try:
            text = Path(args.space).read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"--space: cannot read {args.space}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UserError(f"--space: {args.space} is not UTF-8 text (a JSON file is)") from None
        space = load_space(text, args.space)
    return RunOptions(
        threshold=args.threshold, metric=args.metric, mode=args.mode or default_mode(args.metric),
        max_attempts=args.max_attempts, time_budget=args.time_budget,
        attempt_timeout=args.attempt_timeout, max_restarts=args.max_restarts,
        data=data_option(args.data, environ),
        params=dict(parse_param(p) for p in args.param), strategy=args.strategy, space=space,
        min_delta=args.min_delta,
        runtime=args.runtime, notify=list(args.notify), verbose=args.verbose,
        name=check_name(args.name) if args.name is not None else None, promote=not args.no_promote,
        take_name=args.force,
        autolog=not args.no_autolog,
        mlflow=tracking_uri(args.mlflow, environ),
        runtime_options={"memory": args.memory, "cpus": args.cpus, "network": args.network,
                         "keep": args.keep},
    )


def print_option_notes(args: argparse.Namespace, options: RunOptions) -> None:
    """On stderr, once the options are known to be valid: a mode pushtune chose, a threshold that
    every value meets."""
    if args.mode is None and options.mode == "min":
        print(f"pushtune: --metric {options.metric}: lower is better, so --mode min (give --mode max if not)",
              file=sys.stderr)
    if met_by_any_value(options.objective):
        print(f"pushtune: warning: every {options.metric} meets {options.objective.target()}: "
              f"the first attempt will pass", file=sys.stderr)
