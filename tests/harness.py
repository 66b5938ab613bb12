"""Drive a real `racetrack serve` the way users do: OpenSSH, git and HTTP.

Used by the end-to-end tests and by the benchmark scripts under scripts/.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"
FIXTURES = REPO_ROOT / "tests" / "fixtures"


def fixture_files(name: str, prefix: str = "") -> dict[str, str]:
    """A fixture job's files (tests/fixtures/<name>), by path, under `prefix` in a repository."""
    folder = FIXTURES / name
    return {
        f"{prefix}{p.relative_to(folder).as_posix()}": p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}
START_TIMEOUT = 60.0
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# How the benchmarks run each runtime (docker: with the offline base from scripts/setup-docker,
# and this machine's CA bundle so that pip inside builds trusts its TLS proxy).
RUNTIME_FLAGS: dict[str, tuple[str, ...]] = {
    "local": (),
    "docker": (
        "--runtime", "docker",
        "--python-base-image", "racetrack/python3-base:bookworm",
        *(("--build-ca-bundle", str(CA_BUNDLE)) if CA_BUNDLE.exists() else ()),
    ),
}  # fmt: skip
K8S_KUBECONFIG = Path("/var/lib/racetrack-k8s/admin.kubeconfig")  # where setup-kubernetes puts it


def kubernetes_flags() -> tuple[tuple[str, ...] | None, str]:
    """The `racetrack serve` flags of the cluster scripts/setup-kubernetes runs (its last line
    of output; quick when the cluster is up), or None and why not."""
    if os.environ.get("CI") != "true" and not K8S_KUBECONFIG.exists():
        return None, "no cluster here: run scripts/setup-kubernetes"
    try:
        done = subprocess.run(
            [str(REPO_ROOT / "scripts" / "setup-kubernetes")], capture_output=True, text=True,
            timeout=1800,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, "scripts/setup-kubernetes did not finish within 30 minutes"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return None, f"scripts/setup-kubernetes failed: {done.stderr[-2000:]}"
    return tuple(lines[-1].split()), ""


def kubectl(flags: tuple[str, ...], *args: str, check: bool = True) -> str:
    """The cluster's kubectl (built by setup-kubernetes beside its kubeconfig)."""
    kubeconfig = flags[flags.index("--kubeconfig") + 1]
    binary = Path(kubeconfig).parent / "bin" / "kubectl"
    result = subprocess.run(
        [str(binary), "--kubeconfig", kubeconfig, *args], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr
    return result.stdout


@contextmanager
def kubernetes_namespace(flags: tuple[str, ...], prefix: str = "rt-test") -> Iterator[str]:
    """A namespace of its own for one platform, deleted afterwards with all it holds."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kubectl(flags, "create", "namespace", name)
    try:
        yield name
    finally:
        kubectl(flags, "delete", "namespace", name, "--wait=false", check=False)


RUNTIMES = ("local", "docker", "kubernetes")


@contextmanager
def runtime_platform(runtime: str, workdir: Path, *extra: str) -> Iterator[Server]:
    """A fresh `racetrack serve` on `runtime` (kubernetes: in a namespace of its own), stopped
    afterwards with what it left on the engine and in the cluster."""
    with contextlib.ExitStack() as cleanup:
        if runtime == "kubernetes":
            found, problem = _cluster_flags()
            if found is None:
                raise SystemExit(f"kubernetes: {problem}")
            namespace = cleanup.enter_context(kubernetes_namespace(found, "rt-bench"))
            flags: tuple[str, ...] = (
                *found, "--k8s-namespace", namespace,
                "--python-base-image", "racetrack/python3-base:bookworm",
            )  # fmt: skip
        else:
            flags = RUNTIME_FLAGS[runtime]
        server = Server(workdir / "platform", extra_args=(*flags, *extra)).start()
        try:
            yield server
        finally:
            server.stop()
            if runtime != "local":
                remove_docker_leftovers(server.data_dir)


@functools.cache
def _cluster_flags() -> tuple[tuple[str, ...] | None, str]:
    return kubernetes_flags()


def make_key(path: Path, comment: str = "tester@example") -> Path:
    """An ed25519 key pair made by the real ssh-keygen; returns the private key's path."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path


@dataclass
class Server:
    """A `racetrack serve` process on free ports, with a client key registered as admin."""

    workdir: Path
    extra_args: tuple[str, ...] = ()
    # what runs `racetrack serve`: this checkout by default, or e.g. `docker run ... image`
    launcher: tuple[str, ...] = (sys.executable, "-m", "controller.cli", "serve")
    env: dict[str, str] | None = None  # the server's environment (default: the test's)
    data_dir: Path = field(init=False)
    key: Path = field(init=False)
    ssh_port: int = 0
    router_url: str = ""
    api_url: str = ""
    process: subprocess.Popen[str] | None = None
    banner: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.key = self.workdir / "admin_key"
        if not self.key.exists():
            make_key(self.key, "admin@example")
        self.known_hosts = self.workdir / "known_hosts"
        self.log_path = self.workdir / "server.log"

    def start(self) -> Server:
        args = [
            *self.launcher,
            "--data-dir", str(self.data_dir),
            "--ssh-port", "0", "--router-port", "0", "--api-port", "0",
            "--admin-key", f"{self.key}.pub",
            *self.extra_args,
        ]  # fmt: skip
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=log, text=True, cwd=self.workdir, env=self.env
        )
        lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        stdout = self.process.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        self.banner = []
        while not any(line.strip().startswith("auth:") for line in self.banner):
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"racetrack did not start: {self.log_path.read_text()}"
                ) from None
            if line is None:
                raise RuntimeError(f"racetrack exited: {self.log_path.read_text()}")
            self.banner.append(line.rstrip("\n"))
        text = "\n".join(self.banner)
        self.ssh_port = int(_search(r"ssh://git@[^:]+:(\d+)/", text))
        self.router_url = _search(r"jobs:\s+(http://\S+?)/pub/job/", text)
        self.api_url = _search(r"api:\s+(http://\S+?)/api/v1/jobs", text)
        host_key = (self.data_dir / "ssh_host_ed25519_key.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.ssh_port} {host_key[0]} {host_key[1]}\n")
        return self

    def rss(self) -> tuple[int, int]:
        """The server's resident memory now and at its peak since `reset_peak_rss`, in bytes."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines())
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

    def reset_peak_rss(self) -> None:
        assert self.process is not None
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    # SSH and git

    def ssh_command(self, key: Path | None = None) -> list[str]:
        return [
            "ssh",
            "-i", str(key or self.key),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def ssh(self, *command: str, key: Path | None = None, stdin: str | None = None) -> Any:
        """Run an admin command; returns the CompletedProcess."""
        return subprocess.run(
            [*self.ssh_command(key), "-p", str(self.ssh_port), "git@127.0.0.1", *command],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=120,
        )

    def git_env(self, key: Path | None = None) -> dict[str, str]:
        return {**os.environ, **GIT_IDENTITY, "GIT_SSH_COMMAND": " ".join(self.ssh_command(key))}

    def remote(self, job: str) -> str:
        return f"ssh://git@127.0.0.1:{self.ssh_port}/{job}"

    def push(self, repo: JobRepo, refspec: str = "main", *, key: Path | None = None) -> Any:
        return subprocess.run(
            ["git", "push", "--porcelain", self.remote(repo.job), refspec],
            cwd=repo.path,
            env=self.git_env(key),
            capture_output=True,
            text=True,
            timeout=600,
        )

    def remote_refs(self, job: str) -> dict[str, str]:
        """`git ls-remote` of the job's repository: ref name → commit (none when the server has
        no repository for the job: a first push that stored nothing leaves none)."""
        listed = subprocess.run(
            ["git", "ls-remote", self.remote(job)],
            env=self.git_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if listed.returncode != 0 and f"no repository for job {job!r}" in listed.stderr:
            return {}
        assert listed.returncode == 0, listed.stderr
        return {ref: sha for sha, ref in (line.split("\t") for line in listed.stdout.splitlines())}

    def token(self, key: Path | None = None) -> str:
        result = self.ssh("auth:token", key=key)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def add_user(self, name: str, *, admin: bool = False) -> Path:
        """A user made by the admin, with a fresh key of their own; returns the private key."""
        flags = ("--admin",) if admin else ()
        made = self.ssh("users:add", name, *flags)
        assert made.returncode == 0, made.stderr
        key = make_key(self.workdir / f"key-{name}", f"{name}@example")
        added = self.ssh("keys:add", name, stdin=Path(f"{key}.pub").read_text())
        assert added.returncode == 0, added.stderr
        return key

    def api(
        self, command: str, body: dict | None = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        """POST /api/v1/commands/<command> with `body` as the JSON arguments."""
        return http_json(
            f"{self.api_url}/api/v1/commands/{command}", body or {}, token=token, method="POST"
        )

    # HTTP

    def call(
        self,
        job: str,
        version: str,
        path: str = "/api/v1/perform",
        payload: Any = None,
        *,
        token: str | None = None,
        method: str | None = None,
    ) -> tuple[int, Any]:
        url = f"{self.router_url}/pub/job/{job}/{version}{path}"
        return http_json(url, payload, token=token, method=method)


def http_json(
    url: str,
    payload: Any = None,
    *,
    token: str | None = None,
    method: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if token is not None:
        request.add_header("X-Racetrack-Auth", token)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body)
        except ValueError:
            return error.code, body.decode(errors="replace")


@dataclass
class JobRepo:
    """A git work tree holding one job, committed with the real git."""

    path: Path
    job: str

    @classmethod
    def create(cls, path: Path, job: str, files: dict[str, str]) -> JobRepo:
        path.mkdir(parents=True)
        repo = cls(path, job)
        repo.git("init", "-q", "-b", "main")
        repo.commit(files, "initial")
        return repo

    def git(self, *args: str) -> str:
        result = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env={**os.environ, **GIT_IDENTITY},
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD").strip()


def python_job(
    name: str,
    body: str = "return sum(numbers)",
    *,
    version: str = "1.0.0",
    signature: str = "numbers: list[float]",
    extra_manifest: str = "",
) -> dict[str, str]:
    """Files of a minimal python3 job whose perform() runs `body`."""
    return {
        "job.yaml": (
            f"name: {name}\nowner_email: dev@example.com\njobtype: python3\n"
            f"version: {version}\njobtype_extra:\n  entrypoint_path: entry.py\n{extra_manifest}"
        ),
        "entry.py": (
            f"class JobEntrypoint:\n    def perform(self, {signature}):\n        {body}\n"
        ),
    }


def runtime_server(runtime: str, data_dir: Path, *extra: str) -> Server:
    """A started `racetrack serve` on the local or docker runtime; docker tests are skipped
    without an engine, except in CI, where they must run."""
    if runtime == "docker":
        problem = docker_engine_problem()
        if problem is not None:
            if os.environ.get("CI") == "true":
                raise RuntimeError(f"docker tests must run in CI: {problem}")
            import pytest  # only the tests get here; the benchmarks use runtime_platform

            pytest.skip(problem)
    return Server(data_dir, extra_args=(*RUNTIME_FLAGS[runtime], *extra)).start()


def http_get(
    url: str,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    data: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request, redirects not followed: (status, headers, body)."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if token is not None:
        request.add_header("X-Racetrack-Auth", token)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def remove_docker_leftovers(data_dir: Path) -> None:
    """Remove the containers and images a platform left on the engine (they outlive it)."""
    platform = (data_dir / "platform-id").read_text().strip()
    for kind, remove in (("ps", "rm"), ("images", "rmi")):
        listed = subprocess.run(
            ["docker", kind, "-aq", "--filter", f"label=racetrack.platform={platform}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if listed:
            subprocess.run(["docker", remove, "-f", *sorted(set(listed))], capture_output=True)


def wait_for(condition: Any, what: str, deadline: float = 60.0) -> None:
    """Poll `condition` until it is true; fail naming `what` after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:.0f}s waiting for {what}")
        time.sleep(0.05)


def job_processes(data_dir: Path, job: str = "") -> list[int]:
    """PIDs of job wrappers started from the data dir's artifacts (of `job`, if given)."""
    needle = f"{data_dir / 'artifacts'}/{job + '/' if job else ''}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # the job's own python, not the sandbox (bwrap) that started it with these arguments
        launcher = cmdline.split(b"\0", 1)[0]
        if needle in cmdline and b"racetrack_job_wrapper" in cmdline and b"bwrap" not in launcher:
            pids.append(int(entry.name))
    return pids


def _search(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"{pattern!r} not found in the banner:\n{text}")
    return match.group(1)


def docker_engine_problem() -> str | None:
    """Why the docker runtime cannot be tested here (no engine, or no offline base image)."""
    try:
        subprocess.run(["docker", "info"], capture_output=True, check=True, timeout=30)
        subprocess.run(
            ["docker", "image", "inspect", "racetrack/python3-base:bookworm"],
            capture_output=True, check=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "no Docker engine with racetrack/python3-base:bookworm: run scripts/setup-docker"
    return None


@contextmanager
def honest_calls(
    server: Server,
    job: str,
    token: str,
    payload: Any = None,
    expected: tuple[int, Any] = (200, 3),
) -> Iterator[list[Any]]:
    """While the block runs, an honest user calls `job` over and over (20 ms apart); after it,
    every call must have had the expected answer, and there must have been some."""
    answers: list[Any] = []
    stop = threading.Event()
    body = {"numbers": [1, 2]} if payload is None else payload

    def call() -> None:
        while not stop.is_set():
            try:
                answers.append(server.call(job, "latest", payload=body, token=token))
            except Exception as exc:  # a dropped call is a failed call
                answers.append(("error", repr(exc)))
            stop.wait(0.02)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    try:
        yield answers
    finally:
        stop.set()
        caller.join(120)
    wrong = [a for a in answers if a != expected]
    assert answers and not wrong, f"{len(wrong)} of {len(answers)} honest calls failed: {wrong[:3]}"
