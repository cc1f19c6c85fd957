"""pushtune notification channels: tell the owner what was pushed, tried, won, and where the model is.

`notify_run()` is what the loop and `pushtune notify` call. Bad settings raise `UserError`; a
delivery failure never raises: it is recorded on the run (notifications table) and returned.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

from jobs.store import RunStore
from notify.email_channel import Delivery, DeliveryError, EmailNotifier, Notifier
from notify.settings import MailSettings, check_address, load_settings
from notify.summary import RunSummary, load_summary

__all__ = [
    "Delivery", "DeliveryError", "EmailNotifier", "MailSettings", "Notifier", "NotifyResult",
    "RunSummary", "load_settings", "load_summary", "notify_run",
]


@dataclass
class NotifyResult:
    status: str  # "sent" or "failed"
    channel: str
    recipients: list[str]
    subject: str
    tries: int
    error: str | None = None  # the failure, or recipients the server refused on a partial delivery

    @property
    def sent(self) -> bool:
        return self.status == "sent"

    def describe(self, run_id: int) -> str:
        tries = f"{self.tries} {'try' if self.tries == 1 else 'tries'}"
        if self.sent:
            note = f"; {self.error}" if self.error else ""
            return f"mail for run {run_id} sent to {', '.join(self.recipients)} ({tries}){note}"
        return f"mail for run {run_id} not sent: {self.error}"


def _print_to_stderr(line: str) -> None:
    print(f"pushtune: {line}", file=sys.stderr)


def notify_run(
    store: RunStore,
    run_id: int,
    recipients: list[str] | None = None,
    settings: MailSettings | None = None,
    *,
    notifier: Notifier | None = None,
    echo: Callable[[str], None] | None = _print_to_stderr,
) -> NotifyResult:
    """Mail the run's summary, with retries, and record the outcome on the run.

    `recipients` (e.g. from --notify) replace the configured ones. A final delivery failure is
    recorded as a "failed" notification, passed to `echo` and returned; the run is not changed.
    """
    if settings is None:
        settings = load_settings(recipients)
    elif recipients:
        settings = replace(settings, recipients=tuple(check_address(a, "recipient") for a in recipients))
    summary = load_summary(store, run_id)
    notifier = notifier or EmailNotifier(settings)
    to = list(settings.recipients)
    try:
        delivery = notifier.send(summary)
    except DeliveryError as error:
        result = NotifyResult("failed", notifier.channel, to, summary.subject(), error.tries, str(error))
        store.add_notification(run_id, notifier.channel, "failed", recipients=to, error=result.error)
        if echo:
            echo(result.describe(run_id))
        return result
    refused = "refused: " + ", ".join(f"{r} ({reply})" for r, reply in delivery.refused.items()) if delivery.refused else None
    result = NotifyResult("sent", notifier.channel, to, summary.subject(), delivery.tries, refused)
    store.add_notification(run_id, notifier.channel, "sent", recipients=to, error=refused)
    return result
