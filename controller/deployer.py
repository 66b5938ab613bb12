"""One deploy: checkout → manifest → build → release → start → ready → swap → retire.

A failure at any step leaves whatever was serving untouched: new instances are stopped, the
release is recorded as failed with its log, and the routes are not changed.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from buildpacks.build import BuildFailed, Buildpack, BuildRequest
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
    ) -> None:
        self._store = store
        self._repos = repos
        self._buildpacks = buildpacks
        self._runtime = runtime
        self._publish_snapshot = publish
        self._settings = settings
        self._locks: dict[str, asyncio.Lock] = {}
        self._generation = 0
        self.serving: dict[tuple[str, str], Serving] = {}
        self.deploying: dict[str, Release] = {}
        self._retiring: set[asyncio.Task[None]] = set()

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
        lock = self._locks.setdefault(job, asyncio.Lock())
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
            artifact = await self._build(release, manifest, source_dir, build_log)
        finally:
            await asyncio.to_thread(shutil.rmtree, checkout, True)
        release = self._store.set_artifact(release, artifact)
        instances = await self._start(release, manifest, build_log)
        try:
            if branch is not None:
                branch.apply()  # the commit point: from here on this release is the job's
        except RefUpdateFailed as exc:
            await self._stop_all(instances)
            raise DeployFailed(str(exc)) from None
        except BaseException as exc:
            await self._stop_all(instances)
            if isinstance(exc, Exception):
                raise DeployFailed(f"could not move {branch.branch}: {exc}") from exc
            raise
        self._swap(Serving(release, manifest, instances))
        build_log(
            f"Deployed {job} {manifest.version} ({release.label}): "
            f"{self.job_url(job, manifest.version)}"
        )
        return self._store.finish_release(release, ReleaseStatus.SERVING, build_log=build_log.text)

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
        try:
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

    async def _start(
        self, release: Release, manifest: Manifest, build_log: BuildLog
    ) -> list[Instance]:
        assert release.artifact is not None and release.version is not None
        env = self._instance_env(release, manifest)
        specs = [
            InstanceSpec(release.job, release.version, release.number, i, release.artifact, env)
            for i in range(manifest.replicas)
        ]
        build_log(f"Starting {len(specs)} instance(s) on the {self._runtime.name} runtime")
        instances: list[Instance] = []
        try:
            for spec in specs:
                instances.append(await self._runtime.start(spec))
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
            task = asyncio.ensure_future(self._stop_all(old.instances))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def publish(self) -> None:
        self._generation += 1
        routes = [
            JobRoute(
                job=s.release.job,
                version=s.manifest.version,
                release=s.release.number,
                upstreams=tuple(i.url for i in s.instances),
                public_endpoints=frozenset(s.manifest.public_endpoints),
            )
            for s in self.serving.values()
        ]
        self._publish_snapshot(RouteSnapshot.build(routes, self._generation))

    async def restore(self) -> None:
        """After a restart: mark interrupted deploys failed and start, side by side, every
        release that was serving; each job version is routed as soon as it is ready."""
        for release in self._store.fail_interrupted_deploys("interrupted by restart"):
            log.warning("deploy %s %s was interrupted by a restart", release.job, release.label)
        newest: dict[tuple[str, str | None], Release] = {}
        for release in self._store.releases(status=ReleaseStatus.SERVING):  # by job, number
            newest[(release.job, release.version)] = release
        for release in newest.values():
            self._store.supersede_serving(release)
        await asyncio.gather(*(self._restore(release) for release in newest.values()))

    async def _restore(self, release: Release) -> None:
        assert release.version is not None
        try:
            manifest = Manifest.model_validate(release.manifest)
            instances = await self._start(release, manifest, BuildLog(lambda _line: None))
        except (DeployFailed, ValidationError) as exc:
            log.error("could not restore %s %s: %s", release.job, release.label, exc)
            return
        self.serving[(release.job, release.version)] = Serving(release, manifest, instances)
        self.publish()
        log.info("restored %s %s (%s)", release.job, release.version, release.label)

    async def shutdown(self) -> None:
        self.serving.clear()
        self.publish()
        await asyncio.gather(*self._retiring)
        await self._runtime.close()
