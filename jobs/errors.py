"""Errors a user can fix: the CLI prints them as one line and exits 2 (exit_codes.USER_ERROR)."""

from jobs.exit_codes import USER_ERROR


class UserError(Exception):
    """Bad input or environment. The message is shown as is, without a traceback."""

    exit_code = USER_ERROR
