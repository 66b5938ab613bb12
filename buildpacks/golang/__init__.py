"""The golang job type: Racetrack's Go conventions, on the docker and the local runtime.

The job's root package defines one of
  `func Perform(input map[string]interface{}) (interface{}, error)` (the plugin's), or
  `func Perform(args []interface{}, kwargs map[string]interface{}) (interface{}, error)`
  (the user guide's), found before anything compiles (`signature`). At build time a `main`
  package that serves it is generated inside the build's copy of the job's module (`tree`,
  `wrapper`), and compiled: in a multi-stage image build (`image`) or natively with the
  machine's Go (`directory`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from buildpacks.build import BuildRequest, DirectoryArtifact, ImageArtifact
from buildpacks.docker_build import ImageBuilder
from buildpacks.golang.directory import GoDirectoryBuilder
from buildpacks.golang.image import build_image, render_dockerfile
from buildpacks.golang.signature import Form
from buildpacks.golang.toolchain import Toolchain, host_toolchain
from buildpacks.golang.tree import DEFAULT_MODULE, module_path
from buildpacks.golang.wrapper import WRAPPER_DIR, render_adapter


def render_wrapper(module: str, form: Form = Form.PLUGIN) -> str:
    """The generated adapter that imports the job's module and calls its Perform."""
    return render_adapter(module, form)


class GolangBuildpack:
    jobtype = "golang"

    def __init__(
        self,
        artifacts_root: Path,
        cache_root: Path,
        work_root: Path,
        toolchain: Callable[[], Toolchain | None] = host_toolchain,
    ) -> None:
        self._directories = GoDirectoryBuilder(artifacts_root, cache_root, work_root, toolchain)

    def build_directory(self, request: BuildRequest) -> DirectoryArtifact:
        return self._directories.build(request)

    def build_image(self, request: BuildRequest, builder: ImageBuilder) -> ImageArtifact:
        return build_image(request, builder)


__all__ = [
    "DEFAULT_MODULE",
    "WRAPPER_DIR",
    "Form",
    "GolangBuildpack",
    "module_path",
    "render_dockerfile",
    "render_wrapper",
]
