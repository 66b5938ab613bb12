"""Choosing the runtime `racetrack serve` runs jobs on, and what builds its artifacts."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import docker
import docker.errors
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from buildpacks.docker_build import DockerBuildSettings, ImageBuilder
from controller.errors import StartupError
from controller.keyfiles import load_or_create_build_secrets_key
from controller.runtimes.base import ReleaseFailed, Runtime
from controller.runtimes.docker import HOST_NETWORK, DockerRuntime, prune_images
from controller.runtimes.kubernetes import KubernetesRuntime, KubernetesSettings
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
    kubeconfig: Path | None = None  # None: the in-cluster service account
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    k8s_route_via: str = "auto"  # auto: the Service when the platform runs in the cluster


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


async def make_runtime(
    settings: RuntimeSettings, data_dir: Path
) -> tuple[Runtime, ImageBuilder | None]:
    if settings.kind == "local":
        return _local_runtime(settings, data_dir), None
    if settings.kind == "kubernetes":
        if settings.build.registry is None:
            raise StartupError(
                "--runtime kubernetes needs --registry HOST[:PORT][/prefix]: the cluster pulls"
                " job images from there (scripts/setup-kubernetes prints the flags it needs)"
            )
        engine = _docker_client(settings, need_network=False)
        identity = platform_id(data_dir)

        async def prune(job: str, keep: int, in_use: set[str]) -> list[str]:
            return await asyncio.to_thread(prune_images, engine, identity, job, keep, in_use)

        cluster = await connect_kubernetes(settings, identity, prune)
        key = load_or_create_build_secrets_key(data_dir)
        return cluster, ImageBuilder(engine, settings.build, identity, key)
    if settings.kind != "docker":
        raise StartupError(f"--runtime {settings.kind}: unknown (use local, docker or kubernetes)")
    client = _docker_client(settings, need_network=True)
    identity = platform_id(data_dir)
    runtime = DockerRuntime(
        client,
        platform_id=identity,
        network=settings.docker_network,
        host=settings.host,
        shutdown_grace=settings.stop_grace,
    )
    builder = ImageBuilder(
        client, settings.build, identity, load_or_create_build_secrets_key(data_dir)
    )
    return runtime, builder


async def connect_kubernetes(
    settings: RuntimeSettings,
    identity: str,
    prune: Callable[[str, int, set[str]], Awaitable[list[str]]] | None = None,
) -> KubernetesRuntime:
    """The cluster from --kubeconfig, or the service account of the pod the platform runs in;
    it must answer, and the namespace must exist, before the platform starts."""
    configuration = k8s_client.Configuration()
    in_cluster = settings.kubeconfig is None
    try:
        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            await k8s_config.load_kube_config(
                config_file=str(settings.kubeconfig), client_configuration=configuration
            )
    except (k8s_config.ConfigException, OSError) as exc:
        where = (
            "in-cluster service account" if in_cluster else f"--kubeconfig {settings.kubeconfig}"
        )
        raise StartupError(f"--runtime kubernetes: cannot load the {where}: {exc}") from None
    via = settings.k8s_route_via
    kubernetes = replace(
        settings.kubernetes,
        via_service=via == "service" or (via == "auto" and in_cluster),
    )
    runtime = KubernetesRuntime(
        k8s_client.ApiClient(configuration),
        platform_id=identity,
        settings=kubernetes,
        prune_images=prune,
    )
    try:
        await runtime.check_reachable()
    except ReleaseFailed as exc:
        await runtime.close()
        raise StartupError(f"--runtime kubernetes: {exc}") from None
    return runtime


def _docker_client(settings: RuntimeSettings, *, need_network: bool) -> docker.DockerClient:
    """The engine that builds images (and, for the docker runtime, runs them)."""
    ca_bundle = settings.build.ca_bundle
    if ca_bundle is not None and not ca_bundle.is_file():
        raise StartupError(f"--build-ca-bundle {ca_bundle}: no such file")
    try:
        client = docker.from_env()
        client.ping()
        if need_network and settings.docker_network != HOST_NETWORK:
            client.networks.get(settings.docker_network)
    except docker.errors.NotFound:
        raise StartupError(
            f"--docker-network {settings.docker_network}: no such network on the engine"
            f" (create it: docker network create {settings.docker_network})"
        ) from None
    except docker.errors.DockerException as exc:
        raise StartupError(
            f"--runtime {settings.kind}: cannot reach the Docker engine that builds job images"
            f" ({exc}); start it with scripts/setup-docker"
        ) from None
    return client
