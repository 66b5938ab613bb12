"""What every runtime offers the deployer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


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

    @property
    def name(self) -> str:
        return f"rt-{self.job}-{self.version}-r{self.release}-{self.index}"


class Instance(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str:
        """Base URL the router sends calls to, e.g. http://127.0.0.1:40123."""
        ...


class Runtime(Protocol):
    name: str

    async def start(self, spec: InstanceSpec) -> Instance: ...

    async def wait_ready(self, instance: Instance, timeout: float) -> None:
        """Return once the instance answers /ready; raise InstanceFailed otherwise."""
        ...

    async def stop(self, instance: Instance) -> None:
        """SIGTERM, then SIGKILL after the runtime's grace (`--stop-grace`)."""
        ...

    async def close(self) -> None:
        """Stop every instance this runtime started."""
        ...
