"""`pushtune notify RUN_ID [--notify ADDR ...]` and `pushtune notify --test [--notify ADDR]`.

Exit codes: 0 sent; 1 delivery failed (after retries); 2 bad settings or unknown run.
"""

from __future__ import annotations

import argparse
import sys

from jobs.errors import UserError
from jobs.exit_codes import FAILED, OK
from jobs.store import RunStore


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "notify",
        help="mail a run's summary to its owner, or check the mail settings (--test)",
        description="Mail the summary of a recorded run (settings: PUSHTUNE_SMTP_* and "
                    "PUSHTUNE_MAIL_* variables or $PUSHTUNE_HOME/notify.ini; see docs/mail.md).",
    )
    parser.add_argument("run_id", metavar="RUN_ID", type=int, nargs="?", help="the run to report")
    parser.add_argument("--notify", metavar="ADDR", action="append", default=[],
                        help="recipient (repeatable); default: the run's own (`--notify` when it "
                             "was started), else PUSHTUNE_MAIL_TO")
    parser.add_argument("--test", action="store_true",
                        help="connect, EHLO, STARTTLS/SSL, AUTH and send a short test mail")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here so other commands do not pay for matplotlib
    from notify import DeliveryError, EmailNotifier, load_settings, notify_run

    if args.test and args.run_id is not None:
        raise UserError("give either RUN_ID or --test, not both")
    if args.run_id is None and not args.test:
        raise UserError("give the RUN_ID of the run to report, or --test to check the mail settings")

    recipients = args.notify
    if args.run_id is not None and not recipients:  # as asked when the run was started
        from jobs.loop import run_options

        try:
            recipients = run_options(RunStore.open().get_run(args.run_id)).notify
        except UserError:
            recipients = []  # an unknown run is said below, after any error in the settings
    settings = load_settings(recipients or None)
    if args.test:
        print(f"testing mail through {settings.describe()}")
        log: list[str] = []
        try:
            EmailNotifier(settings).check(log)
        except DeliveryError as error:
            for line in log:
                print(f"  ok  {line}")
            print(f"pushtune: mail test failed: {error}", file=sys.stderr)
            return FAILED
        for line in log:
            print(f"  ok  {line}")
        print("mail settings work")
        return OK

    result = notify_run(RunStore.open(), args.run_id, settings=settings)
    if result.sent:
        print(result.describe(args.run_id))
        return OK
    return FAILED  # notify_run printed the one-line reason and recorded it on the run
