"""Hostile manifests, packs and clients cannot take the platform down: each attack through the
real OpenSSH client, git and HTTP, against a platform with small limits, while an honest user's
calls keep succeeding (asserted around every attack).
"""

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.harness import (
    JobRepo,
    Server,
    honest_calls,
    python_job,
    wait_for,
)

MiB = 1024 * 1024
LIMITS = (
    "--max-object-size", "8Mi",
    "--max-push-inflated", "32Mi",
    "--max-git-sessions-per-user", "3",
    "--git-idle-timeout", "3",
    "--header-timeout", "2",
    "--upstream-timeout", "3",
    "--name-claim-grace", "3",
)  # fmt: skip
# what a refused attack may cost the server's resident memory (it was gigabytes before)
RSS_BOUND = 48 * MiB


@dataclass
class Limited:
    server: Server
    alice: Path  # an ordinary user who attacks
    bob: Path  # an ordinary user whose job must keep serving
    bob_token: str


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Iterator[Limited]:
    server = Server(tmp_path_factory.mktemp("limits"), extra_args=LIMITS).start()
    try:
        alice, bob = server.add_user("alice"), server.add_user("bob")
        repo = JobRepo.create(tmp_path_factory.mktemp("honest") / "job", "honest",
                              python_job("honest"))  # fmt: skip
        pushed = server.push(repo, key=bob)
        assert pushed.returncode == 0, pushed.stderr
        yield Limited(server, alice, bob, server.token(bob))
    finally:
        server.stop()


def honest(limited: Limited):
    return honest_calls(limited.server, "honest", limited.bob_token)


def push_as_alice(limited: Limited, path: Path, job: str, files: dict[str, str]):
    return limited.server.push(JobRepo.create(path, job, files), key=limited.alice)


def peak_growth(server: Server, attack) -> int:
    """How far above its resident memory before the attack the server's peak went during it."""
    before, _ = server.rss()
    server.reset_peak_rss()
    attack()
    _, peak = server.rss()
    return peak - before


ALIAS_BOMB = (
    "name: bomb\nowner_email: a@b.c\njobtype: python3\njobtype_extra:\n  entrypoint_path: e.py\n"
    "labels:\n  a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"  {chr(98 + n)}: &{chr(98 + n)} [{','.join([f'*{chr(97 + n)}'] * 9)}]\n" for n in range(8)
    )
)


def test_an_alias_bomb_is_refused_before_it_expands(limited, tmp_path):
    assert len(ALIAS_BOMB) < 700  # 9 ** 9 labels once expanded: gigabytes
    result = {}

    def attack() -> None:
        result["push"] = push_as_alice(limited, tmp_path / "bomb", "bomb", {"job.yaml": ALIAS_BOMB})

    with honest(limited):
        growth = peak_growth(limited.server, attack)
    assert result["push"].returncode != 0
    assert "anchors (&a) are not allowed in a manifest" in result["push"].stderr
    assert growth < RSS_BOUND, f"the server grew by {growth / MiB:.0f} MiB"


def git_commit_of(path: Path, files: dict[str, bytes]) -> JobRepo:
    path.mkdir(parents=True)
    repo = JobRepo(path, "zip")
    repo.git("init", "-q", "-b", "main")
    for name, data in files.items():
        (path / name).write_bytes(data)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "bomb")
    return repo


@pytest.mark.parametrize(
    ("files", "refusal"),
    [
        (
            {"zeros.bin": bytes(64 * MiB)},
            "an object of 67108864 bytes (inflated) is larger than the limit of 8388608 bytes"
            " per object",
        ),
        (
            {f"zeros{n}.bin": bytes(7 * MiB) + b"%d" % n for n in range(6)},
            "the push inflates to more than 33554432 bytes, the limit (--max-push-inflated)",
        ),
    ],
    ids=["one-huge-blob", "many-blobs"],
)
def test_a_compression_bomb_is_refused_while_it_arrives(limited, tmp_path, files, refusal):
    repo = git_commit_of(tmp_path / "zip", files)
    repo.job = f"zip-{len(files)}"
    pack_bytes = int(repo.git("count-objects", "-v").split("size-pack: ")[1].split()[0]) * 1024
    assert pack_bytes < 2 * MiB, "small on the wire, large once inflated"
    result = {}

    def attack() -> None:
        result["push"] = limited.server.push(repo, key=limited.alice)

    with honest(limited):
        growth = peak_growth(limited.server, attack)
    assert result["push"].returncode != 0
    assert refusal in result["push"].stdout + result["push"].stderr
    assert growth < RSS_BOUND, f"the server grew by {growth / MiB:.0f} MiB"
    assert limited.server.remote_refs(repo.job) == {}, "nothing of it was kept"


def receive_pack(server: Server, key: Path, job: str) -> subprocess.Popen:
    """A git session that says nothing after the server's ref advertisement (stalled)."""
    return subprocess.Popen(
        [*server.ssh_command(key), "-p", str(server.ssh_port), "git@127.0.0.1",
         f"git-receive-pack '{job}'"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_stalled_git_sessions_are_capped_per_user_and_closed_when_idle(limited, tmp_path):
    server = limited.server
    with honest(limited):
        stalled = [receive_pack(server, limited.alice, f"stall-{n}") for n in range(3)]
        for session in stalled:  # each has reached the server: its refs were advertised
            assert session.stdout is not None and session.stdout.read(4)
        fourth = receive_pack(server, limited.alice, "stall-3")
        _, refused = fourth.communicate(timeout=60)
        assert (
            b"you have 3 git sessions open already, the limit per user; let one finish" in refused
        )
        # another user is not held up meanwhile
        repo = JobRepo.create(tmp_path / "other", "other-user", python_job("other-user"))
        assert server.push(repo, key=limited.bob).returncode == 0
        for session in stalled:  # the idle timeout ends them (3 s here); stdin stays open
            session.wait(timeout=60)
            assert session.stderr is not None
            assert b"no data moved for 3s: the session is closed" in session.stderr.read()
            assert session.stdin is not None
            session.stdin.close()
    assert not (server.data_dir / "repos" / "stall-0.git").exists(), "a stalled push claims nothing"


def test_half_sent_request_heads_are_cut_and_the_router_keeps_serving(limited):
    router = limited.server.router_url.removeprefix("http://")
    host, port = router.split(":")
    with honest(limited):
        sockets = []
        for _ in range(300):
            half = socket.create_connection((host, int(port)), timeout=30)
            half.sendall(b"GET /pub/job/honest/latest/ HTTP/1.1\r\nHost: x\r\nX-Half: ")
            sockets.append(half)
        deadline = time.monotonic() + 30
        for half in sockets:  # each is answered 408 and closed (header timeout: 2 s here)
            half.settimeout(max(0.1, deadline - time.monotonic()))
            received = b""
            while chunk := half.recv(4096):
                received += chunk
            assert received.startswith(b"HTTP/1.1 408"), received[:80]
            half.close()


def test_a_job_that_never_answers_gets_a_504_naming_it(limited, tmp_path):
    files = python_job("sleeper", "import time; time.sleep(20); return 0", signature="")
    assert push_as_alice(limited, tmp_path / "sleeper", "sleeper", files).returncode == 0
    with honest(limited):
        status, answer = limited.server.call(
            "sleeper", "latest", payload={}, token=limited.server.token(limited.alice)
        )
    assert status == 504
    assert answer["error"] == "job sleeper 1.0.0 did not answer within 3s"
    assert (answer["job"], answer["version"]) == ("sleeper", "1.0.0") and answer["request_id"]


def test_500_concurrent_calls_are_all_answered(limited):
    url = f"{limited.server.router_url}/pub/job/honest/latest/api/v1/perform"

    async def calls() -> list[tuple[int, object]]:
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(n: int) -> tuple[int, object]:
                headers = {"X-Racetrack-Auth": limited.bob_token}
                async with session.post(url, json={"numbers": [n, 1]}, headers=headers) as answer:
                    return answer.status, await answer.json(content_type=None)

            return await asyncio.gather(*(one(n) for n in range(500)))

    answers = asyncio.run(calls())  # a dropped or reset connection raises here
    assert len(answers) == 500
    for n, (status, body) in enumerate(answers):
        if status == 200:
            assert body == n + 1
        else:  # refused with a reason, never dropped
            assert status in (429, 503) and body["error"], (status, body)
    assert sum(status == 200 for status, _ in answers) > 0


def test_a_symlink_out_of_the_job_directory_never_reaches_the_artifact(limited, tmp_path):
    job_dir = "jobs/a/b/c"  # from the checkout the link stays inside the repository
    files = {
        f"{job_dir}/job.yaml": python_job("linked")["job.yaml"],
        f"{job_dir}/entry.py": (
            "import pathlib\n\nclass JobEntrypoint:\n    def perform(self):\n"
            "        link = pathlib.Path('secret')\n"
            "        return link.is_symlink() or link.exists()\n"
        ),
    }
    repo = JobRepo.create(tmp_path / "linked", "linked", files)
    os.symlink("../../../../token.key", repo.path / job_dir / "secret")  # the data dir's key
    repo.commit({}, "a link that leaves the job's directory")
    pushed = limited.server.push(repo, key=limited.alice)
    assert pushed.returncode == 0, pushed.stderr
    assert (
        "Warning: left out symlink 'secret' -> '../../../../token.key': it leads out of the"
        " job's directory"
    ) in pushed.stderr
    artifacts = limited.server.data_dir / "artifacts" / "linked"
    assert not any(os.path.lexists(p / "src" / "secret") for p in artifacts.iterdir())
    token = limited.server.token(limited.alice)
    assert limited.server.call("linked", "latest", payload={}, token=token) == (200, False)


def test_a_job_name_is_claimed_by_a_deploy_not_by_opening_a_push(limited, tmp_path):
    server = limited.server
    # alice opens a push of a new name and goes away without sending anything
    session = receive_pack(server, limited.alice, "squat")
    assert session.stdout is not None and session.stdout.read(4)
    session.kill()
    session.wait()
    repo = JobRepo.create(tmp_path / "squat", "squat", python_job("squat"))
    assert server.push(repo, key=limited.bob).returncode == 0
    info = json.loads(server.ssh("jobs:info", "squat", "--json").stdout)
    assert info["owner"] == "bob"


def test_a_failed_first_deploy_holds_the_name_for_a_retry_then_frees_it(limited, tmp_path):
    server = limited.server
    broken = python_job("held", signature="numbers: list[float]")
    broken["job.yaml"] += "replicas: lots\n"
    alices = JobRepo.create(tmp_path / "alice", "held", broken)
    assert server.push(alices, key=limited.alice).returncode != 0
    bobs = JobRepo.create(
        tmp_path / "bob", "held", python_job("held", "return 'bob'", signature="")
    )
    taken = server.push(bobs, key=limited.bob)
    assert taken.returncode != 0
    assert "the job name 'held' is held by another user's first deploy" in taken.stderr
    # once the grace passes (3 s here) without a retry, the name is free: bob takes it
    wait_for(
        lambda: server.push(bobs, key=limited.bob).returncode == 0,
        "the failed claim to expire and bob's push to deploy",
    )
    assert server.call("held", "latest", payload={}, token=limited.bob_token) == (200, "bob")
    releases = json.loads(server.ssh("releases:list", "held", "--json").stdout)
    assert [r["deployed_by"] for r in releases] == ["bob"], "nothing of alice's attempt is left"


def test_reserved_environment_names_are_refused_naming_them(limited, tmp_path):
    refused = limited.server.ssh("config:set", "honest", "LD_PRELOAD=/tmp/evil.so", key=limited.bob)
    assert refused.returncode == 1
    assert "LD_PRELOAD is reserved: the platform sets it, or it changes what code" in refused.stderr
    files = python_job("env-job", extra_manifest="runtime_env:\n  PYTHONPATH: /tmp/evil\n")
    pushed = push_as_alice(limited, tmp_path / "env", "env-job", files)
    assert pushed.returncode != 0
    assert "runtime_env: " in pushed.stderr and "PYTHONPATH is reserved" in pushed.stderr


def test_grants_and_revocations_apply_to_the_very_next_call(limited):
    server = limited.server  # the router remembers answers for --auth-cache (10 s, the default)
    token = server.ssh("tokens:create", "ci-bot").stdout.splitlines()[0]
    call = lambda: server.call("honest", "latest", payload={"numbers": [2]}, token=token)  # noqa: E731
    assert call()[0] == 403
    granted = server.ssh("perms:grant", "esc:ci-bot", "call_job", "--family", "honest", "--json")
    assert call() == (200, 2), "a refusal is never remembered"
    assert server.ssh("perms:revoke", str(json.loads(granted.stdout)["id"])).returncode == 0
    assert call()[0] == 403, "a revocation makes the router forget the yes at once"
    regranted = server.ssh("perms:grant", "esc:ci-bot", "call_job", "--family", "honest")
    assert regranted.returncode == 0 and call() == (200, 2)
    listed = json.loads(server.ssh("tokens:list", "--json").stdout)
    (row,) = [t for t in listed if t["subject"] == "esc:ci-bot" and t["revoked_at"] is None]
    assert server.ssh("tokens:revoke", str(row["id"])).returncode == 0
    assert call()[0] == 401, "a revoked token at once"

    carol = server.add_user("carol")
    carols = server.token(carol)
    assert server.call("honest", "latest", payload={"numbers": [1]}, token=carols) == (200, 1)
    assert server.ssh("users:remove", "carol").returncode == 0
    assert server.call("honest", "latest", payload={"numbers": [1]}, token=carols)[0] == 401


def test_a_full_disk_fails_the_build_saying_so_and_leaves_nothing_behind(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m,mode=0700", "tmpfs", str(disk)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"this machine cannot mount a small tmpfs: {mounted.stderr.strip()}")
    try:
        full_disk(disk, tmp_path)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def full_disk(disk: Path, tmp_path: Path) -> None:
    server = Server(disk / "platform").start()
    try:
        honest_repo = JobRepo.create(tmp_path / "honest", "honest", python_job("honest"))
        assert server.push(honest_repo).returncode == 0
        token = server.token()
        big = python_job("big")
        repo = JobRepo.create(tmp_path / "big", "big", big)
        (repo.path / "model.bin").write_bytes(os.urandom(15 * MiB))  # does not compress
        repo.commit({}, "a model larger than the disk has room for twice")
        with honest_calls(server, "honest", token):
            pushed = server.push(repo)
        assert pushed.returncode != 0
        assert "no space left on device while " in pushed.stdout, pushed.stdout
        data = server.data_dir
        assert list((data / "work").iterdir()) == [], "the checkout is gone"
        assert not (data / "artifacts" / "big").exists() or not list(
            (data / "artifacts" / "big").iterdir()
        ), "no half-written release"
        # a release a platform was writing when it died is removed when it starts again
        leftover = data / "artifacts" / "honest" / "1.0.0-r9-000000000000"
        leftover.mkdir(parents=True)
        (leftover / "half.py").write_text("")
        server.stop()
        server.start()
        assert not leftover.exists()
        assert list((data / "work").iterdir()) == []
        wait_for(
            lambda: (
                server.call("honest", "latest", payload={"numbers": [1, 2]}, token=token)
                == (200, 3)
            ),
            "the honest job to serve again after the restart",
        )
    finally:
        server.stop()


def test_a_flood_of_silent_ssh_connections_is_dropped_before_it_holds_the_server(limited):
    """Connections that never even say hello: beyond 200 waiting to log in (the server's cap)
    each is dropped at once rather than held for the login timeout."""
    server = limited.server
    assert server.process is not None
    fds = Path(f"/proc/{server.process.pid}/fd")
    before = len(list(fds.iterdir()))
    flood = [socket.create_connection(("127.0.0.1", server.ssh_port)) for _ in range(260)]
    try:
        dropped = 0
        deadline = time.monotonic() + 10
        for sock in flood:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                while chunk := sock.recv(4096):  # the server's version line, then silence
                    del chunk
                dropped += 1
            except TimeoutError:
                continue
            except ConnectionResetError:
                dropped += 1
        assert dropped >= 260 - 200, f"only {dropped} of 260 were dropped"
        held = len(list(fds.iterdir())) - before
        assert held <= 210, f"the server holds {held} more descriptors"
    finally:
        for sock in flood:
            sock.close()
    wait_for(
        lambda: server.ssh("help").returncode == 0,
        "a login to work again once the flood is gone",
    )


def test_one_users_connections_are_capped(limited):
    """Each authenticated connection holds a descriptor and can open channels: 32 per user."""
    server = limited.server

    def connection() -> subprocess.Popen:
        """A connection that logs in and then holds on (no command); it says "in" once in."""
        opened = subprocess.Popen(
            [*server.ssh_command(limited.alice), "-N", "-o", "PermitLocalCommand=yes",
             "-o", "LocalCommand=echo in", "-p", str(server.ssh_port), "git@127.0.0.1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert opened.stdout is not None and opened.stdout.readline() == b"in\n"
        return opened

    held: list[subprocess.Popen] = []
    try:
        with honest(limited):
            for _ in range(32):
                held.append(connection())
            refused = server.ssh("help", key=limited.alice)
            assert "you have 32 connections open already, the limit per user" in refused.stderr
            assert server.ssh("help", key=limited.bob).returncode == 0, "bob is not held up"
    finally:
        for process in held:
            process.kill()
            process.wait()
    wait_for(
        lambda: server.ssh("help", key=limited.alice).returncode == 0,
        "alice's places to be free once her connections close",
    )
