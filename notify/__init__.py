"""pushtune notification channels: tell the owner what was pushed, tried, won, and where the model is.

`notify_run()` is what the loop and `pushtune notify` call. Bad or missing settings raise
`UserError`; a delivery failure never raises: it is recorded on the run (notifications table) and
returned.

`NOTIFIERS` registers the channels (name -> `notify.base.Channel`: what it needs and the factory
of its `Notifier`); email is the only one, and the default. A new channel is a module with a
notifier and its `Channel`, and one `register_notifier` call.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobs.errors import UserError
from jobs.store.run_store import RunStore
from notify.base import Channel, Delivery, DeliveryError, Notifier, NotifierFactory
from notify.email_channel import EMAIL, EmailNotifier
from notify.settings import MailNotConfigured, MailSettings, load_settings
from notify.summary import RunSummary, load_summary

__all__ = [
    "DEFAULT_CHANNEL", "NOTIFIERS", "Channel", "Delivery", "DeliveryError", "EmailNotifier",
    "MailNotConfigured", "MailSettings", "Notifier", "NotifierFactory", "NotifyResult", "RunSummary", "get_notifier",
    "load_settings", "load_summary", "notify_run", "register_notifier",
]

NOTIFIERS: dict[str, Channel] = {}  # channel name -> its record
DEFAULT_CHANNEL = EMAIL.name


def register_notifier(channel: Channel) -> Channel:
    if channel.name in NOTIFIERS:
        raise ValueError(f"notification channel {channel.name!r} is registered already")
    NOTIFIERS[channel.name] = channel
    return channel


register_notifier(EMAIL)


def get_notifier(channel: str = DEFAULT_CHANNEL, recipients: list[str] | None = None,
                 settings: Any = None) -> Notifier:
    """The channel's notifier for `recipients` (None: the configured ones) with `settings` (None:
    the channel loads its own); UserError in one line for an unknown channel or missing settings."""
    entry = NOTIFIERS.get(channel)
    if entry is None:
        raise UserError(f"unknown notification channel {channel!r} (choose {', '.join(NOTIFIERS)})")
    return entry.factory(recipients, settings)


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
        what = "mail" if self.channel == EMAIL.name else f"{self.channel} notification"
        if self.sent:
            note = f"; {self.error}" if self.error else ""
            return f"{what} for run {run_id} sent to {', '.join(self.recipients)} ({tries}){note}"
        return f"{what} for run {run_id} not sent: {self.error}"


def _print_to_stderr(line: str) -> None:
    print(f"pushtune: {line}", file=sys.stderr)


def notify_run(
    store: RunStore,
    run_id: int,
    recipients: list[str] | None = None,
    settings: Any = None,
    *,
    channel: str = DEFAULT_CHANNEL,
    notifier: Notifier | None = None,
    echo: Callable[[str], None] | None = _print_to_stderr,
) -> NotifyResult:
    """Send the run's summary through `channel` (default: mail, with retries) and record the
    outcome on the run.

    `recipients` (e.g. from --notify) replace the configured ones; `settings` (the channel's:
    `MailSettings` for email) replace the loaded ones; `notifier` replaces the channel's own. A
    final delivery failure is recorded as a "failed" notification, passed to `echo` and returned;
    the run is not changed.
    """
    notifier = notifier or get_notifier(channel, recipients, settings)
    summary = load_summary(store, run_id)
    to = list(notifier.recipients)
    try:
        delivery = notifier.send(summary)
    except DeliveryError as error:
        result = NotifyResult("failed", notifier.channel, to, summary.subject(), error.tries, str(error))
        store.add_notification(run_id, notifier.channel, "failed", recipients=to, error=result.error)
        if echo:
            echo(result.describe(run_id))
        return result
    refused = None
    if delivery.refused:
        refused = "refused: " + ", ".join(f"{r} ({reply})" for r, reply in delivery.refused.items())
    result = NotifyResult("sent", notifier.channel, to, summary.subject(), delivery.tries, refused)
    store.add_notification(run_id, notifier.channel, "sent", recipients=to, error=refused)
    return result
