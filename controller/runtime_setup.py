"""Choosing the runtime `racetrack serve` runs jobs on, and what builds its artifacts."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from buildpacks.docker_build import DockerBuildSettings, ImageBuilder
from controller.errors import StartupError
from controller.keyfiles import load_or_create_build_secrets_key
from controller.runtimes.base import Runtime
from controller.runtimes.docker import HOST_NETWORK, DockerRuntime
from controller.runtimes.limits import detect_limiter
from controller.runtimes.local import LocalRuntime
from controller.runtimes.log_files import LogSettings
from controller.runtimes.sandbox import DEFAULT_JOB_USER_BASE, Sandbox, SandboxUnavailable

PLATFORM_ID_NAME = "platform-id"


@dataclass(frozen=True)
class RuntimeSettings:
    kind: str = "local"
    host: str = "127.0.0.1"
    stop_grace: float = 10.0
    ready_timeout: float = 180.0  # also for a replica restarted after a crash
    docker_network: str = HOST_NETWORK
    build: DockerBuildSettings = field(default_factory=DockerBuildSettings)
    # local runtime: jobs run unisolated, as the platform's user (for one person's machine)
    insecure_single_user: bool = False
    job_user_base: int = DEFAULT_JOB_USER_BASE
    logs: LogSettings = field(default_factory=LogSettings)


def platform_id(data_dir: Path) -> str:
    """This platform's identity on a shared Docker engine (labels on its images, containers)."""
    path = data_dir / PLATFORM_ID_NAME
    if not path.exists():
        path.write_text(secrets.token_hex(6) + "\n")
    return path.read_text().strip()


def _local_runtime(settings: RuntimeSettings, data_dir: Path) -> LocalRuntime:
    """Jobs in sandboxes, or with --insecure-single-user as the platform's own user; the
    platform refuses to start a local runtime it cannot isolate otherwise."""
    sandbox = None
    if not settings.insecure_single_user:
        try:
            sandbox = Sandbox.detect(settings.job_user_base)
        except SandboxUnavailable as exc:
            raise StartupError(
                f"the local runtime cannot isolate jobs from the platform and from each other"
                f" here: {exc}. On a machine only you use, start with --insecure-single-user"
                " (jobs then run with the platform's rights, and only one user may exist)"
            ) from None
    return LocalRuntime(
        data_dir,
        host=settings.host,
        shutdown_grace=settings.stop_grace,
        sandbox=sandbox,
        limiter=detect_limiter(platform_id(data_dir)),
        log_settings=settings.logs,
        ready_timeout=settings.ready_timeout,
    )


def make_runtime(settings: RuntimeSettings, data_dir: Path) -> tuple[Runtime, ImageBuilder | None]:
    if settings.kind == "local":
        return _local_runtime(settings, data_dir), None
    if settings.kind != "docker":
        raise StartupError(f"--runtime {settings.kind}: not available yet (use local or docker)")
    ca_bundle = settings.build.ca_bundle
    if ca_bundle is not None and not ca_bundle.is_file():
        raise StartupError(f"--build-ca-bundle {ca_bundle}: no such file")
    try:
        client = docker.from_env()
        client.ping()
        if settings.docker_network != HOST_NETWORK:
            client.networks.get(settings.docker_network)
    except docker.errors.NotFound:
        raise StartupError(
            f"--docker-network {settings.docker_network}: no such network on the engine"
            f" (create it: docker network create {settings.docker_network})"
        ) from None
    except docker.errors.DockerException as exc:
        raise StartupError(
            f"--runtime docker: cannot reach the Docker engine ({exc}); start it with"
            " scripts/setup-docker"
        ) from None
    identity = platform_id(data_dir)
    runtime = DockerRuntime(
        client,
        platform_id=identity,
        network=settings.docker_network,
        host=settings.host,
        shutdown_grace=settings.stop_grace,
        ready_timeout=settings.ready_timeout,
    )
    builder = ImageBuilder(
        client, settings.build, identity, load_or_create_build_secrets_key(data_dir)
    )
    return runtime, builder
