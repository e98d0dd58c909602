"""Errors a user can cause: the CLI prints the message as one sentence and exits 2, never a traceback."""


class UserError(Exception):
    """Bad input: the message names the file or value and says what to do."""

    exit_code = 2
