"""The email channel: SMTP with the standard library, retries for temporary failures.

Temporary (retried with a doubling pause, within `tries` and `retry_budget`): refused or dropped
connections, timeouts, 4xx replies. Permanent (not retried): 5xx replies, an unverifiable
certificate, a server without STARTTLS/AUTH. The password is scrubbed from every error text.
"""

from __future__ import annotations

import base64
import smtplib
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import getaddresses

from notify.base import Channel, Delivery, DeliveryError
from notify.message import build_message
from notify.settings import MailSettings, load_settings, with_recipients
from notify.summary import RunSummary


def is_temporary(error: OSError) -> bool:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in error.recipients.values())
    if isinstance(error, smtplib.SMTPResponseException):
        return 400 <= error.smtp_code < 500
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(error, (smtplib.SMTPException, ssl.SSLCertVerificationError)):
        return False  # no STARTTLS, no AUTH mechanism, a certificate that does not verify …
    return True  # refused connection, timeout, name resolution, TLS handshake cut short


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


def describe_error(error: OSError) -> str:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(f"{rcpt} ({code} {_reply_text(reply)})" for rcpt, (code, reply) in error.recipients.items())
        return f"recipients refused: {refused}"
    if isinstance(error, smtplib.SMTPResponseException):
        return f"server replied {error.smtp_code} {_reply_text(error.smtp_error)}"
    return str(error) or type(error).__name__


def _tls_version(smtp: smtplib.SMTP) -> str | None:
    """The TLS version of the connection, once it is over TLS."""
    return smtp.sock.version() if isinstance(smtp.sock, ssl.SSLSocket) else None


class _Steps:
    """Where the SMTP conversation is, so an error says what failed; optionally a log of it."""

    def __init__(self, log: list[str] | None = None) -> None:
        self.current = "connecting"
        self.log = log

    def start(self, name: str) -> None:
        self.current = name

    def done(self, text: str) -> None:
        if self.log is not None:
            self.log.append(text)


class EmailNotifier:
    """A `notify.base.Notifier`: the run's summary as a mail to the settings' recipients."""

    channel = "email"

    def __init__(self, settings: MailSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep

    # public

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.settings.recipients

    def send(self, summary: RunSummary) -> Delivery:
        try:
            message = build_message(summary, self.settings.sender, self.settings.recipients)
        except ValueError as exc:  # text a mail cannot carry: the mail fails, never the run
            raise DeliveryError(f"cannot build the mail: {exc}", tries=0, permanent=True) from None
        return self.deliver(message)

    def deliver(self, message: EmailMessage) -> Delivery:
        """Send with retries; raises DeliveryError after the last try or a permanent error."""
        settings = self.settings
        started, pause = time.monotonic(), settings.retry_delay
        for attempt in range(1, settings.tries + 1):
            steps = _Steps()
            try:
                return Delivery(tries=attempt, refused=self._send_once(message, steps))
            except OSError as error:  # smtplib and ssl errors are OSErrors too
                permanent = not is_temporary(error)
                out_of_time = time.monotonic() - started + pause > settings.retry_budget
                if permanent or attempt == settings.tries or out_of_time:
                    tries = f"{attempt} {'try' if attempt == 1 else 'tries'}"
                    raise DeliveryError(
                        self.scrub(f"{steps.current} {settings.host}:{settings.port} failed after {tries}: "
                                   f"{describe_error(error)}"),
                        tries=attempt, permanent=permanent,
                    ) from None
            self._sleep(pause)
            pause *= 2
        raise AssertionError("unreachable: settings.tries >= 1")

    def check(self, log: list[str]) -> None:
        """`pushtune notify --test`: connect, EHLO, STARTTLS/SSL, AUTH, send a short mail; no retries.

        Appends a line per step to `log`; raises DeliveryError naming the step that failed.
        """
        settings = self.settings
        message = EmailMessage()
        message["Subject"] = "[pushtune] test mail"
        message["From"] = settings.sender
        message["To"] = ", ".join(settings.recipients)
        message.set_content(f"pushtune can send mail through {settings.describe()}.\n")
        steps = _Steps(log)
        try:
            refused = self._send_once(message, steps)
        except OSError as error:
            raise DeliveryError(
                self.scrub(f"{steps.current} {settings.host}:{settings.port} failed: {describe_error(error)}"),
                tries=1, permanent=not is_temporary(error),
            ) from None
        if refused:
            log.append("refused: " + ", ".join(f"{r} ({reply})" for r, reply in refused.items()))

    def scrub(self, text: str) -> str:
        """The text with the password (and its base64 AUTH forms) replaced by ***."""
        password, user = self.settings.password, self.settings.user or ""
        if not password:
            return text
        forms = {password, repr(password)[1:-1]}
        for raw in (password, f"\0{user}\0{password}"):
            forms.add(base64.b64encode(raw.encode()).decode())
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "***")
        return text

    # SMTP conversation

    def _open(self, steps: _Steps) -> smtplib.SMTP:
        settings = self.settings
        context = ssl.create_default_context(cafile=settings.ca_file) if settings.security != "none" else None
        if settings.security == "ssl":
            steps.start("TLS connection to")
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout,
                                                  context=context)
            steps.done(f"connected to {settings.host}:{settings.port} over TLS ({_tls_version(smtp)}), "
                       f"certificate verified against {settings.ca_file or 'the system trust store'}")
        else:
            steps.start("connecting to")
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
            steps.done(f"connected to {settings.host}:{settings.port}")
        try:
            steps.start("EHLO to")
            smtp.ehlo()
            steps.done("EHLO: server offers " + (" ".join(sorted(smtp.esmtp_features)).upper() or "no extensions"))
            if settings.security == "starttls":
                steps.start("STARTTLS with")
                smtp.starttls(context=context)
                smtp.ehlo()
                steps.done(f"STARTTLS: {_tls_version(smtp)}, certificate verified against "
                           f"{settings.ca_file or 'the system trust store'}")
            if settings.user:
                steps.start("AUTH at")
                smtp.login(settings.user, settings.password or "")
                steps.done(f"AUTH as {settings.user}: accepted")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _send_once(self, message: EmailMessage, steps: _Steps) -> dict[str, str]:
        smtp = self._open(steps)
        try:
            steps.start("sending through")
            sender = getaddresses([self.settings.sender])[0][1]
            recipients = [address for _, address in getaddresses(list(self.settings.recipients))]
            refused = smtp.send_message(message, from_addr=sender, to_addrs=recipients)
            steps.done(f"sent {message['Subject']!r} to {', '.join(recipients)}")
        except BaseException:
            smtp.close()
            raise
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()  # the mail is already accepted; a failed QUIT must not cause a resend
        return {rcpt: f"{code} {_reply_text(reply)}" for rcpt, (code, reply) in refused.items()}


def email_notifier(recipients: list[str] | None = None, settings: MailSettings | None = None) -> EmailNotifier:
    """The email channel's factory: `settings` (default: `load_settings`, which says in one line
    what is missing), with `recipients` (e.g. from --notify) replacing the configured ones."""
    if settings is None:
        settings = load_settings(recipients)
    elif recipients:
        settings = with_recipients(settings, recipients)
    return EmailNotifier(settings)


EMAIL = Channel(
    name=EmailNotifier.channel,
    description="the run's summary as a mail, through an SMTP server (docs/mail.md)",
    needs="an SMTP server (PUSHTUNE_SMTP_HOST, or [smtp] host in notify.ini) and recipients "
          "(--notify or PUSHTUNE_MAIL_TO)",
    factory=email_notifier,
)
