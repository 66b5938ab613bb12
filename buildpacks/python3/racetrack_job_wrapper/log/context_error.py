"""`ContextError` and `wrap_context`: errors that say what was being done, Go style
(`loading model: reading weights: file is missing`), as Racetrack jobs use them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


class ContextError(RuntimeError):
    """An error with a message about what was being done, caused by another error."""

    def __init__(self, context_message: str, cause: BaseException | None = None) -> None:
        super().__init__()
        self.context_message = context_message
        if cause is not None:
            self.__cause__ = cause

    def __str__(self) -> str:
        if self.__cause__ is None:
            return self.context_message
        return f"{self.context_message}: {self.__cause__}"


@contextmanager
def wrap_context(context_name: str, log_debug: bool = False) -> Iterator[None]:
    """Re-raise any error from the block as a ContextError naming `context_name`."""
    if log_debug:
        logger.debug(context_name)
    try:
        yield
    except Exception as exc:
        raise ContextError(context_name) from exc
