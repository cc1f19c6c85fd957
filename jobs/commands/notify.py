"""`pushtune notify RUN_ID [--notify ADDR ...]` and `pushtune notify --test [--notify ADDR]`.

Exit codes: 0 sent, or mail not set up (no SMTP server or no recipients: skipped), or not
delivered (recorded on the run), so a job chain goes on to deploy; 2 bad settings or unknown run.
With `--strict`, as by hand: 1 delivery failed (after retries), 2 mail not set up.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from jobs.errors import UserError
from jobs.exit_codes import FAILED, OK
from jobs.loop import run_options
from jobs.store.run_store import RunStore
from notify import DeliveryError, EmailNotifier, MailNotConfigured, load_settings, notify_run

if TYPE_CHECKING:
    from notify.settings import MailSettings


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
    parser.add_argument("--strict", action="store_true",
                        help="fail when mail is not set up (exit 2) or not delivered (exit 1); "
                             "without it both are one line and exit 0, so a job chain goes on")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here so other commands do not pay for matplotlib

    if args.test and args.run_id is not None:
        raise UserError("give either RUN_ID or --test, not both")
    if args.run_id is None and not args.test:
        raise UserError("give the RUN_ID of the run to report, or --test to check the mail settings")
    if args.test:
        return _test_mail(load_settings(args.notify or None))

    store = RunStore.open()
    recipients = args.notify
    if not recipients:  # as asked when the run was started

        try:
            recipients = run_options(store.get_run(args.run_id)).notify
        except UserError:
            recipients = []  # an unknown run is said below, after any error in the settings
    try:
        settings = load_settings(recipients or None)
    except MailNotConfigured as missing:
        if args.strict:
            raise
        store.get_run(args.run_id)  # an unknown run is still an error
        store.add_notification(args.run_id, "email", "skipped", recipients=[], error=str(missing))
        print(f"pushtune: run {args.run_id}: {missing.missing} configured: mail skipped ({missing.hint})",
              file=sys.stderr)
        return OK

    going_on = "" if args.strict else " (recorded on the run; the build goes on: --strict would fail it)"
    result = notify_run(store, args.run_id, settings=settings,
                        echo=lambda line: print(f"pushtune: {line}{going_on}", file=sys.stderr))
    if result.sent:
        print(result.describe(args.run_id))
        return OK
    return FAILED if args.strict else OK


def _test_mail(settings: MailSettings) -> int:
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
