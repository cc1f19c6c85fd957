"""One line saying what happened to a run, for a Jenkins build's description.

`describe(summary)` reads the run's `--json` summary (`jobs.loop.summarize`, or the larger
`pushtune show --json` object) and says, from the run's state alone:

    running, its last attempt scored   run 12 · attempt 3: accuracy 0.8200 < 0.9 (add Dense layer)
    running, its last attempt failed   run 12 · attempt 3 failed: script exited with code 1 (…)
    running, an attempt planned        run 12 · attempt 4 next: double epochs 3 → 6
    passed                             run 12 · accuracy 0.9670 ≥ 0.9 at attempt 3 · m v4 is production
    below threshold                    run 12 · below threshold: best accuracy 0.8200 of ≥ 0.9 after 8 attempts
    failed, interrupted                run 12 · failed: none of 3 attempts scored (last: …)

so a train build tells its attempt, a tweak build the attempt it planned, and the notify and
deploy builds the run's outcome and what became of production.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs.tune.objective import Objective, usable

LONGEST = 300  # characters: a description is a line in the build list, not a report


def describe(summary: Mapping[str, Any]) -> str:
    """The run's story in one line of at most LONGEST characters, without control characters."""
    objective = Objective.of(summary)
    metric, attempts, status = objective.metric, summary["attempts"], summary["status"]
    head = f"run {summary['run_id']}"
    if status == "running":
        text = f"{head} · {_attempt(attempts[-1], objective)}" if attempts else f"{head} · started"
    elif status == "passed":
        best = summary["best"]
        text = (f"{head} · {metric} {best[metric]:.4f} {objective.symbol} {objective.threshold:g} "
                f"at attempt {best['attempt']}{_deployment(summary.get('deployment'))}")
    else:
        text = f"{head} · {_unfinished(summary, objective)}{_deployment(summary.get('deployment'))}"
    return _one_line(text)


def _attempt(attempt: Mapping[str, Any], objective: Objective) -> str:
    metric, change = objective.metric, attempt.get("tweak") or "as pushed"
    value = attempt.get(metric)
    if usable(value):
        compared = objective.symbol if objective.meets(value) else objective.miss_symbol
        return f"attempt {attempt['n']}: {metric} {value:.4f} {compared} {objective.threshold:g} ({change})"
    if attempt.get("error"):
        return f"attempt {attempt['n']} failed: {attempt['error']} ({change})"
    return f"attempt {attempt['n']} next: {change}"  # planned (pending) or still training


def _unfinished(summary: Mapping[str, Any], objective: Objective) -> str:
    """The outcome of a run that did not pass: below threshold, failed or interrupted."""
    metric, attempts, best = objective.metric, summary["attempts"], summary["best"]
    count = f"{len(attempts)} attempt{'s' if len(attempts) != 1 else ''}"
    status = str(summary["status"]).replace("_", " ")
    if best is not None:
        return (f"{status}: best {metric} {best[metric]:.4f} of {objective.symbol} "
                f"{objective.threshold:g} after {count}")
    errors = [a["error"] for a in attempts if a.get("error")]
    last = f" (last: {errors[-1]})" if errors else ""
    return f"{status}: none of {count} scored{last}"


def _deployment(deployment: Mapping[str, Any] | None) -> str:
    """What became of production, from the summary's `deployment` (jobs.versions.deployment_of)."""
    if not deployment:
        return ""
    if deployment["version"] is None:
        return f" · not registered: {deployment['reason']}"
    label = f"{deployment['name']} v{deployment['version']}"
    if deployment["status"] == "production":
        return f" · {label} is production"
    production = deployment.get("production")
    stays = f", production stays v{production}" if production else ", no production version"
    return f" · {label} is {deployment['status']}{stays}: {deployment['reason']}"


def _one_line(text: str) -> str:
    """Control characters (a newline in an error) become spaces; long text is cut with '…'."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= LONGEST else text[: LONGEST - 1] + "…"
