"""From a pushed commit to an artifact: checkout, manifest, buildpack.

The buildpack runs in a worker thread. Cancelling the deploy sets the build's cancel event (the
buildpack stops its processes or build containers) and waits for the thread to end, so that a
cancelled build never keeps writing behind the next one.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from buildpacks.build import (
    Artifact,
    BuildFailed,
    BuildIsolation,
    Buildpack,
    BuildRequest,
    ImageArtifact,
)
from buildpacks.docker_build import ImageBuilder
from buildpacks.manifest import Manifest, ManifestError
from buildpacks.source import JobSource, load_job_source
from controller.errors import DeployFailed
from controller.store import Release
from gitreceiver.repos import CheckoutTooLarge, RepoStore

Progress = Callable[[str], None]
# lines a build thread may have handed to the event loop before it waits for them to be taken:
# a build that prints faster than the pusher reads is slowed down, not buffered without end
MAX_PENDING_LINES = 10_000


class _ThreadProgress:
    """Build output from the buildpack's thread to `progress` on the event loop, with at most
    MAX_PENDING_LINES waiting."""

    def __init__(self, progress: Progress, loop: asyncio.AbstractEventLoop) -> None:
        self._progress = progress
        self._loop = loop
        self._slots = threading.BoundedSemaphore(MAX_PENDING_LINES)

    def __call__(self, line: str) -> None:
        self._slots.acquire()
        try:
            self._loop.call_soon_threadsafe(self._deliver, line)
        except RuntimeError:  # the loop is closed: the platform is stopping
            self._slots.release()

    def _deliver(self, line: str) -> None:
        try:
            self._progress(line)
        finally:
            self._slots.release()


class BuildStep:
    def __init__(
        self,
        *,
        repos: RepoStore,
        buildpacks: Mapping[str, Buildpack],
        artifact_kind: str,
        work_dir: Path,
        image_builder: ImageBuilder | None = None,
        isolation: Callable[[str], BuildIsolation | None] = lambda _job: None,
    ) -> None:
        self._repos = repos
        self._buildpacks = buildpacks
        self._artifact_kind = artifact_kind
        self._work_dir = work_dir
        self._image_builder = image_builder
        self._isolation = isolation  # the sandbox for a job's build steps that run its code

    def remove_stale_checkouts(self) -> list[Path]:
        """After a restart: checkouts of deploys that were under way (or ran out of disk)."""
        stale = list(self._work_dir.iterdir()) if self._work_dir.is_dir() else []
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return stale

    async def checkout_and_read(
        self, release: Release, checkout: Path, progress: Progress
    ) -> JobSource:
        """Check the commit out and read the job's manifest (and the secret env files the
        commit holds); the manifest's warnings go to the output, each once."""
        try:
            warnings = await asyncio.to_thread(
                self._repos.export, release.job, release.commit_sha, checkout
            )
        except CheckoutTooLarge as exc:
            raise DeployFailed(str(exc)) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DeployFailed(
                    "no space left on device while checking out the commit"
                ) from None
            raise
        for warning in warnings:
            progress(f"Warning: {warning}")
        try:
            source = await asyncio.to_thread(load_job_source, checkout, release.job)
        except ManifestError as exc:
            for error in exc.errors:
                progress(f"  {error}")
            raise DeployFailed(f"job.yaml is invalid: {'; '.join(exc.errors)}") from None
        except BuildFailed as exc:  # a secret env file that is not NAME=VALUE lines
            raise DeployFailed(str(exc)) from None
        for warning in source.warnings:
            progress(f"Warning: {warning}")
        return source

    def checkout_dir(self, release: Release) -> Path:
        self._work_dir.mkdir(parents=True, exist_ok=True)
        checkout = Path(
            tempfile.mkdtemp(prefix=f"{release.job}-{release.label}-", dir=self._work_dir)
        )
        checkout.chmod(0o755)  # the build's sandbox reads it as the job's user (data dir: 0700)
        return checkout

    @staticmethod
    async def remove_checkout(checkout: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, checkout, True)

    async def build(
        self,
        release: Release,
        manifest: Manifest,
        source_dir: Path,
        progress: Progress,
        *,
        build_secrets: Mapping[str, str] | None = None,
    ) -> Artifact:
        """The artifact; DeployFailed names what went wrong. `build_secrets`: the
        build's secret environment (never shown, never in the artifact)."""
        buildpack = self._buildpacks.get(manifest.jobtype_base)
        if buildpack is None:
            available = ", ".join(sorted(self._buildpacks)) or "none"
            raise DeployFailed(
                f"jobtype {manifest.jobtype_base!r} has no buildpack here (available: {available})"
            )
        request = BuildRequest(
            job=release.job,
            version=manifest.version,
            release=release.number,
            commit=release.commit_sha,
            manifest=manifest,
            source_dir=source_dir,
            progress=_ThreadProgress(progress, asyncio.get_running_loop()),
            build_secrets=dict(build_secrets or {}),
            isolation=self._isolation(release.job),
        )

        def run() -> Artifact:
            if self._artifact_kind == ImageArtifact.kind:
                builder = self._image_builder
                assert builder is not None
                image = buildpack.build_image(request, builder)
                if builder.settings.registry is None:
                    return image
                return builder.push(image, request.progress)
            return buildpack.build_directory(request)

        building = asyncio.ensure_future(asyncio.to_thread(run))
        try:
            artifact = await asyncio.shield(building)
        except asyncio.CancelledError:
            request.cancelled.set()  # the buildpack stops its processes and fails soon
            await asyncio.shield(asyncio.wait([building]))
            if not building.cancelled():
                building.exception()  # retrieved: it is the cancellation's doing
            raise
        except BuildFailed as exc:
            raise DeployFailed(f"build failed: {exc}") from None
        return artifact
