"""Readiness, shared by the runtimes: ask the instance the way its artifact says, until a
deadline, and fail at once with the reason when it reports a failed start or stops running."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from yarl import URL

from buildpacks.build import Probe
from controller.runtimes.base import FailureReason, ReleaseFailed

PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2)


async def probe_once(session: aiohttp.ClientSession, name: str, url: str, probe: Probe) -> bool:
    """True when ready; ReleaseFailed (init error) when the wrapper reports its start failed."""
    try:
        if probe.kind == "tcp":
            target = URL(url)
            _reader, writer = await asyncio.open_connection(target.host, target.port)
            writer.close()
            return True
        if probe.kind == "wrapper":
            async with session.get(url + "/live") as live:
                if live.status == 500:
                    raise ReleaseFailed(
                        FailureReason.INIT_ERROR,
                        f"{name} failed to start: {await _error_text(live)}",
                    )
            async with session.get(url + "/ready") as ready:
                return ready.status == 200
        async with session.get(url + (probe.path or "/")) as response:
            return 200 <= response.status < 300
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False  # not listening yet


async def _error_text(response: aiohttp.ClientResponse) -> str:
    try:
        body = await response.json(content_type=None)
        return str(body.get("error") or body)
    except (ValueError, aiohttp.ClientError):
        return (await response.text())[:500]


async def wait_until_ready(
    name: str,
    timeout: float,
    *,
    ready: Callable[[], Awaitable[bool]],
    failure: Callable[[], Awaitable[ReleaseFailed | None]],
    log_tail: Callable[[], Awaitable[str]],
    wake: asyncio.Future[Any] | None = None,
) -> None:
    """Poll `ready` (with a growing interval) until it is true, `failure` gives a reason, or
    `timeout` passes; `wake` (e.g. the process exiting) cuts a wait short."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    interval = 0.02
    while True:
        reason = await failure()
        if reason is not None:
            raise reason
        if await ready():
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise ReleaseFailed(
                FailureReason.TIMEOUT,
                f"{name} was not ready within {timeout:.0f}s: {await log_tail()}",
            )
        pause = min(interval, remaining)
        if wake is not None:
            await asyncio.wait([wake], timeout=pause)
        else:
            await asyncio.sleep(pause)
        interval = min(interval * 1.5, 0.5)
