"""Blocking read/write over an asyncssh channel, for dulwich's synchronous handlers.

dulwich's protocol handlers run in a worker thread; every read and write hops onto the event
loop, which owns the channel, and waits for it there. Writes wait for `drain()`, so a slow
client slows the sender instead of growing a buffer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh


class ChannelClosed(Exception):
    """The SSH client went away."""


class ChannelIdle(ChannelClosed):
    """The client neither sent nor took anything for the idle timeout: the session ends."""


class BlockingChannel:
    """`idle_timeout`: how long a read may wait for the client's next bytes, and a write for
    the client to take ours, before the session is given up (a stalled client must not hold
    a worker thread for ever)."""

    def __init__(
        self, process: Any, loop: asyncio.AbstractEventLoop, idle_timeout: float | None = None
    ) -> None:
        self._process = process
        self._loop = loop
        self._idle_timeout = idle_timeout

    def _idle(self) -> ChannelIdle:
        return ChannelIdle(f"no data moved for {self._idle_timeout:g}s")

    def recv(self, size: int) -> bytes:
        """At least one byte, at most `size`; b'' at end of input."""
        reading = asyncio.wait_for(self._process.stdin.read(size), self._idle_timeout)
        future = asyncio.run_coroutine_threadsafe(reading, self._loop)
        try:
            return future.result()
        except TimeoutError:
            raise self._idle() from None
        except (OSError, asyncssh.Error) as exc:
            raise ChannelClosed(str(exc)) from exc

    def write(self, data: bytes) -> None:
        writing = asyncio.wait_for(self._write(data), self._idle_timeout)
        future = asyncio.run_coroutine_threadsafe(writing, self._loop)
        try:
            future.result()
        except TimeoutError:
            raise self._idle() from None
        except (OSError, asyncssh.Error) as exc:
            raise ChannelClosed(str(exc)) from exc

    async def _write(self, data: bytes) -> None:
        if self._process.stdout.is_closing():
            raise BrokenPipeError("the SSH channel is closed")
        self._process.stdout.write(data)
        await self._process.stdout.drain()
