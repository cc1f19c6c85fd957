"""What a notification says about a run, read from the store once and shared by every channel."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from jobs.store.run_store import RunStore
from jobs.tune.objective import Objective, best_attempt

STATUS_WORDS = {
    "passed": "threshold met",
    "below_threshold": "below threshold",
    "failed": "failed",
    "running": "still running",
    "interrupted": "interrupted",
}


def format_value(value: float | None) -> str:
    """A metric as people read it: 0.9 → 0.90, 0.93125 → 0.9313, 1234.5 → 1234.5."""
    if value is None:
        return "—"
    if abs(value) >= 1000 or (value != 0 and abs(value) < 0.001):
        return f"{value:.4g}"
    text = f"{value:.4f}".rstrip("0")
    decimals = len(text.split(".")[1])
    return text + "0" * max(0, 2 - decimals)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def one_line(text: str) -> str:
    """Text fit for a mail header: control characters (a newline in a file name) become spaces."""
    return "".join(char if char.isprintable() else " " for char in text)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass
class RunSummary:
    run: dict[str, Any]
    attempts: list[dict[str, Any]]
    best: dict[str, Any] | None
    build_url: str | None
    production: str | None = None  # what happened to production (jobs.deploy.versions.production_line)

    @property
    def run_id(self) -> int:
        return self.run["id"]

    @property
    def metric(self) -> str:
        return self.run["metric"]

    @property
    def threshold(self) -> float:
        return self.run["threshold"]

    @property
    def objective(self) -> Objective:
        return Objective.of(self.run)

    @property
    def notebook(self) -> str | None:
        """The best attempt's notebook, handed back next to its model (a notebook run's), if there."""
        from jobs.classify.notebook import handed_back_notebook

        path = handed_back_notebook(self.run, self.best) if self.best else None
        return str(path) if path is not None and path.is_file() and not path.is_symlink() else None

    @property
    def best_value(self) -> float | None:
        return self.best["metric_value"] if self.best else None

    @property
    def met(self) -> bool:
        return self.objective.meets(self.best_value)

    @property
    def status_word(self) -> str:
        return STATUS_WORDS.get(self.run["status"], self.run["status"])

    def comparison(self) -> str:
        """`accuracy 0.93 ≥ 0.90`, `loss 0.41 > 0.30` …"""
        value = self.best_value
        if value is None:
            return f"no {self.metric} reported (threshold {format_value(self.threshold)})"
        sign = self.objective.sign(value)
        return f"{self.metric} {format_value(value)} {sign} {format_value(self.threshold)}"

    def headline(self) -> str:
        """The status line used as the subject (after the file name) and the mail's title."""
        count = _plural(len(self.attempts), "attempt")
        if self.run["status"] == "passed":
            return f"threshold met — {self.comparison()}"
        if self.best_value is None:
            return f"{self.status_word} — no attempt reported {self.metric} after {count}"
        suffix = " so far" if self.run["status"] == "running" else ""
        return f"{self.status_word} — best {self.comparison()} after {count}{suffix}"

    def subject(self) -> str:
        return one_line(f"[pushtune] {self.run['model_name']}: {self.headline()} (run {self.run_id})")

    def failed_attempts(self) -> list[dict[str, Any]]:
        return [a for a in self.attempts if a["status"] == "failed"]

    def suggestions(self) -> list[str]:
        """What to try next, for runs that did not meet the threshold."""
        if self.run["status"] == "passed":
            return []
        options = self.run.get("options") or {}
        tips: list[str] = []
        failed = self.failed_attempts()
        if failed and len(failed) == len(self.attempts):
            tips.append(
                f"Every attempt failed; start with the first error (attempt {failed[0]['n']}) — "
                "run the script locally with `python model.py` to reproduce it."
            )
        elif failed:
            where = "its error is" if len(failed) == 1 else "their errors are"
            tips.append(f"{_plural(len(failed), 'attempt')} failed; {where} in the table above.")
        tips.append(
            "More or cleaner training data (or augmentation) usually moves the metric more than "
            "hyperparameters" + (f" — the run used `--data {options['data']}`." if options.get("data") else ".")
        )
        if options.get("strategy") != "optuna":
            tips.append("A different search strategy: `--strategy optuna`, over the parameters the "
                        "script declares with `kit.params(...)` or the ranges in `--space space.json`.")
        budget = options.get("max_attempts")
        stop = self.run.get("stop_reason")
        tips.append(
            "A larger attempt budget: `--max-attempts N` (or `--time-budget SECONDS`)"
            + (f"; this run stopped because: {stop}." if stop else
               f"; this run had {budget}." if budget else ".")
        )
        if self.best_value is not None:
            easier = "lower" if self.objective.mode == "max" else "higher"  # min: a higher loss is easier
            tips.append(
                f"If {self.metric} {format_value(self.best_value)} is good enough for now, a {easier} "
                f"threshold: `--threshold {format_value(self.best_value)}`."
            )
        return tips


def load_summary(store: RunStore, run_id: int) -> RunSummary:
    """Everything a notification needs about one run (raises UserError for an unknown run)."""
    run = store.get_run(run_id)
    attempts = store.attempts(run_id)
    options = run.get("options") or {}
    build_url = options.get("jenkins_build_url") or os.environ.get("BUILD_URL") or None
    return RunSummary(run=run, attempts=attempts, best=best_attempt(attempts, Objective.of(run)), build_url=build_url,
                      production=_production(store, run_id))


def _production(store: RunStore, run_id: int) -> str | None:
    """The mail's line on production; a mail is never lost over it."""
    from jobs.deploy.versions import production_line

    try:
        return production_line(store, run_id)
    except Exception as exc:
        return f"unknown ({type(exc).__name__}: {exc})"
