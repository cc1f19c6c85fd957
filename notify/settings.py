"""Mail settings: environment variables, else `$PUSHTUNE_HOME/notify.ini`, else defaults.

Every value can come from either place; the environment wins. Bad values raise `UserError`.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from email.utils import parseaddr
from pathlib import Path

from jobs.errors import UserError
from jobs.store.run_store import home

SECURITY_MODES = ("none", "starttls", "ssl")
DEFAULT_PORTS = {"none": 25, "starttls": 587, "ssl": 465}

# setting -> (environment variable, notify.ini section, notify.ini key)
SOURCES: dict[str, tuple[str, str, str]] = {
    "host": ("PUSHTUNE_SMTP_HOST", "smtp", "host"),
    "port": ("PUSHTUNE_SMTP_PORT", "smtp", "port"),
    "user": ("PUSHTUNE_SMTP_USER", "smtp", "user"),
    "password": ("PUSHTUNE_SMTP_PASSWORD", "smtp", "password"),
    "security": ("PUSHTUNE_SMTP_SECURITY", "smtp", "security"),
    "ca_file": ("PUSHTUNE_SMTP_CA_FILE", "smtp", "ca_file"),
    "timeout": ("PUSHTUNE_SMTP_TIMEOUT", "smtp", "timeout"),
    "tries": ("PUSHTUNE_SMTP_TRIES", "smtp", "tries"),
    "retry_delay": ("PUSHTUNE_SMTP_RETRY_DELAY", "smtp", "retry_delay"),
    "retry_budget": ("PUSHTUNE_SMTP_RETRY_BUDGET", "smtp", "retry_budget"),
    "sender": ("PUSHTUNE_MAIL_FROM", "mail", "from"),
    "recipients": ("PUSHTUNE_MAIL_TO", "mail", "to"),
}

_ADDRESS = re.compile(r'^[^@\s<>"]+@[^@\s<>"]+$')


class MailNotConfigured(UserError):
    """No SMTP server or no recipients at all: mail is not set up, which a job chain may skip."""

    def __init__(self, missing: str, hint: str):
        super().__init__(f"{missing}: {hint}")
        self.missing, self.hint = missing, hint


@dataclass(frozen=True)
class MailSettings:
    host: str
    port: int
    security: str
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    timeout: float = 30.0
    tries: int = 4
    retry_delay: float = 2.0  # first pause; doubles after each failed try
    retry_budget: float = 120.0  # no new try starts after this many seconds

    def describe(self) -> str:
        """One line without secrets, for messages."""
        who = f" as {self.user}" if self.user else ""
        return f"{self.host}:{self.port} ({self.security}){who}"


def config_path() -> Path:
    return home() / "notify.ini"


def _read_config(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        first_line = str(exc).splitlines()[0]
        raise UserError(f"cannot read {path}: {first_line}") from None
    return parser


def _raw_values(env: Mapping[str, str], path: Path) -> dict[str, str]:
    parser = _read_config(path) if path.exists() else None
    values: dict[str, str] = {}
    for name, (variable, section, key) in SOURCES.items():
        value = env.get(variable)
        if value is None and parser is not None:
            value = parser.get(section, key, fallback=None)
        if value is not None and value.strip():
            values[name] = value.strip()
    return values


def _number(values: dict[str, str], name: str, kind: type, low: float, high: float, default):
    if name not in values:
        return default
    variable = SOURCES[name][0]
    try:
        number = kind(values[name])
    except ValueError:
        raise UserError(f"{variable} must be a number, not {values[name]!r}") from None
    if not low <= number <= high:
        raise UserError(f"{variable} must be between {low:g} and {high:g}, not {values[name]}")
    return number


def check_address(address: str, what: str) -> str:
    """Return the address if it looks like `user@domain` (optionally `Name <user@domain>`)."""
    _, bare = parseaddr(address)
    if not bare or not _ADDRESS.match(bare) or "\n" in address or "\r" in address:
        raise UserError(f"{what} {address!r} is not a mail address like name@example.com")
    return address


def with_recipients(settings: MailSettings, recipients: list[str]) -> MailSettings:
    """The settings with `recipients` (e.g. from --notify) instead of the configured ones."""
    return replace(settings, recipients=tuple(check_address(a, "recipient") for a in recipients))


def _check_ca_file(path: str) -> None:
    if not Path(path).is_file():
        raise UserError(f"PUSHTUNE_SMTP_CA_FILE {path} is not a file")
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise UserError(f"PUSHTUNE_SMTP_CA_FILE {path} is not a PEM certificate bundle ({exc})") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(
    recipients: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> MailSettings:
    """Settings from `env` (default os.environ) over `path` (default $PUSHTUNE_HOME/notify.ini).

    `recipients` (from --notify) replaces PUSHTUNE_MAIL_TO when given.
    """
    env = os.environ if env is None else env
    path = config_path() if path is None else path
    values = _raw_values(env, path)

    host = values.get("host")
    if not host:
        raise MailNotConfigured("no SMTP server", f"set PUSHTUNE_SMTP_HOST (or [smtp] host in {path})")
    to = list(recipients) if recipients else [a for a in values.get("recipients", "").split(",") if a.strip()]
    if not to:
        raise MailNotConfigured("no recipients", "pass --notify ADDR or set PUSHTUNE_MAIL_TO")

    security = values.get("security", "starttls").lower()
    if security not in SECURITY_MODES:
        raise UserError(f"PUSHTUNE_SMTP_SECURITY must be one of {', '.join(SECURITY_MODES)}, not {security!r}")
    port = _number(values, "port", int, 1, 65535, DEFAULT_PORTS[security])

    user, password = values.get("user"), values.get("password")
    if password and not user:
        raise UserError("PUSHTUNE_SMTP_PASSWORD is set but PUSHTUNE_SMTP_USER is not")
    if user and not password:
        raise UserError("PUSHTUNE_SMTP_USER is set but PUSHTUNE_SMTP_PASSWORD is not")
    if password and security == "none" and not _is_loopback(host):
        raise UserError(
            "refusing to send the SMTP password unencrypted: set PUSHTUNE_SMTP_SECURITY to starttls or ssl"
        )

    ca_file = values.get("ca_file")
    if ca_file:
        _check_ca_file(ca_file)

    to = [check_address(a.strip(), "recipient") for a in to]

    default_sender = user if user and "@" in user else f"pushtune@{socket.gethostname()}"
    sender = check_address(values.get("sender", default_sender), "PUSHTUNE_MAIL_FROM")

    return MailSettings(
        host=host,
        port=port,
        security=security,
        sender=sender,
        recipients=tuple(to),
        user=user,
        password=password,
        ca_file=ca_file,
        timeout=_number(values, "timeout", float, 0.1, 600, 30.0),
        tries=_number(values, "tries", int, 1, 20, 4),
        retry_delay=_number(values, "retry_delay", float, 0, 600, 2.0),
        retry_budget=_number(values, "retry_budget", float, 0, 3600, 120.0),
    )
