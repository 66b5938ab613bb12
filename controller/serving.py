"""What serves right now, per job version, and the route snapshot that follows from it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from buildpacks.build import Routing
from buildpacks.manifest import Manifest
from controller.runtimes.base import Instance
from controller.store import Release
from router.routes import JobRoute, RouteSnapshot

Key = tuple[str, str]  # (job, version)


@dataclass
class Serving:
    """A release that receives calls, and its instances (those in `down` are being restarted
    after a crash and receive nothing until they are ready again)."""

    release: Release
    manifest: Manifest
    instances: list[Instance]
    restarts: int = 0
    down: set[str] = field(default_factory=set)

    @property
    def key(self) -> Key:
        assert self.release.version is not None
        return (self.release.job, self.release.version)

    @property
    def routable(self) -> list[Instance]:
        return [i for i in self.instances if i.name not in self.down]

    @property
    def state(self) -> str:
        up = len(self.routable)
        if up == len(self.instances):
            return "running"
        return "restarting" if up == 0 else f"degraded ({up}/{len(self.instances)} up)"


def route_of(serving: Serving, upstream_key: str = "") -> JobRoute:
    release, manifest = serving.release, serving.manifest
    routing = Routing.from_record((release.artifact or {}).get("routing"))
    return JobRoute(
        job=release.job,
        version=manifest.version,
        release=release.number,
        upstreams=tuple(i.url for i in serving.routable),
        public_endpoints=frozenset(manifest.public_endpoints),
        commit=release.commit_sha,
        strip_prefix=routing.strip_prefix,
        platform_probes=routing.platform_probes,
        upstream_key=upstream_key,
    )


class ServingTable:
    """The releases that serve; every change publishes a whole new route snapshot."""

    def __init__(
        self,
        publish: Callable[[RouteSnapshot], None],
        upstream_key: Callable[[Release], str] = lambda _release: "",
    ) -> None:
        self._publish = publish
        self._upstream_key = upstream_key
        self._entries: dict[Key, Serving] = {}
        self._generation = 0

    def __iter__(self) -> Iterator[Serving]:
        return iter(list(self._entries.values()))

    def get(self, key: Key) -> Serving | None:
        return self._entries.get(key)

    def put(self, serving: Serving) -> Serving | None:
        """Route to `serving`; return what it replaced (still running, no longer routed)."""
        old = self._entries.get(serving.key)
        self._entries[serving.key] = serving
        self.publish()
        return old

    def remove(self, key: Key) -> Serving | None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.publish()
        return old

    def clear(self) -> None:
        self._entries.clear()
        self.publish()

    def publish(self) -> None:
        self._generation += 1
        routes = [route_of(s, self._upstream_key(s.release)) for s in self._entries.values()]
        self._publish(RouteSnapshot.build(routes, self._generation))
