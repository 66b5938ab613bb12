"""Errors that end an operation with a one-line message instead of a traceback."""


class StartupError(Exception):
    """The platform cannot start; the message says what to fix."""


class DeployFailed(Exception):
    """The deploy did not happen; the message (one line) says why."""
