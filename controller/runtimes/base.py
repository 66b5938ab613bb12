"""What every runtime offers the deployer."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from buildpacks.docker_build import docker_safe
from buildpacks.manifest import Resources


def free_port(host: str) -> int:
    """A port that is free now (the kernel may hand it out again later: bind it soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class InstanceFailed(Exception):
    """An instance did not become ready; the message says why in one line."""


@dataclass(frozen=True)
class InstanceSpec:
    job: str
    version: str
    release: int
    index: int
    artifact: Mapping[str, Any]  # the buildpack's artifact record
    env: Mapping[str, str]
    resources: Resources | None = None
    # the job family's number, never reused: the local runtime runs the family as its own uid
    family_slot: int = 0

    @property
    def name(self) -> str:
        """`rt-<job>-<version>-r<release>-<i>`, safe as a container name."""
        return f"rt-{self.job}-{docker_safe(self.version)}-r{self.release}-{self.index}"


class Instance(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str:
        """Base URL the router sends calls to, e.g. http://127.0.0.1:40123."""
        ...


CrashHandler = Callable[[Instance], None]


class Runtime(Protocol):
    name: str
    artifact_kind: str  # what the buildpacks must build for it: "directory" or "image"
    # called when an instance stops without being asked to (runtimes that restart crashed
    # instances themselves, like the docker engine, never call it)
    on_crash: CrashHandler | None

    async def start(self, spec: InstanceSpec) -> Instance: ...

    def isolation(self, spec: InstanceSpec) -> str:
        """One line for the push: how an instance of `spec` is isolated, which limits apply."""
        ...

    async def adopt(self, spec: InstanceSpec) -> Instance | None:
        """After a restart: the instance still running from before, if the runtime keeps them."""
        ...

    def exclusive_port(self, artifact: Mapping[str, Any]) -> int | None:
        """A port that only one instance of this artifact can hold at a time, if any: then a
        release replacing another must stop it before it can start."""
        ...

    async def remove_strays(self, keep: set[str]) -> list[str]:
        """After a restart: remove instances of this platform whose names are not in `keep`
        (left by deploys or retirements the platform did not live to finish)."""
        ...

    def port_taken(self, port: int) -> bool:
        """Whether something already listens on an exclusive port."""
        ...

    async def artifact_available(self, artifact: Mapping[str, Any]) -> bool:
        """Whether the artifact still exists (a rollback needs it)."""
        ...

    async def restarts(self, instance: Instance) -> int:
        """How often the runtime itself restarted this instance since it was started."""
        ...

    def logs(self, instance: Instance, tail: int, follow: bool) -> AsyncIterator[str]:
        """The instance's last `tail` output lines, then (with `follow`) new ones as they come."""
        ...

    async def prune(self, job: str, keep: int, in_use: set[str]) -> list[str]:
        """Remove old artifacts of `job` beyond the newest `keep` releases, never those in
        `in_use`; return what was removed."""
        ...

    async def wait_ready(self, instance: Instance, timeout: float) -> None:
        """Return once the instance answers /ready; raise InstanceFailed otherwise."""
        ...

    async def stop(self, instance: Instance) -> None:
        """SIGTERM, then SIGKILL after the runtime's grace (`--stop-grace`)."""
        ...

    async def close(self) -> None:
        """Stop every instance this runtime started."""
        ...
