"""Errors that end an operation with a one-line message instead of a traceback."""

from typing import Any


class StartupError(Exception):
    """The platform cannot start; the message says what to fix."""


class DeployFailed(Exception):
    """The deploy did not happen; the message (one line) says why."""


class PartlyReconfigured(DeployFailed):
    """A config change reached some of a job's versions and failed for another; `applied` are
    the new releases (controller.store.Release) that run with the new config."""

    def __init__(self, message: str, applied: list[Any]) -> None:
        super().__init__(message)
        self.applied = applied
