"""What the attacks of tests/e2e/test_limits.py cost a platform with its default limits.

One fresh `racetrack serve` (local runtime, default flags) with an honest job; for each attack
the server's resident memory before it and its peak during it (VmHWM, reset before each), how
long it took to be refused, and how the honest user's calls fared meanwhile. Then 500
concurrent calls to a job, answered or refused with a reason.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import JobRepo, Server, python_job

MiB = 1024 * 1024
ALIAS_BOMB = (
    "name: bomb\nowner_email: a@b.c\njobtype: python3\njobtype_extra:\n  entrypoint_path: e.py\n"
    "labels:\n  a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"  {chr(98 + n)}: &{chr(98 + n)} [{','.join([f'*{chr(97 + n)}'] * 9)}]\n" for n in range(8)
    )
)


class Honest:
    """An honest user's calls, 20 ms apart, while an attack runs: how many failed, latencies."""

    def __init__(self, server: Server, token: str) -> None:
        self._server, self._token = server, token
        self.latencies: list[float] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                answer = self._server.call(
                    "honest", "latest", payload={"numbers": [1, 2]}, token=self._token
                )
            except Exception:
                answer = None
            self.latencies.append(time.perf_counter() - started)
            self.failed += answer != (200, 3)
            self._stop.wait(0.02)

    def __enter__(self) -> Honest:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        if not self.latencies:
            return "no calls"
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"{len(ordered)} honest calls, {self.failed} failed,"
            f" p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
        )


def measure(server: Server, token: str, name: str, attack: Callable[[], str]) -> None:
    before, _ = server.rss()
    server.reset_peak_rss()
    started = time.perf_counter()
    with Honest(server, token) as honest:
        outcome = attack()
    took = time.perf_counter() - started
    _, peak = server.rss()
    print(
        f"{name:<34} RSS {before / MiB:6.1f} MiB, peak {peak / MiB:6.1f} MiB"
        f" (+{(peak - before) / MiB:5.1f}), {took:5.2f} s; {honest.summary()}\n"
        f"{'':<34} -> {outcome}",
        flush=True,
    )


def refused_push(server: Server, repo: JobRepo) -> str:
    pushed = server.push(repo)
    reason = next(
        (line for line in (pushed.stdout + pushed.stderr).splitlines() if "remote rejected" in line
         or "unpack" in line or "not allowed" in line),
        pushed.stderr.strip().splitlines()[-1] if pushed.stderr.strip() else "",
    )  # fmt: skip
    return f"exit {pushed.returncode}: {reason.strip()[:150]}"


def zip_repo(path: Path, job: str, files: dict[str, int]) -> JobRepo:
    path.mkdir(parents=True)
    repo = JobRepo(path, job)
    repo.git("init", "-q", "-b", "main")
    for name, size in files.items():
        (path / name).write_bytes(bytes(size) + name.encode())
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "zeros")
    return repo


async def concurrent_calls(server: Server, token: str, count: int) -> str:
    url = f"{server.router_url}/pub/job/honest/latest/api/v1/perform"
    statuses: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=300)
    ) as session:

        async def one(n: int) -> float:
            started = time.perf_counter()
            try:
                async with session.post(
                    url, json={"numbers": [n]}, headers={"X-Racetrack-Auth": token}
                ) as answer:
                    await answer.read()
                    key = str(answer.status)
            except aiohttp.ClientError as exc:
                key = f"dropped ({type(exc).__name__})"
            statuses[key] = statuses.get(key, 0) + 1
            return time.perf_counter() - started

        started = time.perf_counter()
        times = sorted(await asyncio.gather(*(one(n) for n in range(count))))
        took = time.perf_counter() - started
    counted = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
    return (
        f"{counted}; all in {took:.2f} s, p50 {statistics.median(times) * 1000:.0f} ms,"
        f" max {times[-1] * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bomb-mib", type=int, default=1024, help="size of the zero blob")
    parser.add_argument("--calls", type=int, default=500, help="concurrent calls")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="racetrack-bench-") as tmp:
        work = Path(tmp)
        server = Server(work / "platform").start()
        try:
            honest = JobRepo.create(work / "honest", "honest", python_job("honest"))
            assert server.push(honest).returncode == 0
            token = server.token()
            print(f"racetrack serve with its default limits (pid {server.process.pid})")

            measure(
                server, token, f"alias bomb ({len(ALIAS_BOMB)} bytes)",
                lambda: refused_push(
                    server, JobRepo.create(work / "bomb", "bomb", {"job.yaml": ALIAS_BOMB})
                ),
            )  # fmt: skip
            blob = zip_repo(work / "zip", "zip", {"zeros.bin": args.bomb_mib * MiB})
            size = (
                subprocess.run(
                    ["git", "count-objects", "-vH"], cwd=blob.path, capture_output=True, text=True
                )
                .stdout.split("size-pack: ")[1]
                .split("\n")[0]
            )
            measure(
                server, token, f"{args.bomb_mib} MiB zero blob ({size} packed)",
                lambda: refused_push(server, blob),
            )  # fmt: skip
            many = zip_repo(work / "many", "many", {f"zeros{n}.bin": 90 * MiB for n in range(12)})
            measure(
                server, token, "12 x 90 MiB zero blobs",
                lambda: refused_push(server, many),
            )  # fmt: skip
            measure(
                server, token, f"{args.calls} concurrent calls",
                lambda: asyncio.run(concurrent_calls(server, token, args.calls)),
            )  # fmt: skip
        finally:
            server.stop()


if __name__ == "__main__":
    main()
