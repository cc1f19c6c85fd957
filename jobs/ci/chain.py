"""The Jenkins job chain's hand-over: after a train or tweak step has decided, start the job that
follows (train again, or notify) with the run's id, from inside the build that decided.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from jobs.ci.jenkins import JenkinsClient, JenkinsSettings
from jobs.errors import UserError
from jobs.steps import Decision


def in_jenkins(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return bool(env.get("JENKINS_URL") and env.get("BUILD_URL"))


def in_a_build(env: Mapping[str, str]) -> bool:
    """A Jenkins build, which Jenkins always marks with these, root URL configured or not."""
    return bool(env.get("JOB_NAME") and env.get("BUILD_NUMBER"))


def dispatch(decision: Decision, jobs: Mapping[str, str], env: Mapping[str, str] | None = None) -> str | None:
    """Inside Jenkins, start the job that follows the decision; a line saying so, or None.

    `jobs` maps "train" and "notify" to job names. The trigger token (PUSHTUNE_TRIGGER_TOKEN,
    bound from a Jenkins credential) or an API token (JENKINS_USER/JENKINS_API_TOKEN) is needed.
    """
    env = os.environ if env is None else env
    if decision.next not in jobs:
        return None
    if not in_jenkins(env):
        if in_a_build(env):  # Jenkins leaves JENKINS_URL/BUILD_URL out when it has no root URL
            raise UserError(f"cannot start {jobs[decision.next]}: this Jenkins build has no JENKINS_URL "
                            f"(set the Jenkins URL in Manage Jenkins → System)")
        return None

    settings = JenkinsSettings.from_env(env)
    if not (settings.trigger_token or settings.user):
        raise UserError("cannot start the next job: set PUSHTUNE_TRIGGER_TOKEN (bind the trigger "
                        "token credential) or JENKINS_USER and JENKINS_API_TOKEN")
    job = jobs[decision.next]
    queue_id = JenkinsClient(settings).trigger(job, {"RUN_ID": str(decision.run_id)})
    return f"triggered {job}" + (f" (queue item {queue_id})" if queue_id is not None else "")
