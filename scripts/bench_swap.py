"""Calls during redeploys versus steady state, on each runtime.

For each runtime: a fresh `racetrack serve`, a python3 job, four keep-alive clients calling it
without pause, and N redeploys (each a code change) with a quiet stretch after each. A call
counts as "during a redeploy" when it started between a push's start and one second after the
push returned (the swap and the drain of the old release happen in that window); every other
call is "steady". Prints calls served, failed, and p50/p99 latency for both.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import RUNTIMES, JobRepo, python_job, runtime_platform
from tests.load import Call, Load, percentile

SETTLE = 1.0  # seconds after a push that still count as part of its swap
QUIET = 2.0  # seconds of steady load between redeploys


def job_files(n: int) -> dict[str, str]:
    return python_job("swapper", f"return {n}", signature="")


def run(
    runtime: str, redeploys: int, workdir: Path
) -> tuple[list[Call], list[tuple[float, float]]]:
    windows: list[tuple[float, float]] = []
    with runtime_platform(runtime, workdir) as server:
        repo = JobRepo.create(workdir / "job", "swapper", job_files(0))
        if server.push(repo).returncode != 0:
            raise SystemExit("the first deploy failed")
        url = f"{server.router_url}/pub/job/swapper/latest/api/v1/perform"
        with Load(url, server.token(), clients=4) as load:
            steady_until = time.monotonic() + QUIET
            load.wait_for_calls(20)
            while time.monotonic() < steady_until:
                load.wait_for_calls(1)
            for n in range(1, redeploys + 1):
                repo.commit(job_files(n), f"answer {n}")
                started = time.monotonic()
                pushed = server.push(repo)
                if pushed.returncode != 0:
                    raise SystemExit(f"redeploy {n} failed:\n{pushed.stderr}")
                windows.append((started, time.monotonic() + SETTLE))
                steady_until = time.monotonic() + QUIET
                while time.monotonic() < steady_until:
                    load.wait_for_calls(1)
        return load.calls, windows


def row(name: str, calls: list[Call]) -> str:
    ok = [c.latency * 1000 for c in calls if c.ok]
    failed = len(calls) - len(ok)
    return (
        f"  {name:<18} {len(calls):>7} {failed:>7}"
        f" {percentile(ok, 50):>8.1f} {percentile(ok, 99):>8.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redeploys", type=int, default=10)
    parser.add_argument("--runtime", action="append", choices=RUNTIMES, help="default: all three")
    args = parser.parse_args()
    for runtime in args.runtime or list(RUNTIMES):
        with tempfile.TemporaryDirectory(prefix="racetrack-bench-swap-") as tmp:
            calls, windows = run(runtime, args.redeploys, Path(tmp))
        during = [c for c in calls if any(a <= c.started <= b for a, b in windows)]
        steady = [c for c in calls if not any(a <= c.started <= b for a, b in windows)]
        print(f"{runtime}: {args.redeploys} redeploys under load from 4 keep-alive clients")
        print(f"  {'':<18} {'calls':>7} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8}")
        print(row("during redeploys", during))
        print(row("steady state", steady))
        print(row("all", calls))
        failures = [c for c in calls if not c.ok]
        for call in failures[:5]:
            print(f"  failed: {call.status} {call.answer}")
        print(flush=True)


if __name__ == "__main__":
    main()
