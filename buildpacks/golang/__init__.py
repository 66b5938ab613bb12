"""The golang job type: Racetrack's Go convention.

The job's root package defines `func Perform(input map[string]interface{}) (interface{}, error)`.
At build time a small `main` package that serves it over HTTP is generated inside the job's
module, and a multi-stage Dockerfile compiles it and copies the binary onto a small image.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from buildpacks.build import BuildFailed, BuildRequest, DirectoryArtifact, ImageArtifact, Probe
from buildpacks.docker_build import (
    BUILD_STAGE_LABEL,
    DockerBuildSettings,
    ImageBuilder,
    image_labels,
    image_tag,
    label_instruction,
)
from buildpacks.manifest import GolangExtra
from buildpacks.source import copy_job_source

WRAPPER_TEMPLATE = Path(__file__).parent / "wrapper.go.tmpl"
WRAPPER_DIR = "racetrack_wrapper"
DEFAULT_MODULE = "racetrack.local/job"
_MODULE_LINE = re.compile(r"^\s*module\s+(\S+)", re.MULTILINE)
_PERFORM = re.compile(r"^func\s+Perform\s*\(", re.MULTILINE)


def module_path(gomod_text: str) -> str:
    match = _MODULE_LINE.search(gomod_text)
    if match is None:
        raise BuildFailed("jobtype_extra.gomod: the file has no 'module' line")
    return match.group(1).strip('"')


def render_wrapper(module: str) -> str:
    return WRAPPER_TEMPLATE.read_text().replace("{{MODULE}}", module)


def render_dockerfile(
    settings: DockerBuildSettings,
    build_env_names: list[str],
    stage_label: str,
    labels: dict[str, str] | None = None,
) -> str:
    lines = [
        f"FROM {settings.golang_base_image} AS build",
        # labelled so that the builder can remove this stage's image once the build is done
        f"LABEL {BUILD_STAGE_LABEL}={json.dumps(stage_label)}",
        "WORKDIR /src/job",
        *(f"ARG {name}" for name in build_env_names),
        "COPY job /src/job",
        "ENV CGO_ENABLED=0 GOFLAGS=-mod=mod",
        f"RUN go build -o /out/job-server ./{WRAPPER_DIR}",
        "",
        f"FROM {settings.golang_runtime_image}",
        "COPY --from=build /out/job-server /usr/local/bin/job-server",
        "USER 10001",
        'CMD ["/usr/local/bin/job-server"]',
    ]
    if labels:
        lines.append(label_instruction(labels))
    return "\n".join(lines) + "\n"


class GolangBuildpack:
    jobtype = "golang"

    def build_directory(self, request: BuildRequest) -> DirectoryArtifact:
        raise BuildFailed("jobtype golang builds an image: run with --runtime docker")

    def build_image(self, request: BuildRequest, builder: ImageBuilder) -> ImageArtifact:
        extra = request.manifest.extra_as(GolangExtra)
        source = request.source_dir
        if request.manifest.secret_build_env_file:
            raise BuildFailed(
                "secret_build_env_file is not supported for golang jobs: the values would have to"
                " pass as build arguments, which images keep; use build_env for values that are"
                " not secret"
            )
        if request.build_secrets:
            raise BuildFailed(
                "build config (config:set --build) is not supported for golang jobs: the values"
                " would have to pass as build arguments, which images keep; remove it with"
                " config:unset --build"
            )
        if not any(_PERFORM.search(p.read_text(errors="replace")) for p in source.glob("*.go")):
            raise BuildFailed(
                "no 'func Perform(input map[string]interface{}) (interface{}, error)' in the"
                " .go files of the job's directory"
            )
        gomod = source / extra.gomod
        with tempfile.TemporaryDirectory(prefix="racetrack-context-") as tmp:
            context = Path(tmp)
            job = context / "job"
            for warning in copy_job_source(source, job, request.manifest):
                request.progress(f"Warning: {warning}")
            if gomod.is_file():
                module = module_path(gomod.read_text(errors="replace"))
            else:
                module = DEFAULT_MODULE
                (job / "go.mod").write_text(f"module {module}\n\ngo 1.19\n")
            (job / WRAPPER_DIR).mkdir(exist_ok=True)
            (job / WRAPPER_DIR / "main.go").write_text(render_wrapper(module))
            tag = image_tag(request)
            (context / "Dockerfile").write_text(
                render_dockerfile(
                    builder.settings,
                    list(request.manifest.build_env),
                    tag,
                    image_labels(request, builder.platform_id),
                )
            )
            try:
                tag, image_id = builder.build(
                    request, context, buildargs=request.manifest.build_env, labelled=True
                )
            finally:
                builder.remove_build_stages(tag)
        return ImageArtifact(image=tag, image_id=image_id, probe=Probe("http", "/ready"))
