"""Errors that end `racetrack serve` with a one-line message instead of a traceback."""


class StartupError(Exception):
    """The platform cannot start; the message says what to fix."""
