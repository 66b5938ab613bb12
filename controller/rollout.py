"""Rolling a release out: start → ready → commit point → swap → drain and retire.

A failure before the swap leaves whatever was serving untouched: the new release is stopped and
the routes do not change. Swaps are drained: the router stops sending new calls to the replaced
release at once, the calls already on their way finish (bounded by the drain grace), and only
then is it stopped, so that no call ever reaches a replica that is stopping.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from buildpacks.manifest import Manifest
from controller.errors import DeployFailed
from controller.runtimes.base import ReleaseFailed, ReleaseSpec, RunningRelease, Runtime
from controller.serving import Serving, ServingTable
from controller.store import Release, Store

log = logging.getLogger("racetrack.rollout")


def _platform_version() -> str:
    try:
        return importlib.metadata.version("racetrack")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


PLATFORM_VERSION = _platform_version()


def deployment_timestamp(release: Release) -> str:
    """When the release was made, in whole Unix seconds, as Racetrack's JOB_DEPLOYMENT_TIMESTAMP."""
    return str(int(datetime.fromisoformat(release.created_at).timestamp()))


Progress = Callable[[str], None]
Drain = Callable[[list[str], float], Awaitable[bool]]
CommitPoint = Callable[[], None]  # raises DeployFailed to refuse


def quiet(_line: str) -> None:
    """Progress nobody reads (releases brought back in the background)."""


@dataclass(frozen=True)
class RolloutSettings:
    public_url: str
    ready_timeout: float = 180.0
    drain_grace: float = 30.0  # how long calls already routed to a replaced release may take


class Rollout:
    def __init__(
        self,
        *,
        store: Store,
        runtime: Runtime,
        serving: ServingTable,
        drain: Drain,
        settings: RolloutSettings,
        family_token: Callable[[str], str] = lambda _job: "",
        upstream_key: Callable[[Release], str] = lambda _release: "",
    ) -> None:
        self._store = store
        self.runtime = runtime
        self.serving = serving
        self._drain = drain
        self._settings = settings
        self._family_token = family_token
        self._upstream_key = upstream_key
        self._retiring: set[asyncio.Task[Any]] = set()

    def job_url(self, job: str, version: str) -> str:
        return f"{self._settings.public_url}/pub/job/{job}/{version}/"

    async def roll_out(
        self,
        release: Release,
        manifest: Manifest,
        progress: Progress,
        commit_point: CommitPoint | None = None,
    ) -> None:
        """Start the release, pass the commit point (a push's branch moves), swap the routes.

        An artifact that holds a fixed port on the machine (docker-proxy in host network mode)
        cannot run beside the release it replaces: that one is stopped first, and started again
        if the new release fails.
        """
        assert release.artifact is not None
        port = release.artifact.fixed_port if self.runtime.exclusive_ports else None
        displaced: list[Serving] = []  # filled by _make_room before it awaits anything
        try:
            if port is not None:
                await self._make_room(release, manifest, port, progress, displaced)
            running = await self.start(release, manifest, progress)
            try:
                if commit_point is not None:
                    commit_point()  # from here on this release is the job's
            except BaseException as exc:
                await asyncio.shield(self.runtime.stop(running))
                if isinstance(exc, Exception) and not isinstance(exc, DeployFailed):
                    raise DeployFailed(f"could not move the branch: {exc}") from exc
                raise
        except BaseException:
            for previous in displaced:
                await asyncio.shield(self.bring_back(previous.release, previous.manifest))
            raise
        self.swap(Serving(release, manifest, running))

    async def _make_room(
        self,
        release: Release,
        manifest: Manifest,
        port: int,
        progress: Progress,
        displaced: list[Serving],
    ) -> None:
        """Stop the release of the same job version that holds the fixed port (put in
        `displaced` at once, to start again if this deploy fails or is cancelled); refuse when
        another job version holds it."""
        assert release.version is not None
        key = (release.job, release.version)
        if manifest.replicas > 1:
            raise DeployFailed(
                f"replicas: {manifest.replicas} instances cannot share port {port} (the job's"
                " fixed port, in host network mode); use 1 replica or a named docker network"
            )
        for other in self.serving:
            artifact = other.release.artifact
            if other.key != key and artifact is not None and artifact.fixed_port == port:
                raise DeployFailed(
                    f"port {port} is held by {other.release.job} {other.release.version}"
                    f" ({other.release.label}): in host network mode these jobs share the host's"
                    " ports; set another jobtype_extra.user_module_port, or delete that version"
                )
        holder = self.serving.remove(key)
        if holder is not None:
            displaced.append(holder)
            progress(
                f"Warning: port {port} is fixed in host network mode: stopping"
                f" {holder.release.label} before starting {release.label}"
            )
            await asyncio.shield(self.retire(holder))

    async def start(
        self, release: Release, manifest: Manifest, progress: Progress, *, adopt: bool = False
    ) -> RunningRelease:
        """Start the release (after a platform restart, adopt it if it still runs) and wait
        until every replica is ready; on any failure, stop it."""
        spec = self.spec(release, manifest)
        progress(f"Starting {spec.replicas} instance(s) on the {self.runtime.name} runtime")
        progress(f"Each instance is {self.runtime.isolation(spec)}")
        running: RunningRelease | None = None
        try:
            running = await self.runtime.adopt(spec) if adopt else None
            if running is None:
                running = await self.runtime.start(spec)
            await self.runtime.wait_ready(running, self._settings.ready_timeout)
        except (ReleaseFailed, OSError) as exc:
            if running is not None:
                await asyncio.shield(self.runtime.stop(running))
            raise DeployFailed(str(exc)) from None
        except BaseException:
            # shielded: a second cancel must not leave half the replicas running
            if running is not None:
                await asyncio.shield(self.runtime.stop(running))
            raise
        progress("All instances are ready")
        return running

    def spec(self, release: Release, manifest: Manifest) -> ReleaseSpec:
        assert release.artifact is not None and release.version is not None
        return ReleaseSpec(
            job=release.job,
            version=release.version,
            release=release.number,
            artifact=release.artifact,
            env=self._env(release, manifest),
            replicas=manifest.replicas,
            resources=manifest.resources,
            family_slot=self._store.family_slot(release.job),
        )

    def _env(self, release: Release, manifest: Manifest) -> dict[str, str]:
        """runtime_env, overridden by the secret runtime values, overridden by the config
        (`config:set`); the platform's own variables last."""
        return {
            **manifest.runtime_env,
            **release.secret_env,
            **release.config,
            "JOB_NAME": release.job,
            "JOB_VERSION": manifest.version,
            "GIT_VERSION": release.commit_sha,
            # Racetrack's: the job's /live and /health echo them; the timestamp is the
            # release's (each deploy, rollback included, makes a new one)
            "JOB_DEPLOYMENT_TIMESTAMP": deployment_timestamp(release),
            "DEPLOYED_BY_RACETRACK_VERSION": PLATFORM_VERSION,
            "JOB_TYPE_VERSION": manifest.jobtype,
            "PUB_URL": f"{self._settings.public_url}/pub",
            # the job family's own token: one job calls another through the router with it
            "AUTH_TOKEN": self._family_token(release.job),
            # what the router sends with each call: the wrapper answers only calls bearing it
            "RACETRACK_UPSTREAM_KEY": self._upstream_key(release),
        }

    async def bring_back(
        self, release: Release, manifest: Manifest, *, adopt: bool = False
    ) -> None:
        """Serve a release again: one stopped to make room for a deploy that then failed, or,
        after a platform restart, one that was serving (adopting what still runs)."""
        try:
            running = await self.start(release, manifest, quiet, adopt=adopt)
        except Exception as exc:
            log.error("could not bring back %s %s: %s", release.job, release.label, exc)
            return
        self.serving.put(Serving(release, manifest, running))
        log.info("%s %s (%s) serves again", release.job, release.version, release.label)

    def swap(self, new: Serving) -> None:
        """Route to the new release; drain and stop what it replaced in the background (the
        push is done once the router has swapped)."""
        old = self.serving.put(new)
        self._store.supersede_serving(new.release)
        if old is not None:
            task = asyncio.ensure_future(self.retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def retire(self, old: Serving) -> None:
        """No longer routed: let the calls already on their way finish, then stop."""
        # what the router may have sent calls to: every upstream it was given for this release
        # (a Service's address, on kubernetes inside the cluster), and the replicas
        urls = sorted(old.published | {r.url for r in old.running.replicas() if r.url})
        if not await self._drain(urls, self._settings.drain_grace):
            log.warning(
                "%s %s: calls still running after %.0fs of draining; stopping anyway",
                old.release.job,
                old.release.label,
                self._settings.drain_grace,
            )
        await self.runtime.stop(old.running)

    async def finish_retiring(self) -> None:
        """Wait for replaced releases to finish draining (shutdown)."""
        await asyncio.gather(*self._retiring, return_exceptions=True)
