"""`pushtune jenkins render|install|trigger|status|agent-secret`: the job chain on a Jenkins controller.

The controller and the credentials come from the environment: JENKINS_URL (PUSHTUNE_JENKINS_URL
wins when set), JENKINS_USER and JENKINS_API_TOKEN (an API token, not a password),
PUSHTUNE_TRIGGER_TOKEN (the chain's remote-trigger token: train and notify), PUSHTUNE_ENTRY_TOKEN
(install only: the entry job's token, optional). None of them is ever printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from jobs import exit_codes
from jobs.ci import jenkins as jk
from jobs.clock import utc_text
from jobs.errors import UserError


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key.strip(), value


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("jenkins", help="render, install, trigger and watch the Jenkins jobs",
                                   description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="jenkins_command", metavar="ACTION", required=True,
                                     parser_class=type(parser))

    p = commands.add_parser("render", help="write the job XML (OUTDIR/NAME/config.xml) with Jenkins Job Builder")
    p.add_argument("outdir", metavar="OUTDIR")
    _add_render_options(p)
    p.set_defaults(func=render)

    p = commands.add_parser("install", help="create or update the jobs on the controller")
    _add_render_options(p)
    p.add_argument("--with-trigger-token", action="store_true",
                   help="kept for old scripts: train and notify always get PUSHTUNE_TRIGGER_TOKEN (the "
                        "chain's token), pull gets PUSHTUNE_ENTRY_TOKEN when it is set, no other job gets "
                        "one (the tokens go to the controller only)")
    p.add_argument("--wait-ready", type=_positive, metavar="SECONDS",
                   help="first wait until the controller answers (after it starts)")
    _add_timeout(p)
    p.set_defaults(func=install)

    p = commands.add_parser("trigger", help="start a build; with --wait follow it to its result")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--param", action="append", default=[], type=_param, metavar="K=V",
                   help="a build parameter (repeatable)")
    p.add_argument("--wait", action="store_true", help="stream the console and exit with the result "
                   "(0 SUCCESS, 3 UNSTABLE, 1 FAILURE/ABORTED, 124 timed out)")
    p.add_argument("--timeout", type=_positive, default=3600.0, metavar="SECONDS",
                   help="with --wait: give up after this long (default 3600)")
    p.add_argument("--poll", type=_positive, default=2.0, metavar="SECONDS", help=argparse.SUPPRESS)
    _add_timeout(p)
    p.set_defaults(func=trigger)

    p = commands.add_parser("agent-secret", help="write an agent's secret to a file (0644, in a 0700 directory)",
                            description="Write the secret the inbound agent NAME connects with "
                                        "(computer/NAME/jenkins-agent.jnlp, read as a user with "
                                        "Agent/Connect) to FILE, never to the terminal.")
    p.add_argument("agent", metavar="NAME", help="the agent's node name, e.g. pushtune-agent-1")
    p.add_argument("file", metavar="FILE", help="where to write it, e.g. jenkins/secrets/agent_1_secret")
    p.add_argument("--wait-ready", type=_positive, metavar="SECONDS",
                   help="first wait until the controller answers (after it starts)")
    _add_timeout(p)
    p.set_defaults(func=agent_secret)

    p = commands.add_parser("status", help="the chain's last builds")
    p.add_argument("--prefix", default=jk.DEFAULT_PREFIX, help="job name prefix (default pushtune)")
    p.add_argument("--json", action="store_true")
    _add_timeout(p)
    p.set_defaults(func=status)


def _add_render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo-url", metavar="URL", help="the model repository (default: jenkins/jobs/project.yaml)")
    p.add_argument("--branch", help="the branch to follow (default: project.yaml's)")
    p.add_argument("--label", metavar="EXPR",
                   help="Jenkins label expression of the agents that run the jobs (JJB node:; "
                        f"default: project.yaml's, {jk.DEFAULT_LABEL!r}), e.g. 'pushtune && linux'")


def _add_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http-timeout", type=_positive, default=30.0, metavar="SECONDS",
                   help="for each request to Jenkins (default 30)")


def _client(args: argparse.Namespace) -> jk.JenkinsClient:
    return jk.JenkinsClient(jk.JenkinsSettings.from_env(timeout=args.http_timeout))


def render(args: argparse.Namespace) -> int:
    jobs = jk.render_jobs(args.repo_url, args.branch, label=args.label)
    for path in jk.write_jobs(jobs, Path(args.outdir)):
        print(path)
    return exit_codes.OK


def install(args: argparse.Namespace) -> int:
    client = _client(args)
    token = client.settings.trigger_token
    if not token:  # without a job token Build Token Root answers 404 and the chain stops
        raise UserError("install: PUSHTUNE_TRIGGER_TOKEN is not set; train and notify need the trigger "
                        "token (the pushtune-trigger-token credential's value) so tweak and monitor "
                        "can start the next job")
    jobs = jk.render_jobs(args.repo_url, args.branch, label=args.label)
    entry = client.settings.entry_token
    if entry == token:
        raise UserError("install: PUSHTUNE_ENTRY_TOKEN must differ from PUSHTUNE_TRIGGER_TOKEN: the "
                        "entry token is handed out, the chain's stays inside the tweak and monitor builds")
    jobs = jk.with_trigger_tokens(jobs, token, entry)
    if args.wait_ready:
        client.wait_until_ready(args.wait_ready)
    for name, what in client.install(jobs):
        print(f"{what} {name}")
    given = {**{f"{jk.DEFAULT_PREFIX}-{s}": token for s in jk.CHAIN_TOKEN_STEPS},
             **{f"{jk.DEFAULT_PREFIX}-{s}": entry for s in jk.ENTRY_STEPS}}
    plaintext = [name for name, value in given.items()
                 if name in jobs and client.stored_token_is_plaintext(name, value)]
    if plaintext:
        print(f"WARNING: Jenkins at {client.settings.display_url} stores the trigger token of "
              f"{', '.join(plaintext)} in plain text (a core older than 2.541): anyone who can "
              "read $JENKINS_HOME/jobs can use it", file=sys.stderr)
    if not client.root_url():
        print(f"WARNING: Jenkins at {client.settings.display_url} has no root URL (Manage Jenkins "
              "→ System → Jenkins URL, or unclassified.location.url in JCasC): builds get no "
              "BUILD_URL, so pushtune-tweak and pushtune-monitor cannot start the next job",
              file=sys.stderr)
    return exit_codes.OK


def trigger(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.wait and not client.settings.user:
        # Build Token Root only queues: the queue item and the build need Overall/Read and
        # Job/Read, which a token holder does not have (anonymous gets 403, BuildRootAction
        # .handleScheduleResult: "Clients without the READ permission won't be allowed to see
        # the build"). Refused before anything is queued.
        raise UserError("--wait needs JENKINS_USER and JENKINS_API_TOKEN: the trigger token alone "
                        "can queue a build but not read it (drop --wait, or log in)")
    deadline = time.monotonic() + args.timeout
    queued = client.queue_build(args.job, dict(args.param))
    queue_id = queued.queue_id
    where = f" (queue item {queue_id})" if queue_id is not None else ""
    what = "already queued (the same build is waiting)" if queued.already_queued else "queued"
    print(f"{what} {args.job}{where}", file=sys.stderr)
    if not args.wait:
        return exit_codes.OK
    if queue_id is None:
        raise UserError("Jenkins did not return a queue item, so the build cannot be followed")
    number, url = client.wait_for_start(args.job, queue_id, deadline, args.poll)
    print(f"started {args.job} #{number} {url}", file=sys.stderr)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    result = client.follow(args.job, number, write, deadline, args.poll)
    print(f"{args.job} #{number}: {result}", file=sys.stderr)
    return jk.RESULT_EXIT_CODES.get(result, exit_codes.FAILED)


def agent_secret(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.wait_ready:
        client.wait_until_ready(args.wait_ready)
    secret = client.agent_secret(args.agent)
    path = jk.write_secret(Path(args.file), secret)
    print(f"wrote the secret of agent {args.agent} to {path}", file=sys.stderr)
    return exit_codes.OK


def status(args: argparse.Namespace) -> int:
    rows = _client(args).last_builds(jk.chain_jobs(args.prefix))
    if args.json:
        print(json.dumps(rows, indent=2))
        return exit_codes.OK
    table = Table()
    for column in ("job", "build", "result", "started"):
        table.add_column(column)
    for row in rows:
        started = utc_text(row["started"]) if row["started"] else ""
        table.add_row(Text(row["job"]), str(row["number"] or ""), Text(str(row["result"])), started)
    Console(highlight=False).print(table)
    return exit_codes.OK
