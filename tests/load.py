"""Constant HTTP load on one job: several clients, each on its own keep-alive connection.

Used by the zero-downtime test and by scripts/bench-swap.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Call:
    client: int
    started: float  # time.monotonic()
    finished: float
    status: int | str  # HTTP status, or the exception's name when the call failed outright
    answer: Any

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def latency(self) -> float:
        return self.finished - self.started


@dataclass
class Load:
    url: str  # http://127.0.0.1:7105/pub/job/<name>/latest/api/v1/perform
    token: str | None
    payload: Any = field(default_factory=dict)
    clients: int = 4
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for client in range(self.clients):
            thread = threading.Thread(target=self._run, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _connect(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def _run(self, client: int) -> None:
        parts = urlsplit(self.url)
        body = json.dumps(self.payload).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["X-Racetrack-Auth"] = self.token
        connection = self._connect()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                connection.request("POST", parts.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                status: int | str = response.status
                try:
                    answer = json.loads(data)
                except ValueError:
                    answer = data.decode(errors="replace")
            except (OSError, http.client.HTTPException) as exc:
                status, answer = type(exc).__name__, str(exc)
                connection.close()
                connection = self._connect()
            with self._lock:
                self.calls.append(Call(client, started, time.monotonic(), status, answer))
        connection.close()

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def wait_for_calls(self, count: int, deadline: float = 30.0) -> None:
        """Until at least `count` more calls have finished (the load is really running)."""
        target = len(self.snapshot()) + count
        end = time.monotonic() + deadline
        while len(self.snapshot()) < target:
            if time.monotonic() > end:
                raise AssertionError(f"the load made fewer than {count} calls in {deadline}s")
            time.sleep(0.01)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
