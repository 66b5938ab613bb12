"""`racetrack serve`: every component in one asyncio process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from buildpacks.build import BuildIsolation, Buildpack
from buildpacks.docker_http import DockerHttpBuildpack
from buildpacks.docker_proxy import DockerProxyBuildpack
from buildpacks.golang import GolangBuildpack
from buildpacks.python3 import Python3Buildpack
from controller.accounts import Accounts
from controller.api import make_api_app
from controller.authorization import CallAuthorizer
from controller.build_step import BuildStep
from controller.errors import StartupError
from controller.keyfiles import (
    load_or_create_host_key,
    load_or_create_secrets_key,
    load_or_create_token_key,
)
from controller.permissions import Permissions
from controller.releases import DeploySettings, Releases, make_releases
from controller.runtime_setup import RuntimeSettings, make_runtime
from controller.runtimes.base import Runtime
from controller.runtimes.local import LocalRuntime
from controller.runtimes.sandbox import BuildSandbox
from controller.services import Services
from controller.ssh_operations import SshOperations
from controller.store import Store
from controller.store.sealing import SecretBox
from controller.tokens import TokenMinter
from gitreceiver.pack_limits import PackLimits
from gitreceiver.repos import CheckoutLimits, RepoStore
from gitreceiver.server import GitReceiver
from router.http_server import serve_http
from router.proxy import Router

log = logging.getLogger("racetrack")
# seconds an idle kept-alive HTTP connection is kept (above nginx's 60 s upstream keepalive)
KEEPALIVE_TIMEOUT = 75.0
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    ssh_port: int = 2222
    router_port: int = 7105
    api_port: int = 7102
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    admin_keys: tuple[Path, ...] = ()
    public_url: str | None = None
    auth: bool = True
    auto_approve_public_endpoints: bool = False  # a push approves what its manifest declares
    ready_timeout: float = 180.0
    keep_releases: int = 5
    drain_grace: float = 30.0
    deploy_wait: float = 600.0
    ssh_keepalive: float = 15.0
    auth_cache: float = 10.0
    max_push_bytes: int = 100 * 1024 * 1024
    max_push_inflated: int | None = None  # what a push may inflate to (default: 10 times the above)
    max_object_bytes: int = 100 * 1024 * 1024  # one file (blob) of a push, inflated
    git_idle_timeout: float = 120.0  # a git client's silence before its session is closed
    max_git_sessions_per_user: int = 8
    name_claim_grace: float = 600.0  # a failed first deploy holds the job name this long
    secrets_key_file: Path | None = None  # default: secrets.key in the data dir
    upstream_timeout: float = 300.0  # a job's time to start answering a call (then: 504)
    header_timeout: float = 10.0  # a client's time to send a request's head (then: closed)
    reconcile_interval: float = 30.0  # how often what runs is converged with what serves


def _os_reason(exc: OSError) -> str:
    """`Address already in use`, not asyncio's wrapped repetition of the address."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


async def _listen(starting: Awaitable[T], host: str, port: int, what: str) -> T:
    """Await a server's start; a bind failure becomes a one-line StartupError."""
    try:
        return await starting
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port} ({what}): {_os_reason(exc)}") from None


async def _serve_http(
    app: web.Application, host: str, port: int, what: str, header_timeout: float
) -> web.AppRunner:
    """Serve with a header-read timeout and bounded keep-alive (see router.http_server)."""
    return await _listen(
        serve_http(
            app,
            host,
            port,
            header_timeout=header_timeout,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
        ),
        host,
        port,
        what,
    )


def _build_isolation(runtime: Runtime, store: Store) -> Callable[[str], BuildIsolation | None]:
    """The sandbox for a job's build steps that run its code: the local runtime's, as the job
    family's user (image builds run those steps in build containers)."""
    sandbox = runtime.sandbox if isinstance(runtime, LocalRuntime) else None
    if sandbox is None:
        return lambda _job: None
    return lambda job: BuildSandbox(sandbox, sandbox.uid_for(store.family_slot(job)))


def _runtime_detail(runtime: RuntimeSettings) -> str:
    if runtime.kind == "docker":
        return f" (network {runtime.docker_network})"
    if runtime.kind == "kubernetes":
        return f" (namespace {runtime.kubernetes.namespace}, registry {runtime.build.registry})"
    return ""


@dataclass
class Platform:
    settings: Settings
    _runners: list[web.AppRunner] = field(default_factory=list)
    _receiver: GitReceiver | None = None
    _releases: Releases | None = None
    _store: Store | None = None
    banner: str = ""

    async def start(self) -> None:
        settings = self.settings
        data = settings.data_dir.resolve()
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        data.chmod(0o700)  # the platform's alone: its keys, database, repos and artifacts
        runtime, image_builder = await make_runtime(settings.runtime, data)
        secrets_key = load_or_create_secrets_key(data, settings.secrets_key_file)
        self._store = store = Store(data / "racetrack.db", secrets=SecretBox(secrets_key))
        accounts = Accounts(store, TokenMinter(load_or_create_token_key(data)))
        for key_path in settings.admin_keys:
            user = accounts.register_admin_key(key_path)
            if user is not None:
                log.info("registered %s as admin user %r", key_path, user.name)
        single_user = settings.runtime.kind == "local" and settings.runtime.insecure_single_user
        if single_user and len(store.users()) > 1:
            names = ", ".join(u.name for u in store.users())
            raise StartupError(
                f"--insecure-single-user: this platform has {len(store.users())} users"
                f" ({names}); unisolated jobs would let each of them act as any other"
            )

        permissions = Permissions(store)
        authorizer = CallAuthorizer(accounts, permissions, settings.auth_cache)
        store.auth_listeners.append(authorizer.invalidate)
        router = Router(
            authorizer if settings.auth else None, upstream_timeout=settings.upstream_timeout
        )
        runner = await _serve_http(
            router.make_app(),
            settings.host,
            settings.router_port,
            "router",
            settings.header_timeout,
        )
        self._runners.append(runner)
        router_port = runner.addresses[0][1]
        shown_host = display_host(settings.host)
        public_url = (settings.public_url or f"http://{shown_host}:{router_port}").rstrip("/")

        max_inflated = settings.max_push_inflated or 10 * settings.max_push_bytes
        repos = RepoStore(data / "repos", CheckoutLimits(max_bytes=max_inflated))
        python3 = Python3Buildpack(data / "artifacts", data / "buildcache")
        buildpacks: dict[str, Buildpack] = {
            "python3": python3,
            "docker-http": DockerHttpBuildpack(),
            "docker-proxy": DockerProxyBuildpack(),
            "golang": GolangBuildpack(data / "artifacts", data / "buildcache", data / "work"),
        }
        build = BuildStep(
            repos=repos,
            buildpacks=buildpacks,
            artifact_kind=runtime.artifact_kind,
            work_dir=data / "work",
            image_builder=image_builder,
            isolation=_build_isolation(runtime, store),
        )
        for leftover in [*build.remove_stale_checkouts(), *python3.remove_incomplete()]:
            log.warning("removed %s: left by a build that did not finish", leftover)
        self._releases = releases = make_releases(
            store=store,
            build=build,
            runtime=runtime,
            publish=router.publish,
            drain=router.drain,
            family_token=accounts.family_token,
            upstream_key=accounts.upstream_key,
            settings=DeploySettings(
                public_url=public_url,
                ready_timeout=settings.ready_timeout,
                keep_releases=settings.keep_releases,
                drain_grace=settings.drain_grace,
                lock_timeout=settings.deploy_wait,
                reconcile_interval=settings.reconcile_interval,
                auto_approve_public_endpoints=settings.auto_approve_public_endpoints,
            ),
        )
        await releases.restore()  # quick: job versions come back in the background
        services = Services(
            store,
            accounts,
            permissions,
            releases,
            auth_required=settings.auth,
            single_user=single_user,
            claim_grace=settings.name_claim_grace,
        )
        host_key = load_or_create_host_key(data)
        self._receiver = GitReceiver(
            SshOperations(services),
            repos,
            host_key,
            keepalive_interval=settings.ssh_keepalive,
            max_push_bytes=settings.max_push_bytes,
            pack_limits=PackLimits(
                max_object_bytes=settings.max_object_bytes,
                max_inflated_bytes=max_inflated,
            ),
            idle_timeout=settings.git_idle_timeout,
            max_git_sessions_per_user=settings.max_git_sessions_per_user,
        )
        ssh_port = await _listen(
            self._receiver.start(settings.host, settings.ssh_port),
            settings.host,
            settings.ssh_port,
            "ssh",
        )
        services.ssh_url = f"ssh://git@{shown_host}:{ssh_port}"
        releases.ssh_command = f"ssh -p {ssh_port} git@{shown_host}"
        router.token_command = f"{releases.ssh_command} auth:token"
        runner = await _serve_http(
            make_api_app(services), settings.host, settings.api_port, "api", settings.header_timeout
        )
        self._runners.append(runner)
        api_port = runner.addresses[0][1]

        fingerprint = host_key.get_fingerprint("sha256")
        self.banner = "\n".join(
            [
                f"Racetrack is serving from {data}",
                f"  push:      git remote add racetrack {services.ssh_url}/<job>"
                " && git push racetrack main",
                f"  commands:  ssh -p {ssh_port} git@{shown_host} help",
                f"  token:     {router.token_command}",
                f"  jobs:      {public_url}/pub/job/<job>/<version>/",
                f"  api:       http://{shown_host}:{api_port}/api/v1/jobs",
                f"  host key:  {fingerprint}",
                f"  runtime:   {runtime.name}{_runtime_detail(settings.runtime)}",
                f"  auth:      {'X-Racetrack-Auth token required' if settings.auth else 'off'}"
                + (
                    " (public endpoints approved at push: --auto-approve-public-endpoints)"
                    if settings.auth and settings.auto_approve_public_endpoints
                    else ""
                ),
            ]
        )

    async def stop(self) -> None:
        """Stop accepting, stop every job instance, close the store."""
        if self._receiver is not None:
            await self._receiver.stop()
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self._releases is not None:
            await self._releases.shutdown()
        if self._store is not None:
            self._store.close()

    async def run(self, on_ready: Callable[[str], None]) -> None:
        """Start, report, and serve until SIGTERM or SIGINT; then shut down cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await self.start()
            on_ready(self.banner)
            await stop.wait()
            log.info("shutting down")
        finally:
            await self.stop()
