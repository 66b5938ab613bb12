"""Starting, stopping and restarting `racetrack serve` itself."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO_ROOT, JobRepo, Server, job_processes, python_job, wait_for


def test_sigterm_stops_everything_and_a_restart_serves_again(tmp_path):
    platform = Server(tmp_path / "platform").start()
    try:  # stopped whatever fails (stop() of a stopped server returns at once)
        repo = JobRepo.create(
            tmp_path / "job", "survivor", python_job("survivor", extra_manifest="replicas: 2\n")
        )
        assert platform.push(repo).returncode == 0
        token = platform.token()
        called = platform.call("survivor", "latest", payload={"numbers": [2, 3]}, token=token)
        assert called == (200, 5)
        assert len(job_processes(platform.data_dir)) == 2

        assert platform.stop(signal.SIGTERM) == 0
        assert job_processes(platform.data_dir) == []
        assert "shutting down" in platform.log_path.read_text()

        platform.start()  # same data dir: same host key, same users, same jobs
        wait_for(  # job versions come back in the background, each routed when ready
            lambda: (
                platform.call("survivor", "latest", payload={"numbers": [2, 3]}, token=token)
                == (200, 5)
            ),
            "the job to serve again",
        )
        rows = platform.ssh("jobs:list").stdout
        assert "survivor" in rows and "running" in rows
    finally:
        platform.stop()


def test_no_auth_lets_calls_through_without_a_token(tmp_path):
    platform = Server(tmp_path / "platform", extra_args=("--no-auth",)).start()
    try:
        repo = JobRepo.create(tmp_path / "job", "open", python_job("open"))
        assert platform.push(repo).returncode == 0
        assert platform.call("open", "latest", payload={"numbers": [1]}) == (200, 1)
        assert "  auth:      off" in platform.banner
    finally:
        platform.stop()


def serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", "serve", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip


def test_unreadable_admin_key_is_a_clear_startup_error(tmp_path):
    bad = tmp_path / "key.pub"
    bad.write_text("not a key\n")
    result = serve("--data-dir", str(tmp_path / "d"), "--admin-key", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"racetrack: --admin-key {bad}: not an OpenSSH public key")


def test_busy_port_is_a_clear_startup_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = serve(
            "--data-dir", str(tmp_path / "d"), "--router-port", str(port),
            "--ssh-port", "0", "--api-port", "0", cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.endswith(
        f"racetrack: cannot listen on 127.0.0.1:{port} (router): Address already in use\n"
    )
