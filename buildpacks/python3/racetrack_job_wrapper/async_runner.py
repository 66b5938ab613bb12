"""One asyncio event loop in a background thread, shared by the wrapper's request threads.

The HTTP server runs one thread per connection; coroutines (an `async def perform`, an ASGI
webview) need an event loop. Rather than one loop per request, every thread hands its coroutine
to this single long-lived loop and blocks until it finishes, so that state an app binds to its
loop at start-up (connection pools, lifespan tasks) stays usable across requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_JOIN_TIMEOUT = 10.0


class AsyncRunner:
    """One asyncio event loop in a daemon thread, started on first use; threads submit
    coroutines to it."""

    def __init__(self, name: str = "racetrack-asyncio") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def run(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Run `awaitable` on the loop and block until it finishes; re-raise its exception.

        On timeout the coroutine is cancelled and `TimeoutError` is raised.
        """
        if self._thread is not None and threading.current_thread() is self._thread:
            _close_unawaited(awaitable)
            raise RuntimeError("AsyncRunner.run() called from its own event loop; await instead")
        future = self.submit(awaitable)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:  # not the builtin TimeoutError on Python 3.10
            future.cancel()
            raise TimeoutError(f"coroutine did not finish within {timeout}s") from None

    def submit(self, awaitable: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Schedule `awaitable` on the loop; the returned future is safe to wait on anywhere."""
        with self._lock:  # so that `close` cannot stop the loop between these two steps
            try:
                loop = self._ensure_loop()
            except RuntimeError:
                _close_unawaited(awaitable)
                raise
            return asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), loop)

    def close(self) -> None:
        """Cancel what is still running, stop the loop and join its thread. Idempotent."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread() is not thread:
            thread.join(_JOIN_TIMEOUT)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        """Start the loop thread on first use; the caller holds the lock."""
        if self._closed:
            raise RuntimeError("AsyncRunner is closed")
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=_run_loop, args=(loop,), name=self._name, daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The loop thread: run until stopped, then cancel leftovers and close the loop."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            _cancel_remaining(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel every task, again if cancelling started new ones, so no submitted future hangs."""
    for _ in range(10):  # bounded: a task could keep spawning others as it is cancelled
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _as_coroutine(awaitable: Awaitable[T]) -> Coroutine[Any, Any, T]:
    """`run_coroutine_threadsafe` takes coroutines only; wrap futures and other awaitables."""
    if asyncio.iscoroutine(awaitable):
        return awaitable

    async def wait() -> T:
        return await awaitable

    return wait()


def _close_unawaited(awaitable: Awaitable[Any]) -> None:
    """Avoid 'coroutine was never awaited' warnings for coroutines we refuse to run."""
    if asyncio.iscoroutine(awaitable):
        awaitable.close()
