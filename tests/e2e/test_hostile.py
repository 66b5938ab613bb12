"""Strangers, garbage and abuse: refused with a reason, and whatever was serving serves on."""

import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import JobRepo, Server, make_key, python_job, wait_for

MAX_PUSH = 64 * 1024
ZERO = "0" * 40


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A platform with a small push limit."""
    running = Server(
        tmp_path_factory.mktemp("racetrack-strict"), extra_args=("--max-push-size", "64Ki")
    ).start()
    yield running
    running.stop()


def repo_state(path: Path) -> dict[str, str]:
    """Every file of a bare repository with the hash of its content."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def pkt(line: str) -> bytes:
    data = line.encode()
    return f"{len(data) + 4:04x}".encode() + data


def raw_receive_pack(server: Server, job: str, payload: bytes) -> subprocess.CompletedProcess:
    """Speak git-receive-pack by hand: the ref update, then whatever `payload` is."""
    request = pkt(f"{ZERO} {'1' * 40} refs/heads/evil\0report-status side-band-64k\n") + b"0000"
    return subprocess.run(
        [*server.ssh_command(), "-p", str(server.ssh_port), "git@127.0.0.1",
         f"git-receive-pack '{job}'"],
        input=request + payload, capture_output=True, timeout=60,
    )  # fmt: skip


def test_failed_logins_are_limited_per_connection_and_slowed_down(tmp_path, workdir):
    gate = Server(tmp_path / "gate").start()  # its own record of failed logins
    try:
        strangers = [make_key(workdir / f"stranger{i}") for i in range(8)]
        many_keys = [
            "ssh", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={gate.known_hosts}", "-o", "LogLevel=INFO",
            *[arg for key in strangers for arg in ("-i", str(key))],
            "-p", str(gate.ssh_port), "git@127.0.0.1", "help",
        ]  # fmt: skip
        tried = subprocess.run(many_keys, capture_output=True, text=True, timeout=120)
        assert tried.returncode == 255
        assert "too many authentication failures" in tried.stderr, "cut off after 6 keys"
        log = gate.log_path.read_text()
        assert log.count("refused unknown key") == 6
        assert "slowing down 127.0.0.1: 1s before its refusal" in log, "the sixth refusal waited"

        started = time.monotonic()
        assert gate.ssh("help", key=strangers[0]).returncode == 255
        assert time.monotonic() - started >= 2.0, "the seventh refusal waited twice as long"

        assert gate.ssh("help").returncode == 0, "a key that works is let in"
        assert gate.ssh("help", key=strangers[1]).returncode == 255
        assert gate.log_path.read_text().count("slowing down") == 2, "the login cleared it"
    finally:
        gate.stop()


def test_one_address_cannot_hold_many_unauthenticated_connections(tmp_path):
    gate = Server(tmp_path / "gate").start()
    try:
        idle: list[socket.socket] = []
        try:
            for _ in range(20):  # the limit: connections that never authenticate
                idle.append(socket.create_connection(("127.0.0.1", gate.ssh_port), timeout=30))
                assert idle[-1].recv(64).startswith(b"SSH-2.0-Racetrack"), "accepted"
            refused = gate.ssh("help")
            assert refused.returncode == 255
            assert "too many unauthenticated connections" in gate.log_path.read_text()
        finally:
            for connection in idle:
                connection.close()
        wait_for(lambda: gate.ssh("help").returncode == 0, "the idle connections to be gone")
    finally:  # a failed assertion must not leave the server running
        gate.stop()


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (("jobs:info", "../x"), "'../x' is not a job name"),
        (("jobs:info", "a;b"), "'a;b' is not a job name"),
        (("jobs:info", "a..b"), "'a..b' is not a job name"),
        (("jobs:info", "x" * 200), "is not a job name"),
        (("jobs:info", "-rf"), "the following arguments are required: job"),
        (("releases:info", "adder", "r-1"), "'r-1' is not a release"),
        (("config:set", "adder", "'A B=1'"), "'A B' is not an environment variable name"),
        (
            ("perms:grant", "user:admin", "call_job", "--family", "x", "--endpoint", "../etc"),
            "'../etc' is not a path starting with '/'",
        ),
        (("users:add", "'Robert); DROP TABLE users;--'"), "is not a name"),
        (("users:add", "unbalanced'quote"), "cannot parse the command: No closing quotation"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(server, argv, reason):
    result = server.ssh(*argv)
    assert result.returncode == 1
    assert result.stderr.startswith("racetrack: ") and reason in result.stderr


def test_a_command_that_is_not_utf8_is_refused(server):
    result = subprocess.run(
        [*server.ssh_command(), "-p", str(server.ssh_port), "git@127.0.0.1", b"jobs:list \xff"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == b"racetrack: the command is not valid UTF-8\n"
    assert server.ssh("help").returncode == 0


def test_a_push_larger_than_the_limit_leaves_the_repo_as_it_was(strict, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    assert strict.push(repo).returncode == 0
    bare = strict.data_dir / "repos" / f"{job_name}.git"
    before = repo_state(bare)
    repo.commit({"blob.bin": os.urandom(4 * MAX_PUSH).hex()})

    pushed = strict.push(repo)

    assert pushed.returncode != 0
    assert f"the push is larger than the limit of {MAX_PUSH} bytes" in pushed.stdout + pushed.stderr
    assert repo_state(bare) == before


def test_a_malformed_pack_leaves_the_repo_as_it_was(strict, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    assert strict.push(repo).returncode == 0
    bare = strict.data_dir / "repos" / f"{job_name}.git"
    before = repo_state(bare)

    garbage = raw_receive_pack(strict, job_name, b"PACK\x00\x00\x00\x02\x00\x00\x00\x03garbage!")
    assert b"unpack " in garbage.stdout and b"unpack ok" not in garbage.stdout
    assert repo_state(bare) == before

    cut = raw_receive_pack(strict, job_name, b"PACK\x00\x00\x00\x02\x00\x00\x00\x05")  # then EOF
    assert b"unpack the pack ended early or is malformed" in cut.stdout
    assert repo_state(bare) == before

    header = b"PACK\x00\x00\x00\x02\x00\x00\x00\x00"  # a valid pack with no objects
    empty = raw_receive_pack(strict, job_name, header + hashlib.sha1(header).digest())
    assert b"unpack ok" in empty.stdout
    assert f"ng refs/heads/evil missing object {'1' * 40}".encode() in empty.stdout
    assert repo_state(bare) == before
    assert strict.remote_refs(job_name).keys() == {"HEAD", "refs/heads/main"}


def test_a_client_that_vanishes_mid_pack_leaves_the_repo_as_it_was(server, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    assert server.push(repo).returncode == 0
    bare = server.data_dir / "repos" / f"{job_name}.git"
    before = repo_state(bare)
    old = repo.git("rev-parse", "HEAD").strip()
    new = repo.commit({"blob.bin": os.urandom(2 * 1024 * 1024).hex()})
    pack = subprocess.run(
        ["git", "-C", str(repo.path), "pack-objects", "--stdout", "--revs"],
        input=f"{new}\n^{old}\n".encode(), capture_output=True, check=True,
    ).stdout  # fmt: skip
    request = pkt(f"{old} {new} refs/heads/side\0report-status\n") + b"0000"

    client = subprocess.Popen(
        [*server.ssh_command(), "-p", str(server.ssh_port), "git@127.0.0.1",
         f"git-receive-pack '{job_name}'"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert client.stdin is not None
    client.stdin.write(request + pack[: len(pack) // 2])
    client.stdin.flush()
    incoming = bare / "objects"
    wait_for(lambda: any(incoming.glob("incoming-*/tmp_pack_*")), "the pack to be arriving")
    client.kill()
    client.wait()

    wait_for(lambda: repo_state(bare) == before, "the half-received pack to be thrown away")
    assert server.remote_refs(job_name).keys() == {"HEAD", "refs/heads/main"}
    assert server.push(repo, "HEAD:refs/heads/side").returncode == 0, "the next push works"


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        ("name: [unclosed", "job.yaml is not valid YAML at line 1"),
        ("- just\n- a list\n", "job.yaml must be a mapping of fields, not list"),
        ("plain words", "job.yaml must be a mapping of fields, not str"),
        ("a: " + "x" * 10_000_000, "larger than the limit of 262144 bytes"),
    ],
)
def test_unusable_manifests_are_refused_with_the_reason(
    server, workdir, job_name, manifest, reason
):
    repo = JobRepo.create(workdir / "job", job_name, {"job.yaml": manifest, "entry.py": ""})
    pushed = server.push(repo)
    assert pushed.returncode != 0
    assert reason in pushed.stdout
