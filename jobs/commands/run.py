"""`pushtune run MODEL_FILE`: train, gate, tweak and retrain until the threshold or a budget."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from jobs import exit_codes
from jobs.commands import output_console
from jobs.deploy.versions import check_file_may_register
from jobs.loop import RunOptions, check_model, notify_if_asked, run_model
from jobs.run_options import add_run_options, options_from, print_option_notes
from jobs.store.run_store import RunStore
from jobs.train.metrics import captured
from jobs.train.progress import EpochWatcher, epoch_line, epoch_text, shown_logs
from jobs.train.runtimes import get_runtime
from jobs.tune.objective import Objective
from notify import load_settings


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help="train, gate, tweak and retrain a model file",
                              description=__doc__.splitlines()[0])
    p.add_argument("model", metavar="MODEL_FILE")
    add_run_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=run)


class TerminalProgress:
    """Progress on stderr: each attempt, its change and why, its epochs, its metric.

    In a terminal the running attempt is a Rich progress line (epoch n/N with the loss, the
    gated metric and its val_ twin); in a pipe, a Jenkins console or with -v, one plain line per
    epoch. The epochs come from the kit's progress.json, read by a `jobs.train.progress.EpochWatcher`.
    """

    def __init__(self, console: Console, options: RunOptions):
        self.console, self.options, self.best = console, options, None
        self.plain = options.verbose or not console.is_terminal
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.watcher: EpochWatcher | None = None

    def __call__(self, event: str, data: dict) -> None:
        metric = self.options.metric
        if event == "started":
            self.console.print(f"run {data['run_id']}: {data['model_name']}: {data['kind']} model "
                               f"({data['framework']}); target {self.options.objective.target()}",
                               markup=False)
        elif event == "attempt":
            self.close()
            candidate = data["candidate"]
            label = f"attempt {data['n']}/{self.options.max_attempts}: {candidate.tweak or 'as pushed'}"
            reason = getattr(candidate, "reason", None)
            if self.plain or reason:
                self.console.print(f"{label} …" if self.plain else label, markup=False)
            if reason:
                self.console.print(f"  why: {reason}", markup=False)
            if self.plain:
                on_epoch = self._epoch_line
            else:
                self.bar = Progress(
                    SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(bar_width=20),
                    TextColumn("{task.fields[epoch]}", markup=False), TimeElapsedColumn(),
                    console=self.console, transient=True,
                )
                self.task = self.bar.add_task(label, total=None, epoch="starting …")
                self.bar.start()
                on_epoch = self._epoch_bar
            if data.get("output") is not None:
                self.watcher = EpochWatcher(data["output"], on_epoch).start()
        elif event == "attempted":
            self.close()
            a = data["attempt"]
            if a["status"] == "ok":
                self.console.print(f"attempt {a['n']}: {metric} {a['metric_value']:.4f} ({a['seconds']:.1f} s)",
                                   markup=False)
            else:
                self.console.print(Text.assemble(f"attempt {a['n']}: ", ("failed", "red"),
                                                 f": {a['error'] or ''} ({a['seconds']:.1f} s)"))
            for warning in captured(a, "warnings") or []:  # the script's own, e.g. random weights
                self.console.print(Text.assemble("  ", ("script says", "yellow"), f": {warning}"))

    def _epoch_line(self, epoch: int, epochs: int | None, logs: dict) -> None:
        self.console.print(epoch_line(epoch, epochs, logs), markup=False, highlight=False)

    def _epoch_bar(self, epoch: int, epochs: int | None, logs: dict) -> None:
        names = shown_logs(logs, self.options.metric) or list(logs)[:4]
        text = epoch_text(epoch, epochs, logs, names, digits=3, sep=" ").replace(":", "", 1)
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, total=epochs, completed=epoch, epoch=text)

    def close(self) -> None:
        """End the attempt's display: the watcher's last read first (so its last epoch is
        shown), then the progress line. Safe to call at any time, and more than once."""
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        if self.bar is not None:
            self.bar.stop()
            self.bar, self.task = None, None


def warm_text(attempt: dict) -> str | None:
    """`warm-started from attempt N at epoch E`, for an attempt that continued its parent's."""
    if attempt.get("warm_from") is None:
        return None
    epoch = attempt.get("warm_epoch")
    return f"warm-started from attempt {attempt['warm_from']}" + (f" at epoch {epoch}" if epoch is not None else "")


def print_summary(summary: dict, console: Console) -> None:
    """The attempts table and the verdict; every text from the run (names, errors, paths) is
    printed as is (Text), never read as Rich markup or emoji codes."""
    metric = summary["metric"]
    table = Table(title=Text(f"run {summary['run_id']}: {Path(summary['model']).name}"))
    with_why = any(a.get("reason") for a in summary["attempts"])
    table.add_column("attempt", no_wrap=True)
    table.add_column("change", overflow="fold")
    if with_why:  # the strategy's evidence can be long: it wraps, the attempt numbers never do
        table.add_column("why", overflow="fold", min_width=16)
    table.add_column(Text(metric), overflow="fold")
    table.add_column("seconds", no_wrap=True)
    best_n = summary["best"] and summary["best"]["attempt"]
    for a in summary["attempts"]:
        value = f"{a[metric]:.4f}" if metric in a else f"failed: {a['error']}"
        mark = " ★" if a["n"] == best_n else ""
        change = a["tweak"] or "as pushed"
        if warm_text(a):
            change += f"\n({warm_text(a)})"
        cells: list[str | Text] = [f"{a['n']}{mark}", Text(change)]
        if with_why:
            cells.append(Text(a.get("reason") or ""))
        table.add_row(*cells, Text(value), f"{a['seconds']:.1f}")
    console.print(table)
    for a in summary["attempts"]:
        if a.get("log_tail"):
            console.print(Text(f"attempt {a['n']} failed; the end of {a['log']}:"))
            console.print(Text(textwrap.indent(a["log_tail"], "    ")))
    status = summary["status"].replace("_", " ")
    stopped = f"; stopped: {summary['stop_reason']}" if summary["stop_reason"] else ""  # none while running
    if summary["best"]:
        console.print(Text(f"{status}: best {metric} {summary['best'][metric]:.4f} "
                           f"(threshold {Objective.of(summary).symbol} {summary['threshold']:g}) "
                           f"at attempt {best_n}{stopped}"))
        if summary["best"].get("metric_source"):
            console.print(Text(f"metric: {summary['best']['metric_source']}"))
        if summary["best"]["artifact"]:
            how = summary["best"].get("artifact_source")
            console.print(Text(f"model: {summary['best']['artifact']}" + (f" ({how})" if how else "")))
        if summary["best"].get("notebook"):  # a notebook run: the winning notebook, output-free
            console.print(Text(f"notebook: {summary['best']['notebook']}"))
    else:
        console.print(Text(f"{status}: no attempt reported {metric}{stopped}"))
    if summary.get("production"):
        console.print(Text(f"production: {summary['production']}"))
    console.print(Text(f"report: {summary['report']}"))


def run(args: argparse.Namespace) -> int:
    options = options_from(args)
    check_model(args.model, options)  # bad input is refused before anything is started
    print_option_notes(args, options)
    if options.notify:  # bad mail settings are found before any training, not after it

        load_settings(options.notify)
    store = RunStore.open()
    check_file_may_register(store, args.model, options.name, take=options.take_name)
    runtime = get_runtime(options.runtime, **options.runtime_options)
    err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)  # `:x:` in a name stays
    if options.runtime == "auto":
        err.print(f"runtime: {runtime.name}", markup=False)
    options.runtime = runtime.name  # what a monitor uses if it has to resume an attempt
    progress = None if args.json else TerminalProgress(err, options)
    try:
        summary = run_model(args.model, options, runtime, store, progress=progress)
    finally:
        if progress is not None:  # an interrupted attempt leaves no progress line behind
            progress.close()
    result = notify_if_asked(store, summary["run_id"])  # a failure is recorded and printed
    if result and result.sent:
        err.print(result.describe(summary["run_id"]), markup=False)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary, output_console())
    return exit_codes.for_status(summary["status"])
