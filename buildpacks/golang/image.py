"""The golang buildpack's docker target: a multi-stage build of the prepared module.

The build stage compiles with `--golang-base-image`, reaching modules through the module proxy
the machine's Go is configured for (its GOPROXY, GOSUMDB… pass as build arguments of that stage
alone, which is not part of the image); the final stage holds the binary, the Swagger UI assets
and the job's files as pushed (its working directory), on `--golang-runtime-image`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

from buildpacks.build import BuildFailed, BuildRequest, ImageArtifact, Probe
from buildpacks.docker_build import (
    BUILD_STAGE_LABEL,
    DockerBuildSettings,
    ImageBuilder,
    image_labels,
    image_tag,
    label_instruction,
)
from buildpacks.golang.toolchain import deadline, module_settings
from buildpacks.golang.tree import prepare
from buildpacks.golang.wrapper import WRAPPER_DIR, copy_swagger_ui
from buildpacks.source import copy_job_source

CA_PATH = "/etc/racetrack/build-ca.crt"
SWAGGER_UI_DIR = "/opt/racetrack/swagger_ui"
JOB_USER_ID = 10001
GO_BUILD = (
    f'go build -mod=mod -trimpath -buildvcs=false "-ldflags=-s -w" -o /out/job-server'
    f" ./{WRAPPER_DIR}"
)


def render_dockerfile(
    settings: DockerBuildSettings,
    build_arg_names: list[str],
    stage_label: str,
    labels: dict[str, str] | None = None,
    *,
    ca_bundle: bool = False,
) -> str:
    lines = [
        f"FROM {settings.golang_base_image} AS build",
        # labelled so that the builder can remove this stage's image once the build is done
        f"LABEL {BUILD_STAGE_LABEL}={json.dumps(stage_label)}",
        "WORKDIR /src/job",
        *(f"ARG {name}" for name in dict.fromkeys(build_arg_names)),
    ]
    if ca_bundle:
        # ARG, not ENV, and in the build stage only: trusted while modules download
        lines += [f"COPY racetrack/build-ca.crt {CA_PATH}", f"ARG SSL_CERT_FILE={CA_PATH}"]
    lines += [
        "ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off",
        "COPY build /src/job",
        f"RUN {GO_BUILD}",
        "",
        f"FROM {settings.golang_runtime_image}",
        f"COPY racetrack/swagger_ui {SWAGGER_UI_DIR}",
        "COPY job /src/job",
        "COPY --from=build /out/job-server /usr/local/bin/job-server",
        f"ENV RACETRACK_SWAGGER_UI_DIR={SWAGGER_UI_DIR}",
        "WORKDIR /src/job",
        f"USER {JOB_USER_ID}",
        'CMD ["/usr/local/bin/job-server"]',
    ]
    if labels:
        lines.append(label_instruction(labels))
    return "\n".join(lines) + "\n"


def build_image(request: BuildRequest, builder: ImageBuilder) -> ImageArtifact:
    if request.manifest.secret_build_env_file:
        raise BuildFailed(
            "secret_build_env_file is not supported for golang jobs on docker: the values would"
            " have to pass as build arguments; use build_env for values that are not secret"
        )
    if request.build_secrets:
        raise BuildFailed(
            "build config (config:set --build) is not supported for golang jobs on docker: the"
            " values would have to pass as build arguments; remove it with config:unset --build"
        )
    settings = builder.settings
    # the job's build_env wins over the machine's module settings
    buildargs = {**module_settings(), **request.manifest.build_env}
    with tempfile.TemporaryDirectory(prefix="racetrack-context-") as tmp:
        context = Path(tmp)
        prepare(request, context / "build")
        copy_job_source(request.source_dir, context / "job", request.manifest)
        copy_swagger_ui(context / "racetrack" / "swagger_ui")
        if settings.ca_bundle is not None:
            shutil.copyfile(settings.ca_bundle, context / "racetrack" / "build-ca.crt")
        tag = image_tag(request)
        (context / "Dockerfile").write_text(
            render_dockerfile(
                settings,
                list(buildargs),
                tag,
                image_labels(request, builder.platform_id),
                ca_bundle=settings.ca_bundle is not None,
            )
        )
        with deadline(request.cancelled) as bound:
            bounded = dataclasses.replace(request, cancelled=bound.stop)
            try:
                tag, image_id = builder.build(bounded, context, buildargs=buildargs, labelled=True)
            except BuildFailed:
                if bound.expired:
                    raise bound.failure("the image build") from None
                raise
            finally:
                builder.remove_build_stages(tag)
    return ImageArtifact(image=tag, image_id=image_id, probe=Probe("http", "/ready"))
