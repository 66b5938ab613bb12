"""The docker-proxy job type: Racetrack's Dockerfile jobs, deployed unchanged.

The image is built like docker-http's, but the job's server listens on
`jobtype_extra.user_module_port` (default 7001), a call to `/api/v1/<path>` reaches it as
`/<path>`, and the platform answers `/live`, `/ready` and `/health` from the container's state.
"""

from __future__ import annotations

from buildpacks.build import ImageArtifact, Routing
from buildpacks.docker_http import DockerHttpBuildpack
from buildpacks.manifest import DockerHttpExtra, DockerProxyExtra


class DockerProxyBuildpack(DockerHttpBuildpack):
    jobtype = "docker-proxy"

    def artifact(self, tag: str, image_id: str, extra: DockerHttpExtra) -> ImageArtifact:
        assert isinstance(extra, DockerProxyExtra)
        probe = super().artifact(tag, image_id, extra).probe
        return ImageArtifact(
            image=tag,
            image_id=image_id,
            port=extra.user_module_port,
            probe=probe,
            routing=Routing(strip_prefix="/api/v1", platform_probes=True),
        )
