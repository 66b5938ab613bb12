"""Push-to-live time of the sample job on each runtime: first push, then a code-only change.

Each sample starts a fresh `racetrack serve` in a new data dir, pushes examples/adder with the
real git over the real ssh, and stops the clock when an HTTP call through the router returns
the new answer. On the docker runtime the engine's layer cache is whatever earlier builds left
(the first docker sample of a run is the coldest); containers and images of each sample are
removed afterwards. On the kubernetes runtime (after scripts/setup-kubernetes) the image is also
pushed to the cluster's registry and pulled by its kubelet; each sample has a namespace of its
own.
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

from tests.harness import EXAMPLES, RUNTIMES, JobRepo, Server, runtime_platform

ANSWER_DEADLINE = 120.0


def push_to_live(server: Server, repo: JobRepo, token: str, want: object) -> float:
    started = time.perf_counter()
    pushed = server.push(repo)
    if pushed.returncode != 0:
        raise SystemExit(f"push failed:\n{pushed.stderr}")
    deadline = started + ANSWER_DEADLINE
    while True:
        status, body = server.call("adder", "latest", payload={"numbers": [40, 2]}, token=token)
        if (status, body) == (200, want):
            return time.perf_counter() - started
        if time.perf_counter() > deadline:
            raise SystemExit(f"no answer {want!r} within {ANSWER_DEADLINE}s: {status} {body}")


def sample(runtime: str, workdir: Path) -> tuple[float, float]:
    with runtime_platform(runtime, workdir) as server:
        source = workdir / "adder"
        shutil.copytree(EXAMPLES / "adder", source)
        repo = JobRepo(source, "adder")
        repo.git("init", "-q", "-b", "main")
        repo.commit({}, "adder")
        token = server.token()
        first = push_to_live(server, repo, token, 42)
        code = (
            (source / "adder.py")
            .read_text()
            .replace("return sum(numbers)", "return sum(numbers) * 2")
        )
        repo.commit({"adder.py": code}, "double it")
        change = push_to_live(server, repo, token, 84)
        return first, change


def cell(values: list[float]) -> str:
    return (
        f"{statistics.median(values):6.2f} s  ({min(values):.2f}-{max(values):.2f})"
        if values
        else "-"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="fresh platforms per runtime")
    parser.add_argument("--runtime", action="append", choices=RUNTIMES, help="default: all three")
    args = parser.parse_args()
    runtimes = args.runtime or list(RUNTIMES)
    results: dict[str, tuple[list[float], list[float]]] = {r: ([], []) for r in runtimes}
    for run in range(args.runs):
        for runtime in runtimes:  # interleaved, so that all see the same machine load
            with tempfile.TemporaryDirectory(prefix="racetrack-bench-") as tmp:
                first, change = sample(runtime, Path(tmp))
            results[runtime][0].append(first)
            results[runtime][1].append(change)
            print(
                f"run {run + 1} {runtime:<10}: first push {first:.2f}s,"
                f" code-only change {change:.2f}s",
                flush=True,
            )
    print()
    print("push-to-live of examples/adder (git push start -> first correct HTTP answer)")
    print(f"median (min-max) of {args.runs} fresh platforms per runtime")
    print(f"{'runtime':<10}  {'first push':<22}  {'code-only change':<22}")
    for runtime, (firsts, changes) in results.items():
        print(f"{runtime:<10}  {cell(firsts):<22}  {cell(changes):<22}")


if __name__ == "__main__":
    main()
