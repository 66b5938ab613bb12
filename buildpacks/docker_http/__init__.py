"""The docker-http job type: the job's own Dockerfile; its server answers HTTP on `$PORT`.

Calls reach it with the path after `/pub/job/<name>/<version>` unchanged. It is ready when
`jobtype_extra.health_path` answers 2xx, or, without one, when its port accepts connections.
"""

from __future__ import annotations

from buildpacks.build import (
    BuildFailed,
    BuildRequest,
    DirectoryArtifact,
    ImageArtifact,
    Probe,
)
from buildpacks.docker_build import ImageBuilder
from buildpacks.manifest import DockerHttpExtra
from buildpacks.source import require_file


class DockerHttpBuildpack:
    jobtype = "docker-http"

    def build_directory(self, request: BuildRequest) -> DirectoryArtifact:
        raise BuildFailed(f"jobtype {self.jobtype} builds an image: run with --runtime docker")

    def build_image(self, request: BuildRequest, builder: ImageBuilder) -> ImageArtifact:
        extra = request.manifest.extra_as(DockerHttpExtra)
        if request.manifest.secret_build_env_file:
            raise BuildFailed(
                f"secret_build_env_file is not supported for {self.jobtype} jobs: the values would"
                " have to pass as build arguments, which images keep; use a python3 job, or"
                " build_env for values that are not secret"
            )
        if request.build_secrets:
            raise BuildFailed(
                f"build config (config:set --build) is not supported for {self.jobtype} jobs: the"
                " values would have to pass as build arguments, which images keep; remove it with"
                " config:unset --build"
            )
        require_file(request.source_dir, extra.dockerfile_path, "jobtype_extra.dockerfile_path")
        tag, image_id = builder.build(
            request,
            request.source_dir,
            dockerfile=extra.dockerfile_path,
            buildargs=request.manifest.build_env,
        )
        return self.artifact(tag, image_id, extra)

    def artifact(self, tag: str, image_id: str, extra: DockerHttpExtra) -> ImageArtifact:
        probe = Probe("http", extra.health_path) if extra.health_path else Probe("tcp")
        return ImageArtifact(image=tag, image_id=image_id, probe=probe)
