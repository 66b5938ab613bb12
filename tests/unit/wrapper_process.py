"""Run the python3 job wrapper as a real process on a free port, for the wrapper's tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import swagger_ui_bundle

from tests.harness import REPO_ROOT, wait_for

DEADLINE = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Wrapper:
    process: subprocess.Popen
    port: int
    workdir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        path: str,
        payload: Any = None,
        *,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Answer:
        if payload is not None:
            data = json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method or ("POST" if data is not None else "GET"),
            headers=headers or {},
        )  # fmt: skip
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=DEADLINE) as response:
                return Answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.headers, exc.read())

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def start_wrapper(
    workdir: Path, files: dict[str, str], env: dict[str, str] | None = None, *, ready: bool = True
) -> Wrapper:
    """Write the job's files into `workdir` and start the wrapper on them."""
    for name, text in files.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    port = free_port()
    full_env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT / "buildpacks" / "python3"),
        "JOB_DIR": str(workdir),
        "ENTRYPOINT_PATH": "entry.py",
        "JOB_NAME": "sample",
        "JOB_VERSION": "1.2.3",
        "PORT": str(port),
        "LISTEN_HOST": "127.0.0.1",
        "RACETRACK_SHUTDOWN_GRACE": "10",
        "RACETRACK_SWAGGER_UI_DIR": str(swagger_ui_bundle.swagger_ui_path),
        **(env or {}),
    }
    log_path = workdir / "wrapper.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "racetrack_job_wrapper"], cwd=workdir, env=full_env,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    wrapper = Wrapper(process, port, workdir, log_path)
    probe = "/ready" if ready else "/live"

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the wrapper exited: {wrapper.log()}")
        try:
            return wrapper.request(probe).status in ((200,) if ready else (200, 500))
        except OSError:
            return False

    wait_for(answers, f"the wrapper to answer {probe}", DEADLINE)
    return wrapper
