"""Slowing down addresses that keep failing to authenticate.

Every SSH connection that ends without authenticating counts as a failure of its address.
From the `free`-th failure within `window` seconds on, each new connection from that address
waits before it may authenticate: 1 s, then twice as long per further failure, at most `cap`.
A real user whose key works pays nothing (a successful login clears the address's record);
someone trying keys (or hammering the port) gets slower and slower.
"""

from __future__ import annotations

import time
from collections import deque


class AuthThrottle:
    def __init__(self, free: int = 5, window: float = 300.0, cap: float = 30.0) -> None:
        self._free = free
        self._window = window
        self._cap = cap
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.setdefault(address, deque())
        horizon = time.monotonic() - self._window
        while failures and failures[0] < horizon:
            failures.popleft()
        return failures

    def failed(self, address: str) -> None:
        self._recent(address).append(time.monotonic())
        if len(self._failures) > 10_000:  # forget quiet addresses rather than grow for ever
            for quiet in [a for a, f in self._failures.items() if not f]:
                del self._failures[quiet]

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def delay(self, address: str) -> float:
        """Seconds the next connection from `address` waits before authenticating."""
        extra = len(self._recent(address)) - self._free
        return 0.0 if extra < 0 else min(2.0**extra, self._cap)
