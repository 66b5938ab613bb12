"""Racetrack's job runner (racetrack-job-runner==1.18.0, from PyPI) and ours, side by side.

`scripts/test` installs the reference into its own virtualenv (`.venv-reference`, from the
`reference` extra in pyproject.toml): its package is also called `racetrack_job_wrapper`, and
its FastAPI stack must not meet the platform's packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import swagger_ui_bundle

from tests.harness import FIXTURES, REPO_ROOT, wait_for
from tests.unit.wrapper_process import NoRedirect, free_port

REFERENCE_VENV = Path(os.environ.get("RACETRACK_REFERENCE_VENV", REPO_ROOT / ".venv-reference"))
REFERENCE_RUNNER = REFERENCE_VENV / "bin" / "racetrack_job_runner"
DEADLINE = 30.0
DEPLOYMENT_TIMESTAMP = "1764700000"
Headers = dict[str, str] | None


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    location: str
    body: bytes


@dataclass
class RunningJob:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def send(
        self, method: str, path: str, body: bytes | None = None, headers: Headers = None
    ) -> Reply:
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=DEADLINE) as response:
                return _reply(response.status, response.headers, response.read())
        except urllib.error.HTTPError as exc:
            return _reply(exc.code, exc.headers, exc.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _reply(status: int, headers: object, body: bytes) -> Reply:
    get = headers.get  # type: ignore[attr-defined]
    return Reply(status, get("Content-Type") or "", get("Location") or "", body)


def reference_problem() -> str | None:
    if REFERENCE_RUNNER.exists():
        return None
    return (
        f"{REFERENCE_RUNNER} is missing: scripts/test installs racetrack-job-runner there"
        " (or set RACETRACK_REFERENCE_VENV)"
    )


def copy_fixture(name: str, workdir: Path) -> Path:
    job_dir = workdir / name
    shutil.copytree(FIXTURES / name, job_dir)
    return job_dir


def job_env(job: str, port: int) -> dict[str, str]:
    """What both platforms set for a job (Racetrack's runner reads the port from its flag)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "JOB_NAME": job,
        "JOB_VERSION": "0.0.1",
        "GIT_VERSION": "abc1234",
        "JOB_DEPLOYMENT_TIMESTAMP": DEPLOYMENT_TIMESTAMP,
        "PORT": str(port),
    }


@contextmanager
def reference_runner(
    job_dir: Path, name: str, entrypoint: str, class_name: str
) -> Iterator[RunningJob]:
    """Racetrack's runner, as its python3 job type starts it: from the job's directory."""
    port = free_port()
    command = [str(REFERENCE_RUNNER), "run", entrypoint, class_name, "--port", str(port)]
    with _running(command, job_dir, job_env(name, port), port, "reference") as job:
        yield job


@contextmanager
def our_wrapper(
    job_dir: Path,
    name: str,
    entrypoint: str,
    class_name: str,
    extra_env: dict[str, str] | None = None,
) -> Iterator[RunningJob]:
    port = free_port()
    env = {
        **job_env(name, port),
        "PYTHONPATH": str(REPO_ROOT / "buildpacks" / "python3"),
        "JOB_DIR": str(job_dir),
        "ENTRYPOINT_PATH": entrypoint,
        "ENTRYPOINT_CLASS": class_name,
        "LISTEN_HOST": "127.0.0.1",
        "RACETRACK_SWAGGER_UI_DIR": str(swagger_ui_bundle.swagger_ui_path),
        **(extra_env or {}),
    }
    command = [sys.executable, "-m", "racetrack_job_wrapper"]
    with _running(command, job_dir, env, port, "ours") as job:
        yield job


@contextmanager
def _running(
    command: list[str], cwd: Path, env: dict[str, str], port: int, label: str
) -> Iterator[RunningJob]:
    log_path = cwd.parent / f"{cwd.name}-{label}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    job = RunningJob(f"http://127.0.0.1:{port}", process, log_path)

    def settled() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{label} runner exited: {job.log()[-3000:]}")
        try:
            live = job.send("GET", "/live")
        except OSError:
            return False
        return live.status == 500 or job.send("GET", "/ready").status == 200

    try:
        wait_for(settled, f"the {label} runner to load {cwd.name}", DEADLINE)
        yield job
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
