"""Deploys, rollbacks and what keeps releases serving.

One deploy: checkout → manifest → build → release → start → ready → commit point → swap →
drain and retire. A rollback skips the build: it starts an earlier release's artifact with that
release's config. A failure at any step leaves whatever was serving untouched: new instances
are stopped, the release is recorded as failed with its log, and the routes do not change.

Swaps are drained: the router stops sending new calls to the replaced instances at once, the
calls already on their way finish (bounded by the drain grace), and only then are the instances
stopped, so that no call ever reaches an instance that is stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from buildpacks.build import ImageArtifact
from buildpacks.manifest import Manifest
from buildpacks.source import JobSource
from controller.build_step import BuildStep
from controller.errors import DeployFailed, PartlyReconfigured
from controller.job_locks import JobLocks, LockTimeout
from controller.push_notes import push_notes
from controller.runtimes.base import Instance, InstanceFailed, InstanceSpec, Runtime
from controller.serving import Serving, ServingTable
from controller.store import Cause, Release, ReleaseStatus, Store
from gitreceiver.interface import RefMoved, RefUpdate, RefUpdateFailed

log = logging.getLogger("racetrack.deployer")

Progress = Callable[[str], None]
Drain = Callable[[list[str], float], Awaitable[bool]]
CRASH_BACKOFF_FIRST = 1.0
MAX_KEPT_BYTES = 2 * 1024 * 1024  # of a deploy's output, kept with its release
MAX_HEAD_BYTES = 64 * 1024  # of which the beginning
CRASH_BACKOFF_MAX = 60.0

__all__ = ["DeployFailed", "DeploySettings", "Deployer"]


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


def _quiet() -> BuildLog:
    return BuildLog(lambda _line: None)


@dataclass(frozen=True)
class DeploySettings:
    public_url: str
    ready_timeout: float = 180.0
    keep_releases: int = 5  # artifacts of the newest N releases of a job are kept for rollbacks
    drain_grace: float = 30.0  # how long calls already routed to a replaced release may take
    lock_timeout: float = 600.0  # how long a deploy waits for the one already running


@dataclass
class Running:
    """The deploy of a job that is under way: what `builds:cancel` stops."""

    release: Release
    task: asyncio.Task[Release]
    cancelled_by: str | None = None


class Deployer:
    def __init__(
        self,
        *,
        store: Store,
        build: BuildStep,
        runtime: Runtime,
        serving: ServingTable,
        drain: Drain,
        settings: DeploySettings,
        family_token: Callable[[str], str] = lambda _job: "",
        upstream_key: Callable[[Release], str] = lambda _release: "",
    ) -> None:
        self._store = store
        self._build = build
        self._runtime = runtime
        self.serving = serving
        self._drain = drain
        self._settings = settings
        self._family_token = family_token
        self._upstream_key = upstream_key
        self.locks = JobLocks(settings.lock_timeout)
        # how pushers reach the commands, for notes in push output; set once SSH listens
        self.ssh_command = "ssh -p PORT git@HOST"
        self.running: dict[str, Running] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._retiring: set[asyncio.Task[Any]] = set()
        self._exited_early: set[Instance] = set()
        runtime.on_crash = self._instance_crashed

    def job_url(self, job: str, version: str) -> str:
        return f"{self._settings.public_url}/pub/job/{job}/{version}/"

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
        branch: RefUpdate | None = None,
        *,
        permit: Callable[[str], None] = lambda _version: None,
        claim: Callable[[], None] = lambda: None,
    ) -> Release:
        """Deploy `commit` as a new release. For a push, `branch` moves at the commit point:
        after the release is ready, before it serves, while this job's lock is held.
        `claim()` runs first under the lock (it holds a new job name for the deployer, or
        raises DeployFailed); `permit(version)` runs once the manifest names the version; it
        raises to refuse."""
        async with self._locked(job, f"deploy of {job} by {deployed_by}", progress):
            if branch is not None:
                try:
                    branch.check()
                except RefMoved as exc:
                    raise DeployFailed(str(exc)) from None
            claim()
            release = self._store.create_release(
                job, commit, deployed_by, config=self._store.job_config(job)
            )
            return await self._run(
                release,
                progress,
                lambda r, build_log: self._deploy_commit(r, build_log, branch, permit),
            )

    async def _deploy_commit(
        self,
        release: Release,
        build_log: BuildLog,
        branch: RefUpdate | None,
        permit: Callable[[str], None],
    ) -> Release:
        job = release.job
        build_log(f"Deploying {job} at {release.commit_sha[:12]} as release {release.label}")
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
        release = self._store.set_artifact(release, artifact)
        await self._roll_out(release, manifest, build_log, branch)
        return self._finish(release, manifest, build_log)

    def _build_secrets(self, job: str, source: JobSource) -> dict[str, str]:
        """The build's secret environment: the committed secret_build_env_file's values, then
        the job's build config (`config:set --build`), which wins."""
        return {**(source.secret_build_env or {}), **self._store.job_build_config(job)}

    def _finish(self, release: Release, manifest: Manifest, build_log: BuildLog) -> Release:
        build_log(
            f"Deployed {release.job} {manifest.version} ({release.label}): "
            f"{self.job_url(release.job, manifest.version)}"
        )
        self._in_background(self._prune(release.job))
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
            await self._retire(serving)
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
        if not await self._runtime.artifact_available(source.artifact):
            raise DeployFailed(
                f"the artifact of {source.label} is gone (only the newest"
                f" {self._settings.keep_releases} releases keep theirs); push its commit"
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
        await self._roll_out(release, manifest, build_log, branch=None)
        return self._finish(release, manifest, build_log)

    # starting, swapping, draining

    async def _roll_out(
        self, release: Release, manifest: Manifest, build_log: BuildLog, branch: RefUpdate | None
    ) -> None:
        """Start the release, move the branch (the commit point), swap the routes.

        An artifact that holds a fixed host port (docker-proxy in host network mode) cannot
        run beside the release it replaces: that one is stopped first, and started again if
        the new release fails.
        """
        assert release.artifact is not None and release.version is not None
        exclusive = self._runtime.exclusive_port(release.artifact)
        displaced: list[Serving] = []  # filled by _make_room before it awaits anything
        try:
            if exclusive is not None:
                await self._make_room(release, manifest, exclusive, build_log, displaced)
            instances = await self._start(release, manifest, build_log)
            try:
                if branch is not None:
                    branch.apply()  # the commit point: from here on this release is the job's
            except BaseException as exc:
                await self._stop_all(instances)
                if isinstance(exc, RefUpdateFailed):
                    raise DeployFailed(str(exc)) from None
                if isinstance(exc, Exception):
                    raise DeployFailed(f"could not move the branch: {exc}") from exc
                raise
        except BaseException:
            for previous in displaced:
                await asyncio.shield(self._bring_back(previous.release, previous.manifest))
            raise
        self._swap(Serving(release, manifest, instances))

    async def _make_room(
        self,
        release: Release,
        manifest: Manifest,
        port: int,
        build_log: BuildLog,
        displaced: list[Serving],
    ) -> None:
        """An artifact that holds a fixed host port: stop the release of the same job version
        that holds it (put in `displaced` at once, to start again if this deploy fails or is
        cancelled); refuse when anything else holds it."""
        assert release.version is not None
        key = (release.job, release.version)
        if manifest.replicas > 1:
            raise DeployFailed(
                f"replicas: {manifest.replicas} instances cannot share port {port} (the job's"
                " fixed port, in host network mode); use 1 replica or a named docker network"
            )
        for other in self.serving:
            if (
                other.key != key
                and self._runtime.exclusive_port(other.release.artifact or {}) == port
            ):
                raise DeployFailed(
                    f"port {port} is held by {other.release.job} {other.release.version}"
                    f" ({other.release.label}): in host network mode these jobs share the host's"
                    " ports; set another jobtype_extra.user_module_port, or delete that version"
                )
        holder = self.serving.remove(key)
        if holder is not None:
            displaced.append(holder)
            build_log(
                f"Warning: port {port} is fixed in host network mode: stopping"
                f" {holder.release.label} before starting {release.label}"
            )
            await asyncio.shield(self._retire(holder))
        if self._runtime.port_taken(port):
            raise DeployFailed(f"port {port} is in use on this host by a program outside Racetrack")

    async def _bring_back(
        self, release: Release, manifest: Manifest, *, adopt: bool = False
    ) -> None:
        """Serve a release again: one stopped to make room for a deploy that then failed, or,
        after a platform restart, one that was serving (adopting what still runs)."""
        try:
            instances = await self._start(release, manifest, _quiet(), adopt=adopt)
        except Exception as exc:
            log.error("could not bring back %s %s: %s", release.job, release.label, exc)
            return
        self._put(Serving(release, manifest, instances))
        log.info("%s %s (%s) serves again", release.job, release.version, release.label)

    def _instance_env(self, release: Release, manifest: Manifest) -> dict[str, str]:
        """runtime_env, overridden by the secret runtime values, overridden by the config
        (`config:set`); the platform's own variables last."""
        return {
            **manifest.runtime_env,
            **release.secret_env,
            **release.config,
            "JOB_NAME": release.job,
            "JOB_VERSION": manifest.version,
            "GIT_VERSION": release.commit_sha,
            "PUB_URL": f"{self._settings.public_url}/pub",
            # the job family's own token: one job calls another through the router with it
            "AUTH_TOKEN": self._family_token(release.job),
            # what the router sends with each call: the wrapper answers only calls bearing it
            "RACETRACK_UPSTREAM_KEY": self._upstream_key(release),
        }

    def _specs(self, release: Release, manifest: Manifest) -> list[InstanceSpec]:
        assert release.artifact is not None and release.version is not None
        env = self._instance_env(release, manifest)
        slot = self._store.family_slot(release.job)
        return [
            InstanceSpec(
                release.job,
                release.version,
                release.number,
                i,
                release.artifact,
                env,
                manifest.resources,
                family_slot=slot,
            )
            for i in range(manifest.replicas)
        ]

    async def _start(
        self, release: Release, manifest: Manifest, build_log: BuildLog, *, adopt: bool = False
    ) -> list[Instance]:
        """Start the release's instances (after a restart, adopt those still running) and wait
        until every one is ready; on any failure, stop them all."""
        specs = self._specs(release, manifest)
        build_log(f"Starting {len(specs)} instance(s) on the {self._runtime.name} runtime")
        build_log(f"Each instance is {self._runtime.isolation(specs[0])}")
        instances = await self._start_specs(specs, adopt=adopt)
        build_log("All instances are ready")
        return instances

    async def _start_specs(
        self, specs: list[InstanceSpec], *, adopt: bool = False
    ) -> list[Instance]:
        instances: list[Instance] = []
        try:
            for spec in specs:
                adopted = await self._runtime.adopt(spec) if adopt else None
                instances.append(adopted or await self._runtime.start(spec))
            await asyncio.gather(
                *(self._runtime.wait_ready(i, self._settings.ready_timeout) for i in instances)
            )
        except (InstanceFailed, OSError) as exc:
            await asyncio.shield(self._stop_all(instances))
            raise DeployFailed(str(exc)) from None
        except BaseException:
            # shielded: a second cancel must not leave half the instances running
            await asyncio.shield(self._stop_all(instances))
            raise
        return instances

    async def _stop_all(self, instances: list[Instance]) -> None:
        await asyncio.gather(*(self._runtime.stop(i) for i in instances), return_exceptions=True)

    def _swap(self, new: Serving) -> None:
        """Route to the new release; drain and stop what it replaced in the background (the
        push is done once the router has swapped)."""
        old = self._put(new)
        self._store.supersede_serving(new.release)
        if old is not None:
            self._retire_in_background(old)

    def _put(self, serving: Serving) -> Serving | None:
        """Route to `serving`. An instance that crashed between being ready and being routed
        is treated like one that crashes while serving: routed around and revived."""
        old = self.serving.put(serving)
        for instance in serving.instances:
            if instance in self._exited_early:
                self._exited_early.discard(instance)
                self._instance_crashed(instance)
        return old

    async def _retire(self, old: Serving) -> None:
        """No longer routed: let the calls already on their way finish, then stop."""
        urls = [i.url for i in old.instances]
        if not await self._drain(urls, self._settings.drain_grace):
            log.warning(
                "%s %s: calls still running after %.0fs of draining; stopping anyway",
                old.release.job,
                old.release.label,
                self._settings.drain_grace,
            )
        await self._stop_all(old.instances)

    def _in_background(self, work: Coroutine[Any, Any, object]) -> None:
        """Work the push need not wait for (pruning, reviving, restoring): cancelled on
        shutdown."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _retire_in_background(self, old: Serving) -> None:
        """Draining and stopping a replaced release: shutdown waits for it to finish."""
        task = asyncio.ensure_future(self._retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _prune(self, job: str) -> None:
        """Keep the artifacts of the job's newest releases (for rollbacks), drop older ones."""
        in_use: set[str] = set()
        for serving in self.serving:
            artifact = serving.release.artifact or {}
            if serving.release.job == job and artifact.get("kind") == ImageArtifact.kind:
                in_use |= {artifact["image"], artifact["image_id"]}
        try:
            removed = await self._runtime.prune(job, self._settings.keep_releases, in_use)
        except Exception:
            log.exception("pruning old artifacts of %s failed", job)
            return
        if removed:
            log.info("pruned %d old artifact(s) of %s: %s", len(removed), job, ", ".join(removed))

    async def logs(
        self, job: str, version: str | None, tail: int, follow: bool
    ) -> AsyncIterator[str]:
        """Output of the instances serving `job` (each line prefixed with its instance), the
        last `tail` lines of each, then, with `follow`, new lines as they come."""
        instances = [i for s in self._serving_of(job, version) for i in s.instances]
        merged: asyncio.Queue[str | None] = asyncio.Queue()

        async def pump(instance: Instance) -> None:
            try:
                async for line in self._runtime.logs(instance, tail, follow):
                    await merged.put(f"[{instance.name}] {line}")
            finally:
                await merged.put(None)

        pumps = [asyncio.ensure_future(pump(i)) for i in instances]
        try:
            remaining = len(pumps)
            while remaining:
                line = await merged.get()
                if line is None:
                    remaining -= 1
                else:
                    yield line
        finally:
            for task in pumps:
                task.cancel()

    # crashes and restarts

    async def restarts(self, serving: Serving) -> int:
        """Crash restarts of a serving release: ours (local) plus the runtime's own (docker)."""
        counts = await asyncio.gather(*(self._runtime.restarts(i) for i in serving.instances))
        return serving.restarts + sum(counts)

    def _instance_crashed(self, instance: Instance) -> None:
        """A serving instance stopped without being asked to: route around it and start it
        again, with backoff, until it is ready or its release no longer serves. One that is
        not routed yet (its release is still starting) is remembered for `_put`."""
        for serving in self.serving:
            if instance in serving.instances:
                if instance.name not in serving.down:
                    serving.down.add(instance.name)
                    serving.restarts += 1
                    self.serving.publish()
                    log.warning("%s crashed; restarting it", instance.name)
                    self._in_background(self._revive(serving, instance))
                return
        self._exited_early.add(instance)

    async def _revive(self, serving: Serving, crashed: Instance) -> None:
        delay = CRASH_BACKOFF_FIRST
        spec = next(
            s for s in self._specs(serving.release, serving.manifest) if s.name == crashed.name
        )
        while self.serving.get(serving.key) is serving:
            # backoff between attempts: a job that crashes at once must not spin the machine
            await asyncio.sleep(delay)
            if self.serving.get(serving.key) is not serving:
                return
            try:
                (revived,) = await self._start_specs([spec])
            except DeployFailed as exc:
                delay = min(delay * 2, CRASH_BACKOFF_MAX)
                log.warning(
                    "%s did not come back (next try in %.0fs): %s", crashed.name, delay, exc
                )
                continue
            if self.serving.get(serving.key) is not serving:
                await self._runtime.stop(revived)
                return
            serving.instances[serving.instances.index(crashed)] = revived
            serving.down.discard(crashed.name)
            self.serving.publish()
            log.info("%s is back", crashed.name)
            return

    # restarts of the platform

    async def restore(self) -> None:
        """After a restart: mark interrupted deploys failed, remove instances that serve no
        release, and bring back every release that was serving. Bringing back runs in the
        background, under each job's lock (a push waits for it), and routes each job version
        as soon as it is ready."""
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
        keep = {spec.name for r, m in restorable for spec in self._specs(r, m)}
        for name in await self._runtime.remove_strays(keep):
            log.warning("removed %s: it served no release", name)
        for release, manifest in restorable:
            self._in_background(self._restore(release, manifest))

    async def _restore(self, release: Release, manifest: Manifest) -> None:
        try:
            what = f"restore of {release.job} {release.label}"
            async with self.locks.hold(release.job, what, cancellable=False):
                await self._bring_back(release, manifest, adopt=True)
        except LockTimeout as exc:
            log.error("could not restore %s %s: %s", release.job, release.label, exc)

    async def shutdown(self) -> None:
        """Stop deploys under way (they record themselves as interrupted), stop background
        work, let replaced releases finish draining, then stop every instance."""
        running = [r.task for r in self.running.values()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.serving.clear()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self._runtime.close()
