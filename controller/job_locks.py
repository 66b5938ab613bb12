"""One deploy of a job at a time: a lock held by the running deploy itself.

The lock lives in the platform's memory and belongs to the task that deploys: a killed push or a
crashed server cannot leave it behind. Whoever waits is told, every few seconds, who holds it
and since when, and gives up after a deadline with a message that says what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

WAIT_REPORT_INTERVAL = 5.0


class LockTimeout(Exception):
    """Waited too long for another deploy of the job; the message names it."""


@dataclass(frozen=True)
class Holder:
    what: str  # "deploy of adder by alice", "restore of adder r3", ...
    since: datetime
    cancellable: bool  # builds:cancel can stop it

    def describe(self) -> str:
        return f"{self.what} since {self.since.strftime('%H:%M:%S')} UTC"


class JobLocks:
    def __init__(self, wait_timeout: float = 600.0) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: dict[str, Holder] = {}
        self.wait_timeout = wait_timeout

    @contextlib.asynccontextmanager
    async def hold(
        self,
        job: str,
        what: str,
        progress: Callable[[str], None] = lambda _line: None,
        *,
        cancellable: bool = True,
    ) -> AsyncIterator[None]:
        lock = self._locks.setdefault(job, asyncio.Lock())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_timeout

        def holding() -> str:
            holder = self._holders.get(job)
            return holder.describe() if holder else f"work on {job}"

        if lock.locked():
            progress(f"Waiting for the {holding()} to finish")
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                holder = self._holders.get(job)
                hint = f", or stop it: builds:cancel {job}" if holder and holder.cancellable else ""
                raise LockTimeout(
                    f"the {holding()} still holds {job} after {self.wait_timeout:.0f}s;"
                    f" try again later{hint}"
                )
            try:
                await asyncio.wait_for(lock.acquire(), min(WAIT_REPORT_INTERVAL, remaining))
                break
            except TimeoutError:
                progress(f"Still waiting for the {holding()} to finish")
        self._holders[job] = Holder(what, datetime.now(UTC), cancellable)
        try:
            yield
        finally:
            self._holders.pop(job, None)
            lock.release()
