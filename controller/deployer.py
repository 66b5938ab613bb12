"""One deploy: checkout → manifest → build → release → start → ready → swap → retire.

A failure at any step leaves whatever was serving untouched: new instances are stopped, the
release is recorded as failed with its log, and the routes are not changed.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from buildpacks.build import (
    Artifact,
    BuildFailed,
    Buildpack,
    BuildRequest,
    ImageArtifact,
    Routing,
)
from buildpacks.docker_build import ImageBuilder
from buildpacks.manifest import Manifest, ManifestError
from buildpacks.source import load_job_source
from controller.runtimes.base import Instance, InstanceFailed, InstanceSpec, Runtime
from controller.store import Release, ReleaseStatus, Store
from gitreceiver.interface import RefMoved, RefUpdate, RefUpdateFailed
from gitreceiver.repos import RepoStore
from router.routes import JobRoute, RouteSnapshot

log = logging.getLogger("racetrack.deployer")

Progress = Callable[[str], None]


class DeployFailed(Exception):
    """The deploy did not happen; the message (one line) says why."""


@dataclass
class Serving:
    """A release that receives calls, and its ready instances."""

    release: Release
    manifest: Manifest
    instances: list[Instance]


@dataclass
class BuildLog:
    """Every line of a deploy's output: streamed to the pusher and kept with the release."""

    forward: Progress
    lines: list[str] = field(default_factory=list)

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self.forward(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")


@dataclass(frozen=True)
class DeploySettings:
    public_url: str
    work_dir: Path
    ready_timeout: float = 180.0
    keep_releases: int = 5  # artifacts of the newest N releases of a job are kept for rollbacks


class Deployer:
    def __init__(
        self,
        *,
        store: Store,
        repos: RepoStore,
        buildpacks: Mapping[str, Buildpack],
        runtime: Runtime,
        publish: Callable[[RouteSnapshot], None],
        settings: DeploySettings,
        image_builder: ImageBuilder | None = None,
    ) -> None:
        self._store = store
        self._repos = repos
        self._buildpacks = buildpacks
        self._runtime = runtime
        self._image_builder = image_builder
        self._publish_snapshot = publish
        self._settings = settings
        self._locks: dict[str, asyncio.Lock] = {}
        self._generation = 0
        self.serving: dict[tuple[str, str], Serving] = {}
        self.deploying: dict[str, Release] = {}
        self._background: set[asyncio.Task[object]] = set()

    def _lock(self, job: str) -> asyncio.Lock:
        """One deploy (or restore) of a job at a time."""
        return self._locks.setdefault(job, asyncio.Lock())

    def job_url(self, job: str, version: str) -> str:
        return f"{self._settings.public_url}/pub/job/{job}/{version}/"

    async def deploy(
        self,
        job: str,
        commit: str,
        deployed_by: str,
        progress: Progress,
        branch: RefUpdate | None = None,
    ) -> Release:
        """Deploy `commit` as a new release. For a push, `branch` moves at the commit point:
        after the release is ready, before it serves, while this job's lock is held."""
        lock = self._lock(job)
        if lock.locked():
            progress(f"Waiting for the deploy of {job} already running")
        async with lock:
            if branch is not None:
                try:
                    branch.check()
                except RefMoved as exc:
                    raise DeployFailed(str(exc)) from None
            release = self._store.create_release(job, commit, deployed_by)
            self.deploying[job] = release
            build_log = BuildLog(progress)
            try:
                release = await self._deploy(release, build_log, branch)
            except DeployFailed as exc:
                build_log(f"Deploy of {job} {release.label} failed: {exc}")
                self._store.finish_release(
                    release, ReleaseStatus.FAILED, build_log=build_log.text, error=str(exc)
                )
                raise
            except BaseException as exc:
                reason = f"internal error: {exc!r}"
                self._store.finish_release(
                    release, ReleaseStatus.FAILED, build_log=build_log.text, error=reason
                )
                raise
            finally:
                self.deploying.pop(job, None)
            return release

    async def _deploy(
        self, release: Release, build_log: BuildLog, branch: RefUpdate | None
    ) -> Release:
        job, commit = release.job, release.commit_sha
        build_log(f"Deploying {job} at {commit[:12]} as release {release.label}")
        self._settings.work_dir.mkdir(parents=True, exist_ok=True)
        checkout = Path(
            tempfile.mkdtemp(prefix=f"{job}-{release.label}-", dir=self._settings.work_dir)
        )
        try:
            manifest, source_dir = await self._read_source(job, commit, checkout, build_log)
            release = self._store.describe_release(
                release,
                version=manifest.version,
                jobtype=manifest.jobtype,
                manifest=manifest.model_dump(mode="json"),
            )
            build_log(f"Job {job} version {manifest.version}, jobtype {manifest.jobtype}")
            if manifest.secret_runtime_env_file:
                build_log("Warning: secret_runtime_env_file is not supported yet and was ignored")
            artifact = await self._build(release, manifest, source_dir, build_log)
        finally:
            await asyncio.to_thread(shutil.rmtree, checkout, True)
        release = self._store.set_artifact(release, artifact)
        await self._roll_out(release, manifest, build_log, branch)
        build_log(
            f"Deployed {job} {manifest.version} ({release.label}): "
            f"{self.job_url(job, manifest.version)}"
        )
        self._in_background(self._prune(job))
        return self._store.finish_release(release, ReleaseStatus.SERVING, build_log=build_log.text)

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
        displaced: Serving | None = None
        if exclusive is not None:
            displaced = await self._make_room(release, manifest, exclusive, build_log)
        try:
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
            if displaced is not None:
                await self._reinstate(displaced)
            raise
        self._swap(Serving(release, manifest, instances))

    async def _make_room(
        self, release: Release, manifest: Manifest, port: int, build_log: BuildLog
    ) -> Serving | None:
        """An artifact that holds a fixed host port: stop the release of the same job version
        that holds it (returned, to start again if this deploy fails); refuse when anything
        else holds it."""
        key = (release.job, release.version)
        if manifest.replicas > 1:
            raise DeployFailed(
                f"replicas: {manifest.replicas} instances cannot share port {port} (the job's"
                " fixed port, in host network mode); use 1 replica or a named docker network"
            )
        for other_key, other in self.serving.items():
            if (
                other_key != key
                and self._runtime.exclusive_port(other.release.artifact or {}) == port
            ):
                raise DeployFailed(
                    f"port {port} is held by {other.release.job} {other.release.version}"
                    f" ({other.release.label}): in host network mode these jobs share the host's"
                    " ports; set another jobtype_extra.user_module_port, or delete that version"
                )
        displaced = self.serving.pop(key, None)
        if displaced is not None:
            build_log(
                f"Warning: port {port} is fixed in host network mode: stopping"
                f" {displaced.release.label} before starting {release.label}"
            )
            self.publish()
            await self._stop_all(displaced.instances)
        if self._runtime.port_taken(port):
            if displaced is not None:
                await self._reinstate(displaced)
            raise DeployFailed(f"port {port} is in use on this host by a program outside Racetrack")
        return displaced

    async def _reinstate(self, previous: Serving) -> None:
        """Start a release that was stopped to make room for one that then failed."""
        try:
            instances = await self._start(previous.release, previous.manifest, _quiet())
        except DeployFailed as exc:
            log.error("could not start %s again: %s", previous.release.label, exc)
            return
        assert previous.release.version is not None
        self.serving[(previous.release.job, previous.release.version)] = Serving(
            previous.release, previous.manifest, instances
        )
        self.publish()

    async def _read_source(
        self, job: str, commit: str, checkout: Path, build_log: BuildLog
    ) -> tuple[Manifest, Path]:
        warnings = await asyncio.to_thread(self._repos.export, job, commit, checkout)
        for warning in warnings:
            build_log(f"Warning: {warning}")
        try:
            source = await asyncio.to_thread(load_job_source, checkout, job)
        except ManifestError as exc:
            for error in exc.errors:
                build_log(f"  {error}")
            raise DeployFailed(f"job.yaml is invalid: {'; '.join(exc.errors)}") from None
        return source.manifest, source.job_dir

    async def _build(
        self, release: Release, manifest: Manifest, source_dir: Path, build_log: BuildLog
    ) -> dict[str, object]:
        buildpack = self._buildpacks.get(manifest.jobtype_base)
        if buildpack is None:
            available = ", ".join(sorted(self._buildpacks)) or "none"
            raise DeployFailed(
                f"jobtype {manifest.jobtype_base!r} cannot run on the {self._runtime.name}"
                f" runtime (available here: {available})"
            )
        loop = asyncio.get_running_loop()
        request = BuildRequest(
            job=release.job,
            version=manifest.version,
            release=release.number,
            commit=release.commit_sha,
            manifest=manifest,
            source_dir=source_dir,
            progress=lambda line: loop.call_soon_threadsafe(build_log, line),
        )
        artifact: Artifact
        try:
            if self._runtime.artifact_kind == ImageArtifact.kind:
                assert self._image_builder is not None
                builder = self._image_builder
                artifact = await asyncio.to_thread(buildpack.build_image, request, builder)
            else:
                artifact = await asyncio.to_thread(buildpack.build_directory, request)
        except BuildFailed as exc:
            raise DeployFailed(f"build failed: {exc}") from None
        return artifact.to_record()

    def _instance_env(self, release: Release, manifest: Manifest) -> dict[str, str]:
        return {
            **manifest.runtime_env,
            "JOB_NAME": release.job,
            "JOB_VERSION": manifest.version,
            "GIT_VERSION": release.commit_sha,
            "PUB_URL": f"{self._settings.public_url}/pub",
        }

    def _specs(self, release: Release, manifest: Manifest) -> list[InstanceSpec]:
        assert release.artifact is not None and release.version is not None
        env = self._instance_env(release, manifest)
        return [
            InstanceSpec(
                release.job,
                release.version,
                release.number,
                i,
                release.artifact,
                env,
                manifest.resources,
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
        instances: list[Instance] = []
        try:
            for spec in specs:
                adopted = await self._runtime.adopt(spec) if adopt else None
                instances.append(adopted or await self._runtime.start(spec))
            await asyncio.gather(
                *(self._runtime.wait_ready(i, self._settings.ready_timeout) for i in instances)
            )
        except (InstanceFailed, OSError) as exc:
            await self._stop_all(instances)
            raise DeployFailed(str(exc)) from None
        except BaseException:
            await self._stop_all(instances)
            raise
        build_log("All instances are ready")
        return instances

    async def _stop_all(self, instances: list[Instance]) -> None:
        await asyncio.gather(
            *(self._runtime.stop(i) for i in instances),
            return_exceptions=True,
        )

    def _swap(self, new: Serving) -> None:
        """Route to the new release, then retire the instances it replaces in the background:
        the push is done once the router has swapped, and stopping old instances (which let
        their in-flight calls finish) need not hold it up."""
        assert new.release.version is not None
        key = (new.release.job, new.release.version)
        old = self.serving.get(key)
        self.serving[key] = new
        self.publish()
        self._store.supersede_serving(new.release)
        if old is not None:
            self._in_background(self._stop_all(old.instances))

    def _in_background(self, work: Coroutine[Any, Any, object]) -> None:
        """Work the push need not wait for; shutdown waits for it."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _prune(self, job: str) -> None:
        """Keep the artifacts of the job's newest releases (for rollbacks), drop older ones."""
        in_use: set[str] = set()
        for serving in self.serving.values():
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

    def publish(self) -> None:
        self._generation += 1
        self._publish_snapshot(
            RouteSnapshot.build([route_of(s) for s in self.serving.values()], self._generation)
        )

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
        assert release.version is not None
        async with self._lock(release.job):
            try:
                instances = await self._start(release, manifest, _quiet(), adopt=True)
            except DeployFailed as exc:
                log.error("could not restore %s %s: %s", release.job, release.label, exc)
                return
            self.serving[(release.job, release.version)] = Serving(release, manifest, instances)
            self.publish()
        log.info("restored %s %s (%s)", release.job, release.version, release.label)

    async def shutdown(self) -> None:
        self.serving.clear()
        self.publish()
        await asyncio.gather(*self._background)
        await self._runtime.close()


def _quiet() -> BuildLog:
    return BuildLog(lambda _line: None)


def route_of(serving: Serving) -> JobRoute:
    release, manifest = serving.release, serving.manifest
    routing = Routing.from_record((release.artifact or {}).get("routing"))
    return JobRoute(
        job=release.job,
        version=manifest.version,
        release=release.number,
        upstreams=tuple(i.url for i in serving.instances),
        public_endpoints=frozenset(manifest.public_endpoints),
        commit=release.commit_sha,
        strip_prefix=routing.strip_prefix,
        platform_probes=routing.platform_probes,
    )
