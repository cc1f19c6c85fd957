"""Every exit code pushtune gives, in one table, and what a run's status exits with.

`pushtune run`, `resume` and `train` exit with the run's (or the attempt's) verdict; `jenkins
build --wait` maps the build's result onto the same codes (jobs.ci.jenkins.RESULT_EXIT_CODES), so a
job chain and a terminal read them alike.
"""

from __future__ import annotations

OK = 0  # done; a run or attempt that met its threshold
FAILED = 1  # no attempt reported the metric, an attempt failed, an internal error
USER_ERROR = 2  # bad input or environment (jobs.errors.UserError), and argparse's usage errors
BELOW_THRESHOLD = 3  # trained, but the best metric misses the threshold
INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C, or a step stopped by SIGTERM

# A finished run's status -> the exit code of the command that drove it.
RUN_STATUS_EXIT_CODES = {
    "passed": OK,
    "below_threshold": BELOW_THRESHOLD,
    "failed": FAILED,
    "interrupted": INTERRUPTED,
}


MEANINGS = {
    OK: "done: the threshold was met",
    FAILED: "failed: no attempt reported the metric, or an error",
    USER_ERROR: "bad input or environment",
    BELOW_THRESHOLD: "trained, but the best metric misses the threshold",
    INTERRUPTED: "interrupted",
}


def meaning(code: int) -> str:
    """What an exit code of a pushtune command means, in a few words (for logs such as hook.log)."""
    return MEANINGS.get(code, "killed by a signal" if code < 0 or code > 128 else "unexpected exit code")


def for_status(status: str) -> int:
    """The exit code of a finished run's status (KeyError for "running": it has none yet)."""
    return RUN_STATUS_EXIT_CODES[status]
