"""Calls in flight per upstream, so that a swap can wait for the replaced ones to finish.

A call is counted from the moment it picks its upstream, before anything is awaited, so that
once the count of a replaced upstream reaches zero no call can still be on its way there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable, Iterator


class InFlight:
    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._waiters: list[tuple[frozenset[str], asyncio.Future[None]]] = []

    @contextlib.contextmanager
    def track(self, upstream: str) -> Iterator[None]:
        self._counts[upstream] += 1
        try:
            yield
        finally:
            self._counts[upstream] -= 1
            if self._counts[upstream] == 0:
                del self._counts[upstream]
                self._wake()

    def _idle(self, upstreams: Iterable[str]) -> bool:
        return all(self._counts[u] == 0 for u in upstreams)

    def _wake(self) -> None:
        still: list[tuple[frozenset[str], asyncio.Future[None]]] = []
        for upstreams, future in self._waiters:
            if future.done():
                continue
            if self._idle(upstreams):
                future.set_result(None)
            else:
                still.append((upstreams, future))
        self._waiters = still

    async def drained(self, upstreams: Iterable[str], timeout: float) -> bool:
        """Wait until no call is in flight to any of `upstreams`; False after `timeout`."""
        watched = frozenset(upstreams)
        if self._idle(watched):
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((watched, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        return True
