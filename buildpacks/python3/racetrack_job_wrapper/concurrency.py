"""`max_concurrency` and `max_concurrency_queue`: how many calls run at once, how many wait.

Calls beyond the limit wait in arrival order; when the queue is full too, the call is refused
at once (the server answers 429) instead of piling up threads behind a slow job.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class TooBusy(Exception):
    """Every slot and every queue place is taken."""


class ConcurrencyLimit:
    """At most `limit` holders at once (None: unlimited); at most `queue` waiting (None:
    unlimited, 0: nobody waits)."""

    def __init__(self, limit: int | None, queue: int | None) -> None:
        self.limit = limit
        self.queue = queue
        self._running = 0
        self._waiting: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextmanager
    def slot(self) -> Iterator[None]:
        self._acquire()
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def _acquire(self) -> None:
        with self._changed:
            if self.limit is None or (self._running < self.limit and not self._waiting):
                self._running += 1
                return
            if self.queue is not None and len(self._waiting) >= self.queue:
                raise TooBusy(self.describe())
            ticket = object()
            self._waiting.append(ticket)
            try:
                self._changed.wait_for(
                    lambda: self._waiting[0] is ticket and self._running < (self.limit or 0)
                )
            finally:
                self._waiting.remove(ticket)
                self._changed.notify_all()
            self._running += 1

    def describe(self) -> str:
        queue = "an unlimited queue" if self.queue is None else f"a queue of {self.queue}"
        return f"max_concurrency {self.limit} with {queue}"
