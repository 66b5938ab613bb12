"""Push-to-live time of the sample job: first push, then a code-only change.

Each sample starts a fresh `racetrack serve` in a new data dir (so the first push pays for
everything a first push pays for), pushes examples/adder with the real git over the real ssh,
and stops the clock when an HTTP call through the router returns the new answer.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import EXAMPLES, JobRepo, Server

ANSWER_DEADLINE = 60.0


def push_to_live(
    server: Server, repo: JobRepo, token: str, numbers: list[int], want: object
) -> float:
    started = time.perf_counter()
    pushed = server.push(repo)
    if pushed.returncode != 0:
        raise SystemExit(f"push failed:\n{pushed.stderr}")
    deadline = started + ANSWER_DEADLINE
    while True:
        status, body = server.call("adder", "latest", payload={"numbers": numbers}, token=token)
        if (status, body) == (200, want):
            return time.perf_counter() - started
        if time.perf_counter() > deadline:
            raise SystemExit(f"no answer {want!r} within {ANSWER_DEADLINE}s: {status} {body}")


def sample(workdir: Path) -> tuple[float, float]:
    server = Server(workdir / "platform").start()
    try:
        source = workdir / "adder"
        shutil.copytree(EXAMPLES / "adder", source)
        repo = JobRepo(source, "adder")
        repo.git("init", "-q", "-b", "main")
        repo.commit({}, "adder")
        token = server.token()
        first = push_to_live(server, repo, token, [40, 2], 42)
        code = (
            (source / "adder.py")
            .read_text()
            .replace("return sum(numbers)", "return sum(numbers) * 2")
        )
        repo.commit({"adder.py": code}, "double it")
        change = push_to_live(server, repo, token, [40, 2], 84)
        return first, change
    finally:
        server.stop()


def describe(name: str, values: list[float]) -> str:
    return (
        f"{name:<20} median {statistics.median(values):6.2f}s   "
        f"min {min(values):6.2f}s   max {max(values):6.2f}s   (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="fresh platforms to measure")
    args = parser.parse_args()
    firsts, changes = [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="racetrack-bench-") as tmp:
            first, change = sample(Path(tmp))
        firsts.append(first)
        changes.append(change)
        print(f"run {run + 1}: first push {first:.2f}s, code-only change {change:.2f}s", flush=True)
    print()
    print("push-to-live of examples/adder (git push start → first correct HTTP answer)")
    print(describe("first push", firsts))
    print(describe("code-only change", changes))


if __name__ == "__main__":
    main()
