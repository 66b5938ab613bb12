"""What keeps releases serving between deploys: runtime events, reconcile, restore, prune.

- Events: a replica that died, came back or stopped being ready changes the upstreams the
  runtime gives; the routes are published again at once.
- Reconcile, periodically and after a restart: the runtime removes what this platform owns
  that serves no release, and brings back what a held release lost (a container removed by
  hand).
- Restore, after a restart: interrupted deploys are recorded as failed, and every release that
  was serving is brought back (adopted where the runtime kept it running).
- Prune: artifacts beyond the newest `keep_releases` of a job are removed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from buildpacks.build import ImageArtifact
from buildpacks.manifest import Manifest
from controller.job_locks import JobLocks, LockTimeout
from controller.rollout import Rollout
from controller.runtimes.base import RuntimeEvent
from controller.store import Release, ReleaseStatus, Store

log = logging.getLogger("racetrack.supervisor")


@dataclass(frozen=True)
class SupervisorSettings:
    keep_releases: int = 5  # artifacts of the newest N releases of a job are kept for rollbacks
    reconcile_interval: float = 30.0


class Supervisor:
    def __init__(
        self,
        *,
        store: Store,
        rollout: Rollout,
        locks: JobLocks,
        settings: SupervisorSettings,
    ) -> None:
        self._store = store
        self._rollout = rollout
        self._runtime = rollout.runtime
        self._serving = rollout.serving
        self._locks = locks
        self._settings = settings
        self._background: set[asyncio.Task[Any]] = set()

    # restarts of the platform

    async def restore(self) -> None:
        """After a restart: mark interrupted deploys failed, let the runtime remove what serves
        no release, and bring back every release that was serving. Bringing back runs in the
        background, under each job's lock (a push waits for it), and routes each job version
        as soon as it is ready. Then events and the periodic reconcile start."""
        for release in self._store.fail_interrupted_deploys("interrupted by restart"):
            log.warning("deploy %s %s was interrupted by a restart", release.job, release.label)
        newest: dict[tuple[str, str | None], Release] = {}
        for release in self._store.releases(status=ReleaseStatus.SERVING):  # by job, number
            newest[(release.job, release.version)] = release
        restorable: list[tuple[Release, Manifest]] = []
        for release in newest.values():
            self._store.supersede_serving(release)
            try:
                restorable.append((release, Manifest.model_validate(release.manifest)))
            except ValidationError as exc:
                log.error("cannot restore %s %s: %s", release.job, release.label, exc)
        desired = {self._rollout.spec(r, m).name for r, m in restorable}
        for change in await self._runtime.reconcile(desired):
            log.warning("reconcile: %s", change)
        for release, manifest in restorable:
            self.in_background(self._restore(release, manifest))
        self.in_background(self._follow_events())
        self.in_background(self._reconcile_periodically())

    async def _restore(self, release: Release, manifest: Manifest) -> None:
        try:
            what = f"restore of {release.job} {release.label}"
            async with self._locks.hold(release.job, what, cancellable=False):
                await self._rollout.bring_back(release, manifest, adopt=True)
        except LockTimeout as exc:
            log.error("could not restore %s %s: %s", release.job, release.label, exc)

    # while running

    async def _follow_events(self) -> None:
        async for event in self._runtime.events():
            self._on_event(event)

    def _on_event(self, event: RuntimeEvent) -> None:
        """The upstreams of a serving release changed: route to what is up now."""
        serving = any(s.running.spec.name == event.release for s in self._serving)
        log.info("%s %s%s", event.replica, event.kind, f": {event.detail}" if event.detail else "")
        if serving:
            self._serving.publish()

    async def _reconcile_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._settings.reconcile_interval)
            await self.reconcile()

    async def reconcile(self) -> list[str]:
        """One pass: what should run is what serves (the runtime also keeps what it holds,
        such as a release still starting)."""
        desired = {s.running.spec.name for s in self._serving}
        try:
            changes = await self._runtime.reconcile(desired)
        except Exception:
            log.exception("reconcile failed; the next pass tries again")
            return []
        for change in changes:
            log.warning("reconcile: %s", change)
        if changes:
            self._serving.publish()
        return changes

    def prune_later(self, job: str) -> None:
        self.in_background(self._prune(job))

    async def _prune(self, job: str) -> None:
        """Keep the artifacts of the job's newest releases (for rollbacks), drop older ones."""
        in_use: set[str] = set()
        for serving in self._serving:
            artifact = serving.release.artifact
            if serving.release.job == job and isinstance(artifact, ImageArtifact):
                in_use |= {artifact.image, artifact.image_id}
        try:
            removed = await self._runtime.prune(job, self._settings.keep_releases, in_use)
        except Exception:
            log.exception("pruning old artifacts of %s failed", job)
            return
        if removed:
            log.info("pruned %d old artifact(s) of %s: %s", len(removed), job, ", ".join(removed))

    def in_background(self, work: Coroutine[Any, Any, object]) -> None:
        """Work nobody waits for (pruning, restoring, following events): cancelled on
        shutdown."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def shutdown(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
