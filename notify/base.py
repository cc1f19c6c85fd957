"""What a notification channel is: a `Notifier` that tells a run's recipients its result, and the
`Channel` record that registers it (`notify.NOTIFIERS`).

A channel's factory loads the settings it needs (or takes the ones given) and raises a one-line
`UserError` naming what is missing; its notifier's `send` delivers or raises `DeliveryError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from notify.summary import RunSummary


class DeliveryError(Exception):
    """The notification could not be delivered; the message never contains a secret."""

    def __init__(self, message: str, tries: int, permanent: bool) -> None:
        super().__init__(message)
        self.tries = tries
        self.permanent = permanent


@dataclass
class Delivery:
    tries: int
    refused: dict[str, str] = field(default_factory=dict)  # recipient -> why it was refused


class Notifier(Protocol):
    channel: str  # its registry name; what the run's notifications table records

    @property
    def recipients(self) -> Sequence[str]:
        """Who it tells, as the notifications table records them."""
        ...

    def send(self, summary: RunSummary) -> Delivery:
        """Deliver the notification for `summary`, or raise DeliveryError."""
        ...


class NotifierFactory(Protocol):
    def __call__(self, recipients: list[str] | None = None, settings: Any = None) -> Notifier:
        """A notifier for `recipients` (None: the configured ones) with `settings` (None: loaded
        from the environment and configuration); UserError, in one line, when they are missing
        or bad."""
        ...


@dataclass(frozen=True)
class Channel:
    """One registered notification channel."""

    name: str
    description: str
    needs: str  # the settings it needs, in a line (for messages and docs)
    factory: NotifierFactory
