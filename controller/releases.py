"""Operations on releases and their records: deploy, rollback, config change, restart, scale,
delete, cancel.

One deploy: checkout → manifest → build → release record → roll out (start → ready → commit
point → swap → drain and retire, see `rollout.py`). A rollback skips the build: it rolls out an
earlier release's artifact with that release's config. A failure at any step leaves whatever
was serving untouched; the release is recorded as failed with its log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from buildpacks.build import Artifact
from buildpacks.failures import plain
from buildpacks.manifest import Manifest
from buildpacks.source import JobSource
from controller.build_step import BuildStep
from controller.errors import DeployFailed, PartlyReconfigured
from controller.job_locks import JobLocks, LockTimeout
from controller.public_endpoints import on_push as endpoints_on_push
from controller.push_notes import push_notes
from controller.rollout import CommitPoint, Drain, Progress, Rollout, RolloutSettings
from controller.runtimes.base import Runtime
from controller.serving import Serving, ServingTable
from controller.store import Cause, Release, ReleaseStatus, Store
from controller.supervisor import Supervisor, SupervisorSettings
from router.routes import RouteSnapshot

MAX_KEPT_BYTES = 2 * 1024 * 1024  # of a deploy's output, kept with its release
MAX_HEAD_BYTES = 64 * 1024  # of which the beginning

__all__ = ["DeployFailed", "DeploySettings", "Releases", "make_releases"]


@dataclass(frozen=True)
class DeploySettings:
    public_url: str
    ready_timeout: float = 180.0
    keep_releases: int = 5  # artifacts of the newest N releases of a job are kept for rollbacks
    drain_grace: float = 30.0  # how long calls already routed to a replaced release may take
    lock_timeout: float = 600.0  # how long a deploy waits for the one already running
    reconcile_interval: float = 30.0  # how often the runtime is converged with what serves
    # a push approves the public endpoints its manifest declares (single-user installations)
    auto_approve_public_endpoints: bool = False


@dataclass
class BuildLog:
    """Every line of a deploy's output, streamed to the pusher; the release keeps the first
    lines and the last MAX_KEPT_BYTES of them (a build that prints without end cannot fill the
    store or the platform's memory)."""

    forward: Progress
    head: list[str] = field(default_factory=list)
    tail: deque[str] = field(default_factory=deque)
    _head_bytes: int = 0
    _tail_bytes: int = 0
    _dropped: int = 0

    def __call__(self, line: str) -> None:
        line = plain(line)  # no terminal codes reach a pusher's screen, nor the stored log
        self.forward(line)
        size = len(line) + 1
        if self._head_bytes + size <= MAX_HEAD_BYTES and not self.tail:
            self.head.append(line)
            self._head_bytes += size
            return
        self.tail.append(line)
        self._tail_bytes += size
        while self._tail_bytes > MAX_KEPT_BYTES - MAX_HEAD_BYTES and len(self.tail) > 1:
            self._tail_bytes -= len(self.tail.popleft()) + 1
            self._dropped += 1

    @property
    def lines(self) -> list[str]:
        gap = [f"[... {self._dropped} lines of output not kept ...]"] if self._dropped else []
        return [*self.head, *gap, *self.tail]

    @property
    def text(self) -> str:
        lines = self.lines
        return "\n".join(lines) + ("\n" if lines else "")


@dataclass
class Running:
    """The deploy of a job that is under way: what `builds:cancel` stops."""

    release: Release
    task: asyncio.Task[Release]
    cancelled_by: str | None = None


class Releases:
    def __init__(
        self,
        *,
        store: Store,
        build: BuildStep,
        rollout: Rollout,
        supervisor: Supervisor,
        locks: JobLocks,
        keep_releases: int = 5,
        auto_approve_public_endpoints: bool = False,
    ) -> None:
        self._store = store
        self._build = build
        self._rollout = rollout
        self._supervisor = supervisor
        self.serving: ServingTable = rollout.serving
        self.locks = locks
        self._keep_releases = keep_releases
        self._auto_approve_endpoints = auto_approve_public_endpoints
        # how pushers reach the commands, for notes in push output; set once SSH listens
        self.ssh_command = "ssh -p PORT git@HOST"
        self.running: dict[str, Running] = {}

    async def restore(self) -> None:
        """After a restart: see `Supervisor.restore`."""
        await self._supervisor.restore()

    def job_url(self, job: str, version: str) -> str:
        return self._rollout.job_url(job, version)

    # the frame every deploy runs in

    @contextlib.asynccontextmanager
    async def _locked(
        self, job: str, what: str, progress: Progress, *, cancellable: bool = True
    ) -> AsyncIterator[None]:
        try:
            async with self.locks.hold(job, what, progress, cancellable=cancellable):
                yield
        except LockTimeout as exc:
            raise DeployFailed(str(exc)) from None

    async def _run(
        self,
        release: Release,
        progress: Progress,
        work: Callable[[Release, BuildLog], Coroutine[Any, Any, Release]],
    ) -> Release:
        """Run `work` for a new release as a task `builds:cancel` can stop, and record how it
        ended: serving (recorded by `work`), failed with the reason, or cancelled by whom."""
        build_log = BuildLog(progress)
        task = asyncio.ensure_future(work(release, build_log))
        running = Running(release, task)
        self.running[release.job] = running
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if running.cancelled_by is None or (current is not None and current.cancelling()):
                self._fail(release, build_log, "interrupted: the platform is shutting down")
                raise
            reason = f"cancelled by {running.cancelled_by}"
            self._fail(release, build_log, reason)
            raise DeployFailed(reason) from None
        except DeployFailed as exc:
            self._fail(release, build_log, str(exc))
            raise
        except BaseException as exc:
            self._fail(release, build_log, f"internal error: {exc!r}")
            raise
        finally:
            self.running.pop(release.job, None)

    def _fail(self, release: Release, build_log: BuildLog, reason: str) -> None:
        build_log(f"Deploy of {release.job} {release.label} failed: {reason}")
        latest = self._store.release_by_id(release.id) or release
        self._store.finish_release(
            latest, ReleaseStatus.FAILED, build_log=build_log.text, error=reason
        )

    def cancel(self, job: str, by: str) -> Release | None:
        """Stop the deploy of `job` under way (None if there is none)."""
        running = self.running.get(job)
        if running is None or running.task.done():
            return None
        if running.cancelled_by is None:  # once: a second cancel must not cut the cleanup short
            running.cancelled_by = by
            running.task.cancel()
        return running.release

    # pushes

    async def deploy(
        self,
        job: str,
        commit: str,
        deployed_by: str,
        progress: Progress,
        commit_point: CommitPoint | None = None,
        *,
        permit: Callable[[str], None] = lambda _version: None,
        claim: Callable[[], None] = lambda: None,
    ) -> Release:
        """Deploy `commit` as a new release. For a push, `commit_point()` runs after the
        release is ready, before it serves, while this job's lock is held (the branch moves;
        it raises DeployFailed to refuse). `claim()` runs first under the lock (it checks the
        branch did not move and holds a new job name for the deployer, or raises
        DeployFailed); `permit(version)` runs once the manifest names the version; it raises
        to refuse."""
        async with self._locked(job, f"deploy of {job} by {deployed_by}", progress):
            claim()
            release = self._store.create_release(
                job, commit, deployed_by, config=self._store.job_config(job)
            )
            return await self._run(
                release,
                progress,
                lambda r, build_log: self._deploy_commit(r, build_log, commit_point, permit),
            )

    async def _deploy_commit(
        self,
        release: Release,
        build_log: BuildLog,
        commit_point: CommitPoint | None,
        permit: Callable[[str], None],
    ) -> Release:
        build_log(
            f"Deploying {release.job} at {release.commit_sha[:12]} as release {release.label}"
        )
        release, manifest, artifact = await self._build_release(release, build_log, permit)
        release = self._store.set_artifact(release, artifact)
        await self._rollout.roll_out(release, manifest, build_log, commit_point)
        return self._finish(release, manifest, build_log)

    async def _build_release(
        self, release: Release, build_log: BuildLog, permit: Callable[[str], None]
    ) -> tuple[Release, Manifest, Artifact]:
        """Checkout → manifest (recorded with the release) → build; the checkout is removed
        whatever happens."""
        job = release.job
        checkout = self._build.checkout_dir(release)
        try:
            source = await self._build.checkout_and_read(release, checkout, build_log)
            manifest = source.manifest
            permit(manifest.version)
            release = self._store.describe_release(
                release,
                version=manifest.version,
                jobtype=manifest.jobtype,
                manifest=manifest.model_dump(mode="json"),
            )
            build_log(f"Job {job} version {manifest.version}, jobtype {manifest.jobtype}")
            for note in push_notes(source, job, self.ssh_command):
                build_log(note)
            for line in endpoints_on_push(
                self._store,
                job,
                manifest.version,
                manifest.public_endpoints,
                deployed_by=release.deployed_by,
                auto_approve=self._auto_approve_endpoints,
                ssh_command=self.ssh_command,
            ):
                build_log(line)
            release = self._store.set_secret_env(release, source.secret_runtime_env or {})
            artifact = await self._build.build(
                release,
                manifest,
                source.job_dir,
                build_log,
                build_secrets=self._build_secrets(job, source),
            )
        finally:
            await self._build.remove_checkout(checkout)
        return release, manifest, artifact

    def _build_secrets(self, job: str, source: JobSource) -> dict[str, str]:
        """The build's secret environment: the committed secret_build_env_file's values, then
        the job's build config (`config:set --build`), which wins."""
        return {**(source.secret_build_env or {}), **self._store.job_build_config(job)}

    def _finish(self, release: Release, manifest: Manifest, build_log: BuildLog) -> Release:
        build_log(
            f"Deployed {release.job} {manifest.version} ({release.label}): "
            f"{self.job_url(release.job, manifest.version)}"
        )
        self._supervisor.prune_later(release.job)
        return self._store.finish_release(release, ReleaseStatus.SERVING, build_log=build_log.text)

    # rollbacks, config changes, restarts and scaling: new releases of an existing artifact

    async def rollback(self, job: str, target: int | None, by: str, progress: Progress) -> Release:
        """Deploy an earlier release's artifact and config again, as a new release, through the
        same swap; the job's config becomes that release's. Default target: the release before
        the one serving the job's newest deploy."""
        async with self._locked(job, f"rollback of {job} by {by}", progress):
            source = self._rollback_source(job, target)
            release = await self._redeploy(
                source, by, progress, cause=Cause.ROLLBACK, config=source.config
            )
            self._store.replace_job_config(job, source.config)
            return release

    async def reconfigure(
        self, job: str, config: dict[str, str], by: str, progress: Progress
    ) -> list[Release]:
        """Set the job's config; every version that serves gets a new release of its current
        artifact with the new environment, swapped in like any deploy. If none serves, the next
        deploy runs with it. The config is stored once a version runs with it: if the first
        redeploy fails nothing changed; if a later one fails, PartlyReconfigured says which
        versions run the new config and which still run the old one."""
        async with self._locked(job, f"config change of {job} by {by}", progress):
            applied: list[Release] = []
            for serving in [s for s in self.serving if s.release.job == job]:
                try:
                    applied.append(
                        await self._redeploy(
                            serving.release, by, progress, cause=Cause.CONFIG, config=config
                        )
                    )
                except DeployFailed as exc:
                    if not applied:
                        raise DeployFailed(f"config not changed: {exc}") from None
                    self._store.replace_job_config(job, config)
                    done = ", ".join(f"{r.version} ({r.label})" for r in applied)
                    failed = serving.release.version
                    raise PartlyReconfigured(
                        f"the new config runs in {done}, but {failed} still runs the old one:"
                        f" {exc}",
                        applied,
                    ) from None
            self._store.replace_job_config(job, config)
            return applied

    async def restart(
        self,
        job: str,
        version: str | None,
        by: str,
        progress: Progress,
        *,
        permit: Callable[[Release], None] = lambda _release: None,
    ) -> list[Release]:
        """Fresh instances of what serves (a new release of the same artifact and config).
        `permit` sees each release to be replaced before any work starts; it raises to refuse."""
        async with self._locked(job, f"restart of {job} by {by}", progress):
            targets = self._permitted(self._serving_of(job, version), permit)
            return [
                await self._redeploy(
                    s.release, by, progress, cause=Cause.RESTART, config=s.release.config
                )
                for s in targets
            ]

    async def scale(
        self,
        job: str,
        version: str | None,
        replicas: int,
        by: str,
        progress: Progress,
        *,
        permit: Callable[[Release], None] = lambda _release: None,
    ) -> list[Release]:
        """Run `replicas` instances of what serves (until a push applies its manifest again).
        `permit` as for `restart`."""
        async with self._locked(job, f"scaling of {job} by {by}", progress):
            targets = self._permitted(self._serving_of(job, version), permit)
            return [
                await self._redeploy(
                    s.release,
                    by,
                    progress,
                    cause=Cause.SCALE,
                    config=s.release.config,
                    manifest={**(s.release.manifest or {}), "replicas": replicas},
                )
                for s in targets
            ]

    async def delete(self, job: str, version: str, by: str) -> Release:
        """Stop a job version: routes removed, calls on their way finish, instances stopped."""
        async with self._locked(
            job, f"delete of {job} {version} by {by}", lambda _line: None, cancellable=False
        ):
            serving = self.serving.remove((job, version))
            if serving is None:
                raise DeployFailed(f"{job} {version} is not running")
            await self._rollout.retire(serving)
            return self._store.set_release_status(serving.release, ReleaseStatus.DELETED)

    @staticmethod
    def _permitted(targets: list[Serving], permit: Callable[[Release], None]) -> list[Serving]:
        for serving in targets:
            permit(serving.release)
        return targets

    def _serving_of(self, job: str, version: str | None = None) -> list[Serving]:
        found = [
            s for s in self.serving if s.release.job == job and version in (None, s.release.version)
        ]
        if not found:
            what = f"{job} {version}" if version else job
            raise DeployFailed(f"{what} is not running")
        return found

    async def _redeploy(
        self,
        source: Release,
        by: str,
        progress: Progress,
        *,
        cause: str,
        config: dict[str, str],
        manifest: dict[str, object] | None = None,
    ) -> Release:
        """A new release of `source`'s artifact, with `config` (and `manifest` if given), through
        the same swap as a push. The caller holds the job's lock."""
        assert source.artifact is not None and source.version is not None
        if not await self._rollout.runtime.artifact_available(source.artifact):
            raise DeployFailed(
                f"the artifact of {source.label} is gone (only the newest"
                f" {self._keep_releases} releases keep theirs); push its commit"
                f" {source.commit_sha[:12]} again to rebuild it"
            )
        release = self._store.create_release(
            source.job,
            source.commit_sha,
            by,
            config=config,
            rollback_of=source.number,
            cause=cause,
            secret_env=source.secret_env,  # its commit's secret_runtime_env_file
        )
        release = self._store.describe_release(
            release,
            version=source.version,
            jobtype=source.jobtype or "",
            manifest=manifest if manifest is not None else (source.manifest or {}),
        )
        release = self._store.set_artifact(release, source.artifact)
        return await self._run(release, progress, self._deploy_existing)

    def _rollback_source(self, job: str, target: int | None) -> Release:
        releases = self._store.releases(job=job)
        if not releases:
            raise DeployFailed(f"no job {job!r}")
        deployed = [
            r
            for r in releases
            if r.status in (ReleaseStatus.SERVING, ReleaseStatus.SUPERSEDED) and r.artifact
        ]
        if target is not None:
            chosen = next((r for r in releases if r.number == target), None)
            if chosen is None:
                raise DeployFailed(f"{job} has no release r{target}")
            if chosen not in deployed:
                raise DeployFailed(
                    f"r{target} of {job} never served ({chosen.status}): nothing to roll back to"
                )
            return chosen
        current = max(
            (r for r in deployed if r.status == ReleaseStatus.SERVING),
            key=lambda r: r.number,
            default=None,
        )
        if current is None:
            raise DeployFailed(f"{job} serves nothing to roll back from; name a release: rN")
        earlier = [
            r for r in deployed if r.number < current.number and r.version == current.version
        ]
        if not earlier:
            raise DeployFailed(
                f"no release of {job} {current.version} before {current.label};"
                " name the one to deploy again: releases:rollback "
                f"{job} rN"
            )
        return earlier[-1]

    async def _deploy_existing(self, release: Release, build_log: BuildLog) -> Release:
        manifest = Manifest.model_validate(release.manifest)
        job = f"{release.job} {manifest.version}"
        what = {
            Cause.ROLLBACK: f"Rolling {job} back to r{release.rollback_of}",
            Cause.CONFIG: f"Applying the new config to {job}",
            Cause.RESTART: f"Restarting {job}",
            Cause.SCALE: f"Scaling {job} to {manifest.replicas} instance(s)",
        }[release.cause]
        build_log(
            f"{what}: the artifact of r{release.rollback_of} (commit {release.commit_sha[:12]})"
            f" as release {release.label}, without rebuilding"
        )
        await self._rollout.roll_out(release, manifest, build_log)
        return self._finish(release, manifest, build_log)

    async def logs(
        self, job: str, version: str | None, tail: int, follow: bool
    ) -> AsyncIterator[str]:
        """Output of the replicas serving `job` (each line prefixed with its replica), the
        last `tail` lines of each, then, with `follow`, new lines as they come."""
        streams = [
            self._rollout.runtime.logs(s.running, tail, follow)
            for s in self._serving_of(job, version)
        ]
        for stream in streams:  # one version after the other; replicas merged by the runtime
            async for line in stream:
                yield line

    async def restarts(self, serving: Serving) -> int:
        """Crash restarts of a serving release's replicas."""
        return await self._rollout.runtime.restarts(serving.running)

    async def shutdown(self) -> None:
        """Stop deploys under way (they record themselves as interrupted), stop background
        work, let replaced releases finish draining, then stop what does not outlive the
        platform."""
        running = [r.task for r in self.running.values()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await self._supervisor.shutdown()
        self.serving.clear()
        await self._rollout.finish_retiring()
        await self._rollout.runtime.close()


def make_releases(
    *,
    store: Store,
    build: BuildStep,
    runtime: Runtime,
    publish: Callable[[RouteSnapshot], None],
    drain: Drain,
    settings: DeploySettings,
    family_token: Callable[[str], str] = lambda _job: "",
    upstream_key: Callable[[Release], str] = lambda _release: "",
) -> Releases:
    """The operations, their rollout and their supervisor, wired to one runtime and router."""
    rollout = Rollout(
        store=store,
        runtime=runtime,
        serving=ServingTable(
            publish,
            runtime.upstreams,
            upstream_key=upstream_key,
            approvals=store.approved_endpoints,
        ),
        drain=drain,
        settings=RolloutSettings(
            public_url=settings.public_url,
            ready_timeout=settings.ready_timeout,
            drain_grace=settings.drain_grace,
        ),
        family_token=family_token,
        upstream_key=upstream_key,
    )
    locks = JobLocks(settings.lock_timeout)
    supervisor = Supervisor(
        store=store,
        rollout=rollout,
        locks=locks,
        settings=SupervisorSettings(
            keep_releases=settings.keep_releases,
            reconcile_interval=settings.reconcile_interval,
        ),
    )
    return Releases(
        store=store,
        build=build,
        rollout=rollout,
        supervisor=supervisor,
        locks=locks,
        keep_releases=settings.keep_releases,
        auto_approve_public_endpoints=settings.auto_approve_public_endpoints,
    )
