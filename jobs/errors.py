"""Errors a user can fix: the CLI prints them as one line and exits 2."""


class UserError(Exception):
    """Bad input or environment. The message is shown as is, without a traceback."""

    exit_code = 2
