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


class BlockingChannel:
    def __init__(self, process: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._process = process
        self._loop = loop

    def recv(self, size: int) -> bytes:
        """At least one byte, at most `size`; b'' at end of input."""
        future = asyncio.run_coroutine_threadsafe(self._process.stdin.read(size), self._loop)
        try:
            return future.result()
        except (OSError, asyncssh.Error) as exc:
            raise ChannelClosed(str(exc)) from exc

    def write(self, data: bytes) -> None:
        future = asyncio.run_coroutine_threadsafe(self._write(data), self._loop)
        try:
            future.result()
        except (OSError, asyncssh.Error) as exc:
            raise ChannelClosed(str(exc)) from exc

    async def _write(self, data: bytes) -> None:
        if self._process.stdout.is_closing():
            raise BrokenPipeError("the SSH channel is closed")
        self._process.stdout.write(data)
        await self._process.stdout.drain()
