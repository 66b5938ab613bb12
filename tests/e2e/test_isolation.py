"""Jobs cannot touch the platform or each other: what a hostile job would try, on each runtime,
through the real OpenSSH client, git and HTTP, with an admin and two ordinary users.

On the local runtime jobs run in a bubblewrap sandbox as their family's own uid (the suite
runs as root, as CI does); on the docker runtime in containers. The same probe runs on both.
"""

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import (
    RUNTIME_FLAGS,
    JobRepo,
    Server,
    docker_engine_problem,
    honest_calls,
    job_processes,
    make_key,
    python_job,
    remove_docker_leftovers,
    wait_for,
)

PROBE = """
import glob, os, pathlib, urllib.error, urllib.request


def call_directly(url):
    request = urllib.request.Request(url + "/api/v1/perform", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return type(exc).__name__


class JobEntrypoint:
    def perform(self, paths: list, needles: list, neighbours: list) -> dict:
        files = {}
        for path in paths:
            try:
                files[path] = "read %d bytes" % len(pathlib.Path(path).read_bytes())
            except OSError as exc:
                files[path] = type(exc).__name__
        hits = []
        for environ in glob.glob("/proc/*/environ"):
            try:
                data = open(environ, "rb").read()
            except OSError:
                continue
            hits += [environ for needle in needles if needle.encode() in data]
        lines = open("/proc/self/status").read().splitlines()
        status = dict(line.split(":\\t", 1) for line in lines)
        try:
            os.setuid(0)
            setuid = "became root"
        except OSError as exc:
            setuid = type(exc).__name__
        try:
            pathlib.Path("planted.py").write_text("print('changed')")
            wrote_release = True
        except OSError:
            wrote_release = False
        return {
            "files": files,
            "environ_hits": hits,
            "uid": os.getuid(),
            "cap_eff": status["CapEff"].strip(),
            "no_new_privs": status["NoNewPrivs"].strip(),
            "setuid": setuid,
            "wrote_release": wrote_release,
            "docker_socket": any(map(os.path.exists, ("/var/run/docker.sock", "/run/docker.sock"))),
            "pids": len([p for p in os.listdir("/proc") if p.isdigit()]),
            "neighbours": [call_directly(url) for url in neighbours],
        }
"""


@dataclass
class Platform:
    server: Server
    runtime: str
    alice: Path  # ordinary users' keys
    bob: Path


def _runtimes() -> list[str]:
    problem = docker_engine_problem()
    if problem is not None and os.environ.get("CI") == "true":
        raise RuntimeError(f"the docker runtime's isolation must be tested in CI: {problem}")
    return ["local"] if problem is not None else ["local", "docker"]


@pytest.fixture(scope="module", params=_runtimes())
def platform(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Platform]:
    runtime = request.param
    server = Server(
        tmp_path_factory.mktemp(f"isolation-{runtime}"), extra_args=RUNTIME_FLAGS[runtime]
    ).start()
    try:
        yield Platform(server, runtime, server.add_user("alice"), server.add_user("bob"))
    finally:
        server.stop()
        if runtime == "docker":
            remove_docker_leftovers(server.data_dir)


def push(platform: Platform, key: Path, workdir: Path, job: str, files: dict[str, str]) -> str:
    repo = JobRepo.create(workdir / job, job, files)
    pushed = platform.server.push(repo, key=key)
    assert pushed.returncode == 0, pushed.stderr
    return pushed.stderr


def test_a_job_reads_nothing_of_the_platform_or_of_another_job(platform, tmp_path):
    server = platform.server
    secret = f"bobs-secret-{secrets.token_hex(8)}"
    push(
        platform, platform.bob, tmp_path, f"victim-{platform.runtime}",
        python_job(f"victim-{platform.runtime}", "import os; return os.environ['AUTH_TOKEN']",
                   signature=""),
    )  # fmt: skip
    victim = f"victim-{platform.runtime}"
    assert (
        server.ssh("config:set", victim, f"API_SECRET={secret}", key=platform.bob).returncode == 0
    )
    bob_token, alice_token = server.token(platform.bob), server.token(platform.alice)
    status, victim_token = server.call(victim, "latest", payload={}, token=bob_token)
    assert status == 200 and victim_token.startswith("rt_")

    prober = f"prober-{platform.runtime}"
    output = push(
        platform,
        platform.alice,
        tmp_path,
        prober,
        {**python_job(prober), "entry.py": PROBE},
    )
    data = server.data_dir
    victim_files = [str(p) for p in (data / "artifacts" / victim).glob("*/src/entry.py")]
    assert platform.runtime == "docker" or victim_files, "the local victim has a release"
    paths = [
        str(data / "token.key"),
        str(data / "secrets.key"),
        str(data / "racetrack.db"),
        str(data / "ssh_host_ed25519_key"),
        *victim_files,
        "/etc/shadow",
    ]
    info = json.loads(server.ssh("jobs:info", victim, "--json", key=platform.bob).stdout)
    neighbours = [i["url"] for v in info["versions"] for i in v["instances"]]
    assert neighbours, info
    probe = {"paths": paths, "needles": [secret, victim_token], "neighbours": neighbours}
    with honest_calls(server, victim, bob_token, payload={}, expected=(200, victim_token)):
        status, seen = server.call(prober, "latest", payload=probe, token=alice_token)
    assert status == 200, seen
    assert all(not result.startswith("read") for result in seen["files"].values()), seen["files"]
    assert seen["environ_hits"] == [], "no other process's environment is readable"
    assert seen["cap_eff"] == "0000000000000000" and seen["setuid"] == "PermissionError"
    assert seen["no_new_privs"] == "1"
    assert seen["wrote_release"] is False, "the release is read-only"
    assert seen["docker_socket"] is False
    # the victim's instance is on the same network, but answers only calls the router sends
    assert seen["neighbours"] == [403] * len(neighbours)
    if platform.runtime == "local":
        assert "isolated by bubblewrap as uid" in output
        assert seen["uid"] >= 2_000_000, "the family's own uid, not root's or the platform's"
        assert seen["pids"] <= 3, "its own pid namespace: bwrap's init and the job"
    else:
        assert "isolated in a container" in output and seen["uid"] == 10001
    # the token key never left the data dir, so no token can be forged: the admin's API stays
    # closed to alice, whose own token does not reveal bob's config
    refused = server.ssh("config:show", victim, "--reveal", key=platform.alice)
    assert refused.returncode == 1 and secret not in refused.stdout + refused.stderr


def test_two_jobs_of_one_user_are_still_two_families(platform, tmp_path):
    """Each job runs in namespaces of its own, and (local, as root) as its family's own uid: a
    second job of the same user shares neither."""
    server = platform.server
    jobs = [f"twin-one-{platform.runtime}", f"twin-two-{platform.runtime}"]
    for job in jobs:
        body = "import os; return [os.getuid(), os.readlink('/proc/self/ns/pid')]"
        push(platform, platform.alice, tmp_path, job, python_job(job, body, signature=""))
    token = server.token(platform.alice)
    (uid1, ns1), (uid2, ns2) = (
        server.call(job, "latest", payload={}, token=token)[1] for job in jobs
    )
    assert ns1 != ns2, "each instance has its own pid namespace"
    if platform.runtime == "local" and os.geteuid() == 0:
        assert uid1 != uid2 and min(uid1, uid2) >= 2_000_000


@pytest.fixture(scope="module")
def local_server(tmp_path_factory) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("isolation-limits"),
        extra_args=("--log-max-size", "64Ki", "--log-keep", "2"),
    ).start()
    yield server
    server.stop()


MEMORY_HOG = (
    "class JobEntrypoint:\n"
    "    def perform(self, mib: int):\n"
    "        block = bytearray(mib * 1024 * 1024)\n"
    "        for i in range(0, len(block), 4096):\n"
    "            block[i] = 1\n"
    "        return len(block) // (1024 * 1024)\n"
)


def test_resources_are_applied_and_a_job_over_its_memory_is_killed(local_server, tmp_path):
    files = python_job("hog")
    files["entry.py"] = MEMORY_HOG
    files["job.yaml"] += "resources:\n  memory_max: 96Mi\n  cpu_max: 500m\n"
    repo = JobRepo.create(tmp_path / "hog", "hog", files)
    pushed = local_server.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    limits = "limits: memory_max 100663296 bytes, cpu_max 0.5 cores, at most 1024 processes"
    assert limits in pushed.stderr
    root = os.geteuid() == 0
    assert ("(cgroup v" in pushed.stderr) if root else ("(setrlimit" in pushed.stderr)
    token = local_server.token()
    assert local_server.call("hog", "latest", payload={"mib": 8}, token=token) == (200, 8)
    if root:
        (pid,) = job_processes(local_server.data_dir, "hog")
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        groups = dict(line.split(":", 2)[1:] for line in lines)
        if "memory" in groups:  # cgroup v1
            memory = Path("/sys/fs/cgroup/memory") / groups["memory"].lstrip("/")
            assert (memory / "memory.limit_in_bytes").read_text().strip() == "100663296"
            cpu = Path("/sys/fs/cgroup/cpu") / groups["cpu"].lstrip("/")
            assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        else:
            group = Path("/sys/fs/cgroup") / groups[""].lstrip("/")
            assert (group / "memory.max").read_text().strip() == "100663296"
            assert (group / "cpu.max").read_text().split()[0] == "50000"

    status, answer = local_server.call("hog", "latest", payload={"mib": 400}, token=token)
    assert status in (502, 503), answer
    wait_for(
        lambda: (
            "hog-1-0-0-r1-0 was killed: out of memory (resources.memory_max 96Mi)"
            in local_server.log_path.read_text()
        ),
        "the platform to name the OOM kill",
    )
    wait_for(
        lambda: local_server.call("hog", "latest", payload={"mib": 8}, token=token) == (200, 8),
        "the killed instance to come back",
    )


def test_logs_rotate_by_size_and_tail_reads_the_end(local_server, tmp_path):
    chatty = python_job(
        "chatty",
        "import sys\n        for n in range(count): print('line', n, 'x' * 80, flush=True)\n"
        "        return count",
        signature="count: int",
    )
    repo = JobRepo.create(tmp_path / "chatty", "chatty", chatty)
    assert local_server.push(repo).returncode == 0
    token = local_server.token()
    for _ in range(5):
        assert local_server.call("chatty", "latest", payload={"count": 3000}, token=token)[0] == 200
    logs = sorted((local_server.data_dir / "logs" / "chatty").iterdir())
    assert [p.name for p in logs] == ["rt-chatty-1-0-0-r1-0.log", "rt-chatty-1-0-0-r1-0.log.1"]
    assert all(p.stat().st_size <= 64 * 1024 for p in logs)
    tail = local_server.ssh("logs", "chatty", "--tail", "3")
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("[rt-chatty-1-0-0-r1-0] ")


def test_without_a_sandbox_the_local_runtime_refuses_unless_single_user(tmp_path):
    tools = tmp_path / "bin"  # a PATH without bubblewrap
    tools.mkdir()
    for tool in ("git", "ssh-keygen"):
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(tools)}
    refused = Server(tmp_path / "refused", env=env)
    with pytest.raises(RuntimeError) as failed:
        refused.start()
    assert (
        "the local runtime cannot isolate jobs from the platform and from each other here:"
        " bubblewrap (bwrap) is not installed" in str(failed.value)
    )
    assert "start with --insecure-single-user" in str(failed.value)

    single = Server(tmp_path / "single", env=env, extra_args=("--insecure-single-user",)).start()
    try:
        added = single.ssh("users:add", "mallory")
        assert added.returncode == 1
        assert "runs jobs without isolation (--insecure-single-user)" in added.stderr
    finally:
        single.stop()
    second = make_key(tmp_path / "second_admin", "second@example")
    single.extra_args = ("--insecure-single-user", "--admin-key", f"{second}.pub")
    with pytest.raises(RuntimeError, match="this platform has 2 users"):
        single.start()
