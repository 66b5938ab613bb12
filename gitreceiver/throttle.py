"""Slowing down addresses that keep failing to authenticate.

A failure is a refused key, or a connection that ends without authenticating and without
offering any key (someone hammering the port). Once an address has `free` failures within
`window` seconds, each further refusal is answered only after a pause: 1 s, then twice as long
per further failure, at most `cap`. One connection may offer at most `per_connection`
refused keys before it is disconnected, and one address may hold at most `unauthenticated`
connections that have not authenticated yet, so neither many keys on one connection nor many
connections in parallel get around the pauses. A key that works is never delayed, and a
successful login clears its address's record. IPv6 addresses count per /64, the block one
machine usually holds. The server as a whole holds at most `unauthenticated_total` connections
that have not authenticated yet (each is cut after the login timeout), so that many addresses
together cannot exhaust it either.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque

MAX_ADDRESSES = 10_000  # records kept; the least recently failing addresses are forgotten first


def address_key(address: str) -> str:
    """The unit that failures count against: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class AuthThrottle:
    def __init__(
        self,
        free: int = 5,
        window: float = 300.0,
        cap: float = 30.0,
        per_connection: int = 6,
        unauthenticated: int = 20,
        unauthenticated_total: int = 200,
    ) -> None:
        self.per_connection = per_connection
        self._free = free
        self._window = window
        self._cap = cap
        self._unauthenticated_limit = unauthenticated
        self._unauthenticated_total = unauthenticated_total
        self._pending_total = 0
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._pending: dict[str, int] = {}

    def _recent(self, key: str) -> deque[float]:
        failures = self._failures.get(key, deque())
        horizon = time.monotonic() - self._window
        while failures and failures[0] < horizon:
            failures.popleft()
        return failures

    def failed(self, address: str) -> None:
        key = address_key(address)
        failures = self._recent(key)
        failures.append(time.monotonic())
        self._failures[key] = failures
        self._failures.move_to_end(key)
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address_key(address), None)

    def delay(self, address: str) -> float:
        """Seconds the next refusal of `address` waits before it is answered."""
        extra = len(self._recent(address_key(address))) - self._free
        return 0.0 if extra < 0 else min(2.0**extra, self._cap)

    def opened(self, address: str) -> str | None:
        """A connection from `address` begins. Returns why it must be refused (the caller
        disconnects it, and must still call `settled`): its address holds too many connections
        that have not authenticated yet, or the server does in all; None if it may go on."""
        key = address_key(address)
        self._pending[key] = self._pending.get(key, 0) + 1
        self._pending_total += 1
        if self._pending[key] > self._unauthenticated_limit:
            return "too many unauthenticated connections from your address"
        if self._pending_total > self._unauthenticated_total:
            return "too many unauthenticated connections to this server; try again shortly"
        return None

    @property
    def crowded(self) -> bool:
        """More connections are waiting to authenticate than the server holds: the newest is
        dropped at once, before it holds a descriptor for the whole login timeout."""
        return self._pending_total > self._unauthenticated_total

    def settled(self, address: str) -> None:
        """A connection counted by `opened` authenticated or ended."""
        key = address_key(address)
        self._pending_total = max(0, self._pending_total - 1)
        left = self._pending.get(key, 1) - 1
        if left > 0:
            self._pending[key] = left
        else:
            self._pending.pop(key, None)
