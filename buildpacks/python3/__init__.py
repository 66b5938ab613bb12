"""The python3 job type: Racetrack's `JobEntrypoint` convention, as a directory or an image."""

from __future__ import annotations

from pathlib import Path

from buildpacks.build import BuildRequest, DirectoryArtifact, ImageArtifact
from buildpacks.docker_build import ImageBuilder
from buildpacks.python3 import image
from buildpacks.python3.directory import DirectoryBuilder


class Python3Buildpack:
    jobtype = "python3"

    def __init__(self, artifacts_root: Path, cache_root: Path) -> None:
        self._directories = DirectoryBuilder(artifacts_root, cache_root)

    def build_directory(self, request: BuildRequest) -> DirectoryArtifact:
        return self._directories.build(request)

    def build_image(self, request: BuildRequest, builder: ImageBuilder) -> ImageArtifact:
        return image.build_image(request, builder)

    def remove_incomplete(self) -> list[Path]:
        """After a restart: what builds that did not finish left in the artifacts and cache."""
        return self._directories.remove_incomplete()
