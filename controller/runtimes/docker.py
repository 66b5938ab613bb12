"""The docker runtime: each replica of a release is a container of the release's image.

Containers are named `<release name>-<i>` (see `names.py`) and labelled like their image (plus
`racetrack.platform`, so that several platforms can share one engine). Network mode:
- `host` (development): every container shares the host's network and listens on its own
  loopback port, which this runtime chooses and passes as `$PORT`;
- a named network (production): containers listen on their usual port and are reached by name,
  which needs the platform on that network too.
The engine restarts crashed containers (`unless-stopped`) and keeps their logs; its event
stream tells this runtime when one dies (routed around until ready again), and `reconcile`
starts again one that was removed by hand. Containers outlive the platform: after a restart
they are adopted, not started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

import aiohttp
import docker
import docker.errors
from docker.models.containers import Container

from buildpacks.build import Artifact, ImageArtifact
from controller.runtimes.base import (
    EventKind,
    EventQueue,
    FailureReason,
    OwnedRelease,
    ReleaseFailed,
    ReleaseSpec,
    Replica,
    RunningRelease,
    RuntimeEvent,
    free_port,
    merged_lines,
)
from controller.runtimes.limits import MAX_TASKS, Limits
from controller.runtimes.probes import PROBE_TIMEOUT, probe_once, wait_until_ready
from controller.runtimes.resources import docker_limits

log = logging.getLogger("racetrack.runtime.docker")

HOST_NETWORK = "host"
DROPPED_CAPABILITIES = ("NET_RAW", "MKNOD", "AUDIT_WRITE", "SETFCAP")
DEFAULT_PORT = 7000
LOG_TAIL_LINES = 5
RECOVER_PROBE_MAX = 5.0  # seconds between probes of a replica that is not back yet


@dataclass(eq=False)
class DockerReplica:
    name: str
    index: int
    container_id: str
    url: str
    restarts_before: int = 0  # the engine's restart count when we started or adopted it
    up: bool = False


@dataclass(eq=False)
class DockerRelease:
    spec: ReleaseSpec
    members: list[DockerReplica]
    stopped: bool = False
    started: bool = False  # every container was created (reconcile may bring back only then)

    def replicas(self) -> list[Replica]:
        return [Replica(r.name, r.url, r.up) for r in self.members]


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
        self._releases: dict[str, DockerRelease] = {}
        self._events = EventQueue()
        self._watching: threading.Thread | None = None
        self._engine_events: Any = None  # the engine's event stream, closed by close()
        self._recovering: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # where engine events are handled
        self._closing = threading.Event()

    @property
    def exclusive_ports(self) -> bool:
        """In host network mode a fixed port is the machine's own: two releases cannot share it."""
        return self._network == HOST_NETWORK

    # what a container looks like

    def labels(self, spec: ReleaseSpec, index: int) -> dict[str, str]:
        return {
            "racetrack.platform": self._platform_id,
            "racetrack.job": spec.job,
            "racetrack.version": spec.version,
            "racetrack.release": str(spec.release),
            "racetrack.release-name": spec.name,
            "racetrack.instance": str(index),
        }

    def container_config(self, spec: ReleaseSpec, index: int, port: int) -> dict[str, Any]:
        """Keyword arguments for `containers.run` (kept pure so that it can be checked alone)."""
        artifact = spec.artifact
        assert isinstance(artifact, ImageArtifact)
        host_mode = self._network == HOST_NETWORK
        env = {
            **spec.env,  # the job's: its manifest, secrets and config
            **artifact.env,  # how the image runs: wins over those
            "PORT": str(port),
            "LISTEN_HOST": self._host if host_mode else "0.0.0.0",
            "RACETRACK_SHUTDOWN_GRACE": str(self._shutdown_grace * 0.8),
        }
        name = spec.replica_name(index)
        config: dict[str, Any] = {
            "image": artifact.image_id,
            "name": name,
            "labels": self.labels(spec, index),
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
            config["hostname"] = name
        return config

    def isolation(self, spec: ReleaseSpec) -> str:
        limits = Limits.of(spec.resources).describe()
        return (
            "isolated in a container (no data dir, no engine socket, no raw sockets,"
            f" no-new-privileges); limits: {limits} (docker)"
        )

    def _port_for(self, artifact: ImageArtifact) -> int:
        if artifact.port is not None:
            return artifact.port  # a fixed port (docker-proxy's user module)
        return free_port(self._host) if self._network == HOST_NETWORK else DEFAULT_PORT

    def _url(self, name: str, port: int) -> str:
        host = self._host if self._network == HOST_NETWORK else name
        return f"http://{host}:{port}"

    # a release

    async def start(self, spec: ReleaseSpec) -> DockerRelease:
        self._watch_engine()
        release = DockerRelease(spec, [])
        self._releases[spec.name] = release
        try:
            for index in range(spec.replicas):
                release.members.append(await asyncio.to_thread(self._start, spec, index))
        except BaseException:
            await asyncio.shield(self.stop(release))
            raise
        release.started = True
        return release

    def _start(self, spec: ReleaseSpec, index: int) -> DockerReplica:
        artifact = spec.artifact
        assert isinstance(artifact, ImageArtifact)
        port = self._port_for(artifact)
        name = spec.replica_name(index)
        self._remove_leftover(name)
        if artifact.port is not None and self.exclusive_ports and self._port_taken(port):
            raise ReleaseFailed(
                FailureReason.START_FAILED,
                f"port {port} is in use on this host by a program outside Racetrack",
            )
        try:
            container = self._client.containers.run(**self.container_config(spec, index, port))
        except docker.errors.ImageNotFound:
            raise ReleaseFailed(
                FailureReason.START_FAILED, f"image {artifact.image} is gone from the engine"
            ) from None
        except docker.errors.APIError as exc:
            raise ReleaseFailed(
                FailureReason.START_FAILED, f"cannot start {name}: {exc.explanation or exc}"
            ) from None
        log.info("started %s (%s, port %d)", name, container.short_id, port)
        return DockerReplica(name, index, container.id or "", self._url(name, port))

    def _port_taken(self, port: int) -> bool:
        """Whether something on the host already accepts connections on `port`."""
        try:
            socket.create_connection((self._host, port), timeout=1).close()
        except OSError:
            return False
        return True

    def _remove_leftover(self, name: str) -> None:
        """A container of this name left by a crashed deploy of ours is removed; one that
        belongs to another platform on the same engine is a clear error."""
        try:
            existing = self._client.containers.get(name)
        except docker.errors.NotFound:
            return
        owner = existing.labels.get("racetrack.platform")
        if owner != self._platform_id:
            raise ReleaseFailed(
                FailureReason.START_FAILED,
                f"a container named {name} already exists and is not this"
                f" platform's (racetrack.platform={owner!r}); remove it or rename the job",
            )
        existing.remove(force=True)

    async def adopt(self, spec: ReleaseSpec) -> DockerRelease | None:
        members = []
        for index in range(spec.replicas):
            replica = await asyncio.to_thread(self._adopt, spec, index)
            if replica is None:
                return None
            members.append(replica)
        self._watch_engine()
        release = DockerRelease(spec, members, started=True)
        self._releases[spec.name] = release
        return release

    def _adopt(self, spec: ReleaseSpec, index: int) -> DockerReplica | None:
        artifact = spec.artifact
        assert isinstance(artifact, ImageArtifact)
        name = spec.replica_name(index)
        try:
            container = self._client.containers.get(name)
        except docker.errors.NotFound:
            return None
        labels = self.labels(spec, index)
        same = container.labels == {**container.labels, **labels}
        if not same or container.status != "running" or container.image.id != artifact.image_id:
            return None
        env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"] if "=" in item)
        port = int(env.get("PORT", DEFAULT_PORT))
        log.info("adopted %s (%s)", name, container.short_id)
        restarts = int(container.attrs.get("RestartCount", 0))
        return DockerReplica(name, index, container.id or "", self._url(name, port), restarts)

    async def wait_ready(self, release: RunningRelease, timeout: float) -> None:
        assert isinstance(release, DockerRelease)
        await asyncio.gather(*(self._wait_replica(release, r, timeout) for r in release.members))

    def _session_for_probes(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=PROBE_TIMEOUT)
        return self._session

    async def _wait_replica(
        self, release: DockerRelease, replica: DockerReplica, timeout: float
    ) -> None:
        artifact = release.spec.artifact
        session = self._session_for_probes()

        async def failure() -> ReleaseFailed | None:
            return await asyncio.to_thread(self._failure, release, replica)

        async def tail() -> str:
            return await asyncio.to_thread(self._logs, replica)

        await wait_until_ready(
            replica.name,
            timeout,
            ready=lambda: probe_once(session, replica.name, replica.url, artifact.probe),
            failure=failure,
            log_tail=tail,
        )
        replica.up = True

    def _container(self, replica: DockerReplica) -> Container:
        return self._client.containers.get(replica.container_id)

    def _logs(self, replica: DockerReplica) -> str:
        try:
            raw = self._container(replica).logs(tail=LOG_TAIL_LINES)
        except docker.errors.APIError:
            return ""
        lines = raw.decode("utf-8", "replace").splitlines()
        return " | ".join(line.rstrip() for line in lines if line.strip())

    def _failure(self, release: DockerRelease, replica: DockerReplica) -> ReleaseFailed | None:
        try:
            container = self._container(replica)
        except docker.errors.NotFound:
            return ReleaseFailed(
                FailureReason.CRASHED, f"{replica.name} was removed before it was ready"
            )
        state = container.attrs["State"]
        crashed = state["Status"] in ("exited", "dead") or state.get("Restarting")
        if crashed or container.attrs.get("RestartCount", 0) > replica.restarts_before:
            if state.get("OOMKilled"):
                memory = release.spec.resources.memory_max if release.spec.resources else None
                return ReleaseFailed(
                    FailureReason.OUT_OF_MEMORY,
                    f"{replica.name} was killed: out of memory (resources.memory_max {memory})",
                )
            return ReleaseFailed(
                FailureReason.CRASHED,
                f"{replica.name} exited with status {state.get('ExitCode')} before it was"
                f" ready: {self._logs(replica)}",
            )
        return None

    def upstreams(self, release: RunningRelease) -> list[str]:
        assert isinstance(release, DockerRelease)
        return [r.url for r in release.members if r.up]

    async def stop(self, release: RunningRelease) -> None:
        assert isinstance(release, DockerRelease)
        release.stopped = True
        for replica in release.members:
            replica.up = False
        await asyncio.gather(
            *(asyncio.to_thread(self._stop, r) for r in release.members), return_exceptions=True
        )
        if self._releases.get(release.spec.name) is release:
            del self._releases[release.spec.name]

    def _stop(self, replica: DockerReplica) -> None:
        try:
            container = self._container(replica)
        except docker.errors.NotFound:
            return
        container.stop(timeout=int(self._shutdown_grace))  # SIGTERM, SIGKILL after the grace
        container.remove(force=True)
        log.info("stopped and removed %s", replica.name)

    async def list_owned(self) -> list[OwnedRelease]:
        containers = await asyncio.to_thread(self._owned_containers)
        owned: dict[str, OwnedRelease] = {}
        for container in containers:
            labels = container.labels
            name = labels.get("racetrack.release-name") or _release_of(container.name or "")
            with contextlib.suppress(KeyError, ValueError):
                owned[name] = OwnedRelease(
                    name,
                    labels["racetrack.job"],
                    labels["racetrack.version"],
                    int(labels["racetrack.release"]),
                )
        return list(owned.values())

    def _owned_containers(self) -> list[Container]:
        """This platform's replicas (labelled `racetrack.instance`): never the containers of
        an image build under way, which carry the image's labels but are the builder's."""
        labels = [f"racetrack.platform={self._platform_id}", "racetrack.instance"]
        return list(
            self._client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)
        )

    def events(self) -> AsyncIterator[RuntimeEvent]:
        return self._events.stream()

    async def reconcile(self, desired: Collection[str]) -> list[str]:
        return await asyncio.to_thread(self._reconcile, set(desired))

    def _reconcile(self, desired: set[str]) -> list[str]:
        """Containers of this platform that serve nothing (left by a deploy or a retirement the
        platform did not live to finish) are removed, or they would run, and hold their
        images, for ever. A held release's container that is gone (removed by hand) is
        started again."""
        changes = []
        present: set[str] = set()
        for container in self._owned_containers():
            name = container.name or ""
            release = container.labels.get("racetrack.release-name") or _release_of(name)
            # decided now, after the listing: a release started meanwhile is held by now
            if release not in desired and release not in self._releases:
                with contextlib.suppress(docker.errors.NotFound):  # gone meanwhile: as good
                    container.remove(force=True)
                changes.append(f"removed {name}: it served no release")
            else:
                present.add(name)
                changes += self._restart_if_stopped(container)
        for release in list(self._releases.values()):
            if not release.started:
                continue  # its start() is still creating containers
            for replica in release.members:
                if release.stopped or replica.name in present:
                    continue
                try:
                    fresh = self._start(release.spec, replica.index)
                except ReleaseFailed as exc:
                    changes.append(f"could not start {replica.name} again: {exc}")
                    continue
                release.members[replica.index] = fresh
                changes.append(f"started {replica.name} again: its container was gone")
                self._loop_call(self._recover, release, fresh)
        return changes

    def _restart_if_stopped(self, container: Container) -> list[str]:
        """A held replica's container stopped by hand (`docker stop`: the engine's restart
        policy leaves it down) is started again; one the engine is restarting is its own."""
        state = container.attrs.get("State", {})
        if container.status not in ("exited", "created") or state.get("Restarting"):
            return []
        found = self._find(container.id or "")
        if found is None or found[0].stopped:
            return []
        release, replica = found
        try:
            container.start()
        except docker.errors.APIError as exc:
            return [f"could not start {replica.name} again: {exc.explanation or exc}"]
        replica.up = False
        self._loop_call(self._recover, release, replica)
        return [f"started {replica.name} again: its container was stopped"]

    # what the engine reports

    def _watch_engine(self) -> None:
        """Follow the engine's container events (in a thread: the SDK's stream blocks), so
        that a replica that dies, or is removed by hand, is routed around at once."""
        if self._watching is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._watching = threading.Thread(target=self._follow_engine, daemon=True)
        self._watching.start()

    def _follow_engine(self) -> None:
        """The engine's event stream, opened again (with backoff) whenever it ends or fails,
        from the time of the last event seen, until the runtime closes."""
        since: int | None = None
        retry = 1.0
        while not self._closing.is_set():
            try:
                self._engine_events = self._client.events(
                    decode=True,
                    since=since,
                    filters={
                        "type": "container",
                        "label": f"racetrack.platform={self._platform_id}",
                    },
                )
                retry = 1.0
                for event in self._engine_events:
                    since = int(event.get("time") or 0) or since
                    status = event.get("status") or event.get("Action") or ""
                    if status in ("die", "destroy", "oom") and self._loop is not None:
                        self._loop.call_soon_threadsafe(self._replica_down, event.get("id", ""))
            except Exception as exc:  # the engine restarted, the socket broke: follow again
                if self._closing.is_set():
                    return
                log.info("engine events ended (%s); following again in %.0fs", exc, retry)
            if self._closing.wait(retry):
                return
            retry = min(retry * 2, 30.0)

    def _find(self, container_id: str) -> tuple[DockerRelease, DockerReplica] | None:
        for release in self._releases.values():
            for replica in release.members:
                if replica.container_id == container_id:
                    return release, replica
        return None

    def _replica_down(self, container_id: str) -> None:
        found = self._find(container_id)
        if found is None:
            return
        release, replica = found
        if release.stopped or not replica.up:
            return
        replica.up = False
        self._events.put(RuntimeEvent(EventKind.DIED, release.spec.name, replica.name))
        log.warning("%s stopped; routed around until it is ready again", replica.name)
        self._loop_call(self._recover, release, replica)

    def _loop_call(self, recover: Any, release: DockerRelease, replica: DockerReplica) -> None:
        def schedule() -> None:
            task = asyncio.ensure_future(recover(release, replica))
            self._recovering.add(task)
            task.add_done_callback(self._recovering.discard)

        assert self._loop is not None  # set when the first release started or was adopted
        self._loop.call_soon_threadsafe(schedule)

    async def _recover(self, release: DockerRelease, replica: DockerReplica) -> None:
        """Wait until the engine has restarted the replica (or reconcile started a new one)
        and it is ready; then route to it again."""
        session = self._session_for_probes()
        probe = release.spec.artifact.probe
        interval = 0.1
        # no deadline: a job that crash-loops while its database is down is routed again
        # whenever it answers, however long that takes (the engine keeps restarting it)
        while not release.stopped and replica in release.members:
            with contextlib.suppress(ReleaseFailed):
                if await probe_once(session, replica.name, replica.url, probe):
                    replica.up = True
                    self._events.put(
                        RuntimeEvent(EventKind.RESTARTED, release.spec.name, replica.name)
                    )
                    log.info("%s is back", replica.name)
                    return
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, RECOVER_PROBE_MAX)

    async def restarts(self, release: RunningRelease) -> int:
        assert isinstance(release, DockerRelease)
        counts = await asyncio.gather(*(self._restarts(r) for r in release.members))
        return sum(counts)

    async def _restarts(self, replica: DockerReplica) -> int:
        try:
            container = await asyncio.to_thread(self._container, replica)
        except docker.errors.NotFound:
            return 0
        return int(container.attrs.get("RestartCount", 0)) - replica.restarts_before

    def logs(self, release: RunningRelease, tail: int, follow: bool) -> AsyncIterator[str]:
        assert isinstance(release, DockerRelease)
        return merged_lines({r.name: self._replica_logs(r, tail, follow) for r in release.members})

    async def _replica_logs(
        self, replica: DockerReplica, tail: int, follow: bool
    ) -> AsyncIterator[str]:
        """The engine's log of the container, read in a thread and handed over line by line."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        stop = threading.Event()

        def read() -> None:
            try:
                stream = self._container(replica).logs(stream=True, follow=follow, tail=tail)
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

    async def artifact_available(self, artifact: Artifact) -> bool:
        if not isinstance(artifact, ImageArtifact):
            return False
        try:
            await asyncio.to_thread(self._client.images.get, artifact.image_id)
        except docker.errors.ImageNotFound:
            return False
        return True

    async def prune(self, job: str, keep: int, in_use: set[str]) -> list[str]:
        return await asyncio.to_thread(
            prune_images, self._client, self._platform_id, job, keep, in_use
        )

    async def close(self) -> None:
        """Containers keep running (the engine owns them); a restarted platform adopts them."""
        self._closing.set()
        if self._engine_events is not None:
            with contextlib.suppress(Exception):
                self._engine_events.close()
        for task in self._recovering:
            task.cancel()
        self._events.close()
        if self._session is not None:
            await self._session.close()


def prune_images(
    client: docker.DockerClient, platform_id: str, job: str, keep: int, in_use: set[str]
) -> list[str]:
    """Remove this platform's images of `job` beyond its newest `keep` releases, found by
    their labels (a tag can be taken over by another platform on the same engine)."""
    images = client.images.list(
        filters={"label": [f"racetrack.job={job}", f"racetrack.platform={platform_id}"]}
    )
    images.sort(key=lambda image: int(image.labels.get("racetrack.release", "0")), reverse=True)
    removed: list[str] = []
    for image in images[keep:]:
        if image.id in in_use or in_use.intersection(image.tags):
            continue
        try:
            for tag in image.tags:
                client.images.remove(tag)
            if not image.tags:
                client.images.remove(image.id)
        except docker.errors.APIError as exc:  # e.g. a stopped container still uses it
            log.info("kept image %s: %s", image.tags or image.id, exc.explanation or exc)
            continue
        removed.extend(image.tags or [image.id or ""])
    return removed


def _release_of(container_name: str) -> str:
    """The release name in a replica's container name (`<release>-<index>`)."""
    return container_name.rpartition("-")[0]
