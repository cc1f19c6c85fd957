"""`pushtune results RUN_ID [--to DIR]`: a run's story in one line, and its files in a folder.

The last line, `description: run 12 · …`, is what the Jenkins jobs' Description Setter reads
from the console (jenkins/jobs/pushtune.yaml). With `--to DIR`, the report, `show --json`, the
winning diff, the model and the logs are copied into DIR for the jobs to archive (jobs.ci.results).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs import exit_codes
from jobs.ci import results
from jobs.ci.describe import describe
from jobs.commands.runs import show_json
from jobs.errors import UserError
from jobs.store.run_store import RunStore, no_store_yet

# The line Jenkins' Description Setter takes the build's description from (its first match in
# the console); the regexp in jenkins/jobs/pushtune.yaml is `^description: (run \d+ .*)$`.
DESCRIPTION_PREFIX = "description: "


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("results", help="a run's outcome in one line; with --to, its files in a folder",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("--to", metavar="DIR", help="copy the report, show --json, the winning diff, the model "
                                               "and the logs into DIR (new, empty, or earlier results)")
    p.add_argument("--max-file-mb", type=float, default=results.MAX_FILE_BYTES / 2**20, metavar="MB",
                   help="skip a file the run left that is larger (default %(default)g)")
    p.set_defaults(func=show_results)


def show_results(args: argparse.Namespace) -> int:
    nothing = no_store_yet()
    if nothing:
        raise UserError(f"no run {args.run_id}: {nothing}")
    if not args.max_file_mb > 0:
        raise UserError("--max-file-mb must be positive")
    store = RunStore.open()
    details = show_json(store, args.run_id)
    if args.to:
        done = results.collect_results(store, args.run_id, Path(args.to), details,
                                       max_file_bytes=int(args.max_file_mb * 2**20))
        print(f"run {args.run_id}: {len(done.copied)} files in {done.folder} ({done.total} bytes)")
        for name, why in done.skipped:
            print(f"  skipped {name}: {why}")
    print(DESCRIPTION_PREFIX + jenkins_text(describe(details)))
    return exit_codes.OK


def jenkins_text(text: str) -> str:
    """`$` doubled: Description Setter expands build variables in what it matched
    (DescriptionSetterHelper: build.getEnvironment(listener).expand(result)), and core's
    Util.replaceMacro turns `$$` into `$`, so `$HOME` in a model's name stays `$HOME`."""
    return text.replace("$", "$$")
