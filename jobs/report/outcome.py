"""A run's outcome: everything the report, the `--json` summary and the mail say about a run,
read from the store in one pass.

`run_outcome` builds the record. `jobs.loop.finish_run` builds it once, after recording the run's
status, handing its notebook back and deploying its model, and renders the report
(`jobs.report.html_report.write_report`) and the `--json` summary (`summary_json`) from it. The
mail is sent by a later step (`pushtune notify`, the chain's notify job, `--notify`): it reads the
record once the same way and renders it as `notify.summary.RunSummary` (the record plus the
Jenkins build). Read while a run is still running, the record says how the run stands so far.

The record owns: the run row (model, kind, status, stop reason, metric, threshold, mode, options,
run directory), its attempts in order, the best attempt (`jobs.tune.objective.best_attempt`), the
notebook handed back next to the best model (when it is a regular file there), the run's model
version (`deployment`: registered, promoted or kept, or why it was not registered) and the line on
what happened to production."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.classify.notebook import handed_back_notebook
from jobs.deploy.versions import version_outcome
from jobs.store.run_store import RunStore
from jobs.train.metrics import captured, is_regular_file
from jobs.tune.objective import Objective, best_attempt


@dataclass(frozen=True)
class RunOutcome:
    run: dict[str, Any]
    attempts: list[dict[str, Any]]
    best: dict[str, Any] | None  # the best so far, while the run is running
    notebook: str | None  # the best attempt's notebook, handed back next to its model
    deployment: dict[str, Any] | None  # the version it registered, or why not (jobs.deploy.versions.version_outcome)
    production: str | None  # what happened to production, in words

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
    def best_n(self) -> int | None:
        return self.best["n"] if self.best else None


def run_outcome(store: RunStore, run_id: int) -> RunOutcome:
    """The run's outcome as the store has it now (UserError for an unknown run)."""
    run = store.get_run(run_id)
    attempts = store.attempts(run_id)
    best = best_attempt(attempts, Objective.of(run))
    notebook = handed_back_notebook(run, best) if best else None
    try:
        deployment, production = version_outcome(store, run)
    except Exception as exc:  # a summary or a mail is never lost over the model versions
        deployment, production = None, f"unknown ({type(exc).__name__}: {exc})"
    return RunOutcome(
        run=run, attempts=attempts, best=best,
        notebook=str(notebook) if notebook is not None and is_regular_file(notebook) else None,
        deployment=deployment, production=production,
    )


SHOWN_LOG_LINES = 5  # of a failed attempt's log, in the summary, `pushtune show` and the report


def shown_log_tail(attempt: dict) -> str:
    """The last lines of a failed attempt's log (its traceback's end), as the store keeps them."""
    return "\n".join((attempt.get("log_tail") or "").splitlines()[-SHOWN_LOG_LINES:])


def summary_json(outcome: RunOutcome) -> dict:
    """The run as the `--json` object: status, threshold, metric, best, attempts, run_id."""
    run, best, metric = outcome.run, outcome.best, outcome.metric
    return {
        "run_id": outcome.run_id,
        "model": run["model_path"],
        "kind": run["kind"],
        "status": run["status"],
        "stop_reason": run["stop_reason"],
        "threshold": run["threshold"],
        "metric": metric,
        "mode": run["mode"],
        "best": None if best is None else {
            "attempt": best["n"], metric: best["metric_value"], "params": best["params"],
            "tweaks": best["tweaks"], "artifact": best["artifact_path"],
            "artifact_sha256": best["artifact_sha256"],
            "artifact_source": captured(best, "artifact", "how"),
            "metric_source": captured(best, "metric_source"),
            "notebook": outcome.notebook,
        },
        "attempts": [
            {"n": a["n"], **({metric: a["metric_value"]} if a["status"] == "ok" else _failure(a)),
             "tweak": a["tweak"], "reason": a["reason"], "warm_from": a["warm_from"],
             "warm_epoch": a["warm_epoch"], "seconds": round(a["seconds"] or 0.0, 3)}
            for a in outcome.attempts
        ],
        "deployment": outcome.deployment,
        "production": outcome.production,
        "report": str(Path(run["run_dir"]) / "report.html"),
    }


def _failure(attempt: dict) -> dict:
    log = str(Path(attempt["dir"]) / "log.txt") if attempt["dir"] else None
    return {"error": attempt["error"], "log": log, "log_tail": shown_log_tail(attempt)}
