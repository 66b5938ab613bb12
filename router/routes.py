"""Route snapshots: an immutable table from (job, version) to upstream instances.

The controller builds a whole new snapshot for every change and hands it to the router, which
swaps one reference. A request reads the reference once, so it sees one consistent table from
start to end, and no lock is needed on the hot path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from router.paths import is_under, normalize_path
from router.versions import select_version

ALWAYS_PUBLIC = frozenset({"/live", "/ready", "/health"})
UPSTREAM_KEY_HEADER = "X-Racetrack-Upstream-Key"


@dataclass(frozen=True)
class JobRoute:
    """Where one running job version answers."""

    job: str
    version: str
    release: int
    upstreams: tuple[str, ...]  # base URLs such as http://127.0.0.1:40123
    # path prefixes a call without a token may reach (the approved ones the manifest declares)
    public_endpoints: frozenset[str] = frozenset()
    commit: str = ""
    # docker-proxy jobs: `/api/v1/<path>` goes upstream as `/<path>`, probes are answered here
    strip_prefix: str | None = None
    platform_probes: bool = False
    # sent to the instances with every call (UPSTREAM_KEY_HEADER): the job's wrapper answers
    # only calls that carry it, so that a job cannot call another one around the router
    upstream_key: str = field(default="", repr=False)
    _next: itertools.count = field(default_factory=itertools.count, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Public endpoints are kept normalised like request paths (one that cannot be
        normalised opens nothing)."""
        normalized = (normalize_path(endpoint) for endpoint in self.public_endpoints)
        prefixes = frozenset(prefix for prefix in normalized if prefix is not None)
        object.__setattr__(self, "public_endpoints", prefixes)

    def pick_upstream(self) -> str:
        """Round-robin over the instances (itertools.count is atomic under the GIL)."""
        return self.upstreams[next(self._next) % len(self.upstreams)]

    def upstream_path(self, path: str) -> str | None:
        """The path to send upstream (query kept), or None when this route has no such path."""
        if self.strip_prefix is None:
            return path
        bare, question, query = path.partition("?")
        if bare != self.strip_prefix and not bare.startswith(self.strip_prefix + "/"):
            return None
        return (bare[len(self.strip_prefix) :] or "/") + question + query

    def probe_answer(self, path: str) -> dict[str, object] | None:
        """For routes whose probes the platform answers: the body for /live, /ready, /health."""
        if not self.platform_probes:
            return None
        answers: dict[str, dict[str, object]] = {
            "/live": {"live": True, "status": "ready"},
            "/ready": {"ready": True},
            "/health": {
                "service": "job",
                "job_name": self.job,
                "job_version": self.version,
                "git_version": self.commit,
                "status": "pass",
            },
        }
        normalized = normalize_path(path)
        return None if normalized is None else answers.get(normalized)

    def is_public(self, path: str) -> bool:
        """The probes exactly; each public endpoint as a prefix on segment boundaries (a public
        `/api/v1/webview` opens `/api/v1/webview/postme`, not `/api/v1/webviewer`), after
        normalising `path`; a path that could be read as another (`..`, `%2f`, ...) never is."""
        normalized = normalize_path(path)
        if normalized is None:
            return False
        if normalized in ALWAYS_PUBLIC:
            return True
        return any(is_under(normalized, prefix) for prefix in self.public_endpoints)


@dataclass(frozen=True)
class RouteSnapshot:
    """All routes at one moment; never mutated after construction."""

    jobs: Mapping[str, Mapping[str, JobRoute]]
    generation: int = 0

    @classmethod
    def build(cls, routes: Iterable[JobRoute], generation: int = 0) -> RouteSnapshot:
        table: dict[str, dict[str, JobRoute]] = {}
        for route in routes:  # a route without upstreams is a version restarting after a crash
            table.setdefault(route.job, {})[route.version] = route
        frozen = {job: MappingProxyType(versions) for job, versions in table.items()}
        return cls(jobs=MappingProxyType(frozen), generation=generation)

    def resolve(self, job: str, selector: str) -> JobRoute | None:
        """An exact version, even one restarting (its calls get 503); `latest` and wildcards
        choose among the versions that have a ready instance."""
        versions = self.jobs.get(job)
        if not versions:
            return None
        if selector in versions:
            return versions[selector]
        running = [version for version, route in versions.items() if route.upstreams]
        version = select_version(selector, running)
        return None if version is None else versions[version]


EMPTY_SNAPSHOT = RouteSnapshot.build([])
