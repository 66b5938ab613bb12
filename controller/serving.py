"""What serves right now, per job version, and the route snapshot that follows from it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from buildpacks.build import Routing
from buildpacks.manifest import Manifest
from controller.public_endpoints import effective_paths
from controller.runtimes.base import RunningRelease
from controller.store import Release
from router.routes import JobRoute, RouteSnapshot

Key = tuple[str, str]  # (job, version)


@dataclass
class Serving:
    """A release that receives calls, and the runtime's handle on it (replicas that are not
    up, being restarted after a crash, receive nothing until they are ready again)."""

    release: Release
    manifest: Manifest
    running: RunningRelease
    # every upstream the router was given for it: what a drain must wait on
    published: set[str] = field(default_factory=set)

    @property
    def key(self) -> Key:
        assert self.release.version is not None
        return (self.release.job, self.release.version)

    @property
    def state(self) -> str:
        replicas = self.running.replicas()
        up = sum(1 for r in replicas if r.up)
        if up == len(replicas):
            return "running"
        return "restarting" if up == 0 else f"degraded ({up}/{len(replicas)} up)"


def route_of(
    serving: Serving,
    upstreams: list[str],
    upstream_key: str = "",
    approved: frozenset[str] = frozenset(),
) -> JobRoute:
    """The route of a serving release; its public endpoints are those of its manifest that an
    admin approved (`approved`: the approved paths of its job version)."""
    release, manifest = serving.release, serving.manifest
    routing = release.artifact.routing if release.artifact is not None else Routing()
    return JobRoute(
        job=release.job,
        version=manifest.version,
        release=release.number,
        upstreams=tuple(upstreams),
        public_endpoints=effective_paths(manifest.public_endpoints, approved),
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
        upstreams: Callable[[RunningRelease], list[str]],
        upstream_key: Callable[[Release], str] = lambda _release: "",
        approvals: Callable[[], Mapping[Key, frozenset[str]]] = lambda: {},
    ) -> None:
        self._publish = publish
        self._upstreams = upstreams  # the runtime's: ready replicas only
        self._upstream_key = upstream_key
        self._approvals = approvals  # approved public endpoints by job version, from the store
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
        """A whole new snapshot: also what an approval or revocation of a public endpoint
        calls, so that it applies from the next call on."""
        self._generation += 1
        approvals = self._approvals()
        routes = []
        for serving in self._entries.values():
            upstreams = self._upstreams(serving.running)
            serving.published.update(upstreams)
            key = self._upstream_key(serving.release)
            approved = approvals.get(serving.key, frozenset())
            routes.append(route_of(serving, upstreams, key, approved))
        self._publish(RouteSnapshot.build(routes, self._generation))
