"""The docker runtime: each instance is a container of the release's image.

Containers are named `rt-<name>-<version>-r<release>-<i>` and labelled like their image (plus
`racetrack.platform`, so that several platforms can share one engine). Network mode:
- `host` (development): every container shares the host's network and listens on its own
  loopback port, which this runtime chooses and passes as `$PORT`;
- a named network (production): containers listen on their usual port and are reached by name,
  which needs the platform on that network too.
The engine restarts crashed containers (`unless-stopped`) and keeps their logs. Containers
outlive the platform: after a restart they are adopted, not started again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import docker
import docker.errors
from docker.models.containers import Container

from buildpacks.build import ImageArtifact
from controller.runtimes.base import (
    CrashHandler,
    Instance,
    InstanceFailed,
    InstanceSpec,
    free_port,
)
from controller.runtimes.limits import MAX_TASKS, Limits
from controller.runtimes.probes import PROBE_TIMEOUT, probe_once, wait_until_ready
from controller.runtimes.resources import docker_limits

log = logging.getLogger("racetrack.runtime.docker")

HOST_NETWORK = "host"
DROPPED_CAPABILITIES = ("NET_RAW", "MKNOD", "AUDIT_WRITE", "SETFCAP")
DEFAULT_PORT = 7000
LOG_TAIL_LINES = 5


@dataclass(eq=False)
class DockerInstance:
    spec: InstanceSpec
    container_id: str
    url: str
    restarts_before: int = 0  # the engine's restart count when we started or adopted it

    @property
    def name(self) -> str:
        return self.spec.name


class DockerRuntime:
    name = "docker"
    artifact_kind = ImageArtifact.kind

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        platform_id: str,
        network: str = HOST_NETWORK,
        host: str = "127.0.0.1",
        shutdown_grace: float = 10.0,
    ) -> None:
        self._client = client
        self._platform_id = platform_id
        self._network = network
        self._host = host
        self._shutdown_grace = shutdown_grace
        self._session: aiohttp.ClientSession | None = None
        self.on_crash: CrashHandler | None = None  # the engine restarts crashed containers

    # what a container looks like

    def labels(self, spec: InstanceSpec) -> dict[str, str]:
        return {
            "racetrack.platform": self._platform_id,
            "racetrack.job": spec.job,
            "racetrack.version": spec.version,
            "racetrack.release": str(spec.release),
            "racetrack.instance": str(spec.index),
        }

    def container_config(self, spec: InstanceSpec, port: int) -> dict[str, Any]:
        """Keyword arguments for `containers.run` (kept pure so that it can be checked alone)."""
        artifact = ImageArtifact.from_record(spec.artifact)
        host_mode = self._network == HOST_NETWORK
        env = {
            **spec.env,  # the job's: its manifest, secrets and config
            **artifact.env,  # how the image runs: wins over those
            "PORT": str(port),
            "LISTEN_HOST": self._host if host_mode else "0.0.0.0",
            "RACETRACK_SHUTDOWN_GRACE": str(self._shutdown_grace * 0.8),
        }
        config: dict[str, Any] = {
            "image": artifact.image_id,
            "name": spec.name,
            "labels": self.labels(spec),
            "environment": env,
            "detach": True,
            "init": True,  # PID 1 forwards SIGTERM and reaps: any server stops gracefully
            "restart_policy": {"Name": "unless-stopped"},
            "log_config": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
            # no privilege the job did not ask for: no setuid gains, no raw sockets (with the
            # host's network they would see every call on loopback), no device nodes
            "security_opt": ["no-new-privileges"],
            "cap_drop": list(DROPPED_CAPABILITIES),
            "pids_limit": MAX_TASKS,
            **docker_limits(spec.resources),
        }
        if host_mode:
            config["network_mode"] = HOST_NETWORK
        else:
            config["network"] = self._network
            config["hostname"] = spec.name
        return config

    def isolation(self, spec: InstanceSpec) -> str:
        limits = Limits.of(spec.resources).describe()
        return (
            "isolated in a container (no data dir, no engine socket, no raw sockets,"
            f" no-new-privileges); limits: {limits} (docker)"
        )

    def _port_for(self, artifact: ImageArtifact) -> int:
        if artifact.port is not None:
            return artifact.port  # a fixed port (docker-proxy's user module)
        return free_port(self._host) if self._network == HOST_NETWORK else DEFAULT_PORT

    def _url(self, spec: InstanceSpec, port: int) -> str:
        host = self._host if self._network == HOST_NETWORK else spec.name
        return f"http://{host}:{port}"

    # lifecycle

    async def start(self, spec: InstanceSpec) -> DockerInstance:
        return await asyncio.to_thread(self._start, spec)

    def _start(self, spec: InstanceSpec) -> DockerInstance:
        artifact = ImageArtifact.from_record(spec.artifact)
        port = self._port_for(artifact)
        self._remove_leftover(spec)
        try:
            container = self._client.containers.run(**self.container_config(spec, port))
        except docker.errors.ImageNotFound:
            raise InstanceFailed(f"image {artifact.image} is gone from the engine") from None
        except docker.errors.APIError as exc:
            raise InstanceFailed(f"cannot start {spec.name}: {exc.explanation or exc}") from None
        log.info("started %s (%s, port %d)", spec.name, container.short_id, port)
        return DockerInstance(spec, container.id or "", self._url(spec, port))

    def _remove_leftover(self, spec: InstanceSpec) -> None:
        """A container of this name left by a crashed deploy of ours is removed; one that
        belongs to another platform on the same engine is a clear error."""
        try:
            existing = self._client.containers.get(spec.name)
        except docker.errors.NotFound:
            return
        owner = existing.labels.get("racetrack.platform")
        if owner != self._platform_id:
            raise InstanceFailed(
                f"a container named {spec.name} already exists and is not this"
                f" platform's (racetrack.platform={owner!r}); remove it or rename the job"
            )
        existing.remove(force=True)

    def _container(self, instance: DockerInstance) -> Container:
        return self._client.containers.get(instance.container_id)

    def _logs(self, instance: DockerInstance) -> str:
        try:
            raw = self._container(instance).logs(tail=LOG_TAIL_LINES)
        except docker.errors.APIError:
            return ""
        lines = raw.decode("utf-8", "replace").splitlines()
        return " | ".join(line.rstrip() for line in lines if line.strip())

    def _failure(self, instance: DockerInstance) -> str | None:
        try:
            container = self._container(instance)
        except docker.errors.NotFound:
            return f"{instance.name} was removed before it was ready"
        state = container.attrs["State"]
        crashed = state["Status"] in ("exited", "dead") or state.get("Restarting")
        if crashed or container.attrs.get("RestartCount", 0) > instance.restarts_before:
            return (
                f"{instance.name} exited with status {state.get('ExitCode')} before it was"
                f" ready: {self._logs(instance)}"
            )
        return None

    async def wait_ready(self, instance: Instance, timeout: float) -> None:
        assert isinstance(instance, DockerInstance)
        artifact = ImageArtifact.from_record(instance.spec.artifact)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=PROBE_TIMEOUT)
        session = self._session

        async def failure() -> str | None:
            return await asyncio.to_thread(self._failure, instance)

        async def tail() -> str:
            return await asyncio.to_thread(self._logs, instance)

        await wait_until_ready(
            instance.name,
            timeout,
            ready=lambda: probe_once(session, instance.name, instance.url, artifact.probe),
            failure=failure,
            log_tail=tail,
        )

    async def adopt(self, spec: InstanceSpec) -> DockerInstance | None:
        return await asyncio.to_thread(self._adopt, spec)

    def _adopt(self, spec: InstanceSpec) -> DockerInstance | None:
        artifact = ImageArtifact.from_record(spec.artifact)
        try:
            container = self._client.containers.get(spec.name)
        except docker.errors.NotFound:
            return None
        same = container.labels == {**container.labels, **self.labels(spec)}
        if not same or container.status != "running" or container.image.id != artifact.image_id:
            return None
        env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"] if "=" in item)
        port = int(env.get("PORT", DEFAULT_PORT))
        log.info("adopted %s (%s)", spec.name, container.short_id)
        restarts = int(container.attrs.get("RestartCount", 0))
        return DockerInstance(spec, container.id or "", self._url(spec, port), restarts)

    def exclusive_port(self, artifact: Mapping[str, Any]) -> int | None:
        port = ImageArtifact.from_record(artifact).port
        return port if self._network == HOST_NETWORK else None

    def port_taken(self, port: int) -> bool:
        """Whether something on the host already accepts connections on `port`."""
        try:
            socket.create_connection((self._host, port), timeout=1).close()
        except OSError:
            return False
        return True

    async def stop(self, instance: Instance) -> None:
        assert isinstance(instance, DockerInstance)
        await asyncio.to_thread(self._stop, instance)

    def _stop(self, instance: DockerInstance) -> None:
        try:
            container = self._container(instance)
        except docker.errors.NotFound:
            return
        container.stop(timeout=int(self._shutdown_grace))  # SIGTERM, SIGKILL after the grace
        container.remove(force=True)
        log.info("stopped and removed %s", instance.name)

    async def logs(self, instance: Instance, tail: int, follow: bool) -> AsyncIterator[str]:
        """The engine's log of the container, read in a thread and handed over line by line."""
        assert isinstance(instance, DockerInstance)
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        stop = threading.Event()

        def read() -> None:
            try:
                stream = self._container(instance).logs(stream=True, follow=follow, tail=tail)
                pending = b""
                for chunk in stream:
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for line in complete:
                        loop.call_soon_threadsafe(lines.put_nowait, line.decode("utf-8", "replace"))
                    if stop.is_set():
                        stream.close()
                        break
                if pending:
                    loop.call_soon_threadsafe(lines.put_nowait, pending.decode("utf-8", "replace"))
            except docker.errors.APIError:
                pass
            finally:
                loop.call_soon_threadsafe(lines.put_nowait, None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            while (line := await lines.get()) is not None:
                yield line
        finally:
            stop.set()  # the reader stops at its next line (a followed quiet log: at exit)

    async def artifact_available(self, artifact: Mapping[str, Any]) -> bool:
        image_id = ImageArtifact.from_record(artifact).image_id
        try:
            await asyncio.to_thread(self._client.images.get, image_id)
        except docker.errors.ImageNotFound:
            return False
        return True

    async def restarts(self, instance: Instance) -> int:
        assert isinstance(instance, DockerInstance)
        try:
            container = await asyncio.to_thread(self._container, instance)
        except docker.errors.NotFound:
            return 0
        return int(container.attrs.get("RestartCount", 0)) - instance.restarts_before

    async def prune(self, job: str, keep: int, in_use: set[str]) -> list[str]:
        return await asyncio.to_thread(self._prune, job, keep, in_use)

    def _prune(self, job: str, keep: int, in_use: set[str]) -> list[str]:
        """Remove this platform's images of `job` beyond its newest `keep` releases, found by
        their labels (a tag can be taken over by another platform on the same engine)."""
        images = self._client.images.list(
            filters={"label": [f"racetrack.job={job}", f"racetrack.platform={self._platform_id}"]}
        )
        images.sort(key=lambda image: int(image.labels.get("racetrack.release", "0")), reverse=True)
        removed: list[str] = []
        for image in images[keep:]:
            if image.id in in_use or in_use.intersection(image.tags):
                continue
            try:
                for tag in image.tags:
                    self._client.images.remove(tag)
                if not image.tags:
                    self._client.images.remove(image.id)
            except docker.errors.APIError as exc:  # e.g. a stopped container still uses it
                log.info("kept image %s: %s", image.tags or image.id, exc.explanation or exc)
                continue
            removed.extend(image.tags or [image.id or ""])
        return removed

    async def remove_strays(self, keep: set[str]) -> list[str]:
        return await asyncio.to_thread(self._remove_strays, keep)

    def _remove_strays(self, keep: set[str]) -> list[str]:
        """Containers of this platform that serve nothing (left by a deploy or a retirement the
        platform did not live to finish): remove them, or they would run, and hold their
        images, for ever."""
        removed = []
        strays = self._client.containers.list(
            all=True, filters={"label": f"racetrack.platform={self._platform_id}"}
        )
        for container in strays:
            if container.name not in keep:
                container.remove(force=True)
                removed.append(container.name or "")
        return removed

    async def close(self) -> None:
        """Containers keep running (the engine owns them); a restarted platform adopts them."""
        if self._session is not None:
            await self._session.close()
