"""The local runtime's sandbox and limits, with the real bubblewrap and the real kernel."""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from controller.runtimes.limits import Limits, RlimitOnly, detect_limiter
from controller.runtimes.sandbox import Sandbox, SandboxUnavailable

try:
    SANDBOX = Sandbox.detect()
    WHY_NOT = ""
except SandboxUnavailable as exc:  # scripts/setup-sandbox installs it; CI runs it
    SANDBOX, WHY_NOT = None, str(exc)
needs_sandbox = pytest.mark.skipif(SANDBOX is None, reason=f"no sandbox here: {WHY_NOT}")

PROBE = """
import json, os, pathlib
def readable(path):
    try:
        pathlib.Path(path).read_bytes()
        return True
    except OSError:
        return False
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines())
print(json.dumps({
    "uid": os.getuid(),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "secret": readable(os.environ["SECRET"]),
    "own": readable(os.environ["OWN"]),
    "data_dir": os.listdir(os.environ["DATA"]),
    "cap_eff": status["CapEff"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "tmp_writable": os.access("/tmp", os.W_OK),
    "docker_socket": os.path.exists("/var/run/docker.sock") or os.path.exists("/run/docker.sock"),
}))
"""


def run_in(sandbox: Sandbox, tmp_path: Path, slot: int = 7) -> dict:
    data = tmp_path / "data"
    release, scratch = data / "artifacts" / "job" / "r1", data / "instances" / "job"
    for directory in (release, scratch):
        directory.mkdir(parents=True)
    (data / "token.key").write_bytes(b"k" * 32)
    (data / "token.key").chmod(0o600)
    (release / "code.py").write_text("print('mine')\n")
    data.chmod(0o700)
    uid = sandbox.uid_for(slot)
    if uid is not None:
        os.chown(scratch, uid, uid)
    command = sandbox.command(
        [os.path.realpath(sys.executable), "-I", "-c", PROBE],  # the base Python the sandbox shows
        uid=uid,
        cwd=release,
        read_only=[release],
        writable=[scratch],
        home=scratch,
    )
    env = {"SECRET": str(data / "token.key"), "OWN": str(release / "code.py"), "DATA": str(data)}
    try:
        done = subprocess.run(
            command.argv, pass_fds=command.pass_fds, env=env, capture_output=True, text=True
        )
    finally:
        command.close()
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_sandbox
def test_a_sandboxed_process_sees_only_what_it_was_given(tmp_path):
    assert SANDBOX is not None
    seen = run_in(SANDBOX, tmp_path)
    assert seen["own"] is True
    assert seen["secret"] is False, "the platform's key is not there"
    assert sorted(seen["data_dir"]) == ["artifacts", "instances"], "only the paths it was given"
    assert seen["pids"] == [1, 2], "no other process of the machine is visible"
    assert (seen["cap_eff"], seen["no_new_privs"]) == ("0000000000000000", "1")
    assert seen["tmp_writable"] is True and seen["docker_socket"] is False
    if SANDBOX.as_root:
        assert seen["uid"] == SANDBOX.job_user_base + 7, "the family's own uid"


@needs_sandbox
def test_each_family_gets_its_own_uid_as_root():
    assert SANDBOX is not None
    if not SANDBOX.as_root:
        assert SANDBOX.uid_for(3) is None
        return
    assert SANDBOX.uid_for(1) != SANDBOX.uid_for(2)
    with pytest.raises(ValueError, match="is not a valid uid"):
        SANDBOX.uid_for(2**31)


def test_without_bubblewrap_the_reason_names_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to find there
    with pytest.raises(SandboxUnavailable, match=r"bubblewrap \(bwrap\) is not installed"):
        Sandbox.detect()


def test_the_rlimit_fallback_limits_memory_and_says_cpu_is_not():
    applied = RlimitOnly().apply("job", Limits(memory_max=256 * 2**20, cpu_max=0.5))
    assert "address-space limit" in applied.description
    assert "cpu_max not applied" in applied.description
    child = subprocess.run(
        [sys.executable, "-c", "import resource; print(resource.getrlimit(resource.RLIMIT_AS))"],
        preexec_fn=applied.join,
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == f"({256 * 2**20}, {256 * 2**20})"
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != 256 * 2**20, "only the child"


def test_a_cgroup_holds_the_instance_with_its_limits(tmp_path):
    limiter = detect_limiter(f"unit-{os.getpid()}")
    if isinstance(limiter, RlimitOnly):
        pytest.skip("no cgroup can be made here (not root, or no controllers mounted)")
    applied = limiter.apply("instance", Limits(memory_max=64 * 2**20, cpu_max=0.25))
    try:
        child = subprocess.run(
            ["cat", "/proc/self/cgroup"],
            preexec_fn=applied.join,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "/racetrack/unit-" in child.stdout and "/instance" in child.stdout
        memory = next(d for d in applied.directories if "memory" in str(d) or "cpu" not in str(d))
        limit_file = "memory.max" if limiter.kind == "cgroup v2" else "memory.limit_in_bytes"
        assert (memory / limit_file).read_text().strip() == str(64 * 2**20)
        assert applied.out_of_memory() is False
    finally:
        assert applied.try_remove()
    assert not any(d.exists() for d in applied.directories)
    assert limiter.remove_strays(set()) == []
