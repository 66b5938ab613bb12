"""The python3 buildpack's docker target: a generated Dockerfile around the job's class.

Layers go from what changes least to what changes most: base, venv, system packages, build
environment, requirements and `pip install`, the wrapper, then the job's code. A code-only
change rebuilds only the last layers; the dependency layer comes from the engine's cache.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from buildpacks.build import BuildRequest, ImageArtifact, Probe
from buildpacks.docker_build import (
    DockerBuildSettings,
    ImageBuilder,
    image_labels,
    label_instruction,
)
from buildpacks.python3.common import check_source, copy_wrapper, wrapper_env
from buildpacks.python3.companions import CHECK_SCRIPT
from buildpacks.source import copy_job_source

DEFAULT_PYTHON_VERSION = "3.11"
CA_PATH = "/etc/racetrack/build-ca.crt"
SECRETS_HELPER = Path(__file__).parent / "with_build_secrets.py"
JOB_USER_ID = 10001


@dataclass(frozen=True)
class DockerfileSpec:
    """Everything the generated Dockerfile depends on."""

    base_image: str
    entrypoint_env: dict[str, str]
    system_dependencies: tuple[str, ...] = ()
    build_env_names: tuple[str, ...] = ()
    has_requirements: bool = False
    check_requirements: bool = True
    ca_bundle: bool = False
    build_secrets: bool = False
    labels: dict[str, str] = field(default_factory=dict)


def render_dockerfile(spec: DockerfileSpec) -> str:
    lines = [f"FROM {spec.base_image}"]
    apt_options = ""
    if spec.ca_bundle:
        lines += [
            f"COPY racetrack/build-ca.crt {CA_PATH}",
            # ARG, not ENV: trusted while building, not part of the running job's environment
            f"ARG PIP_CERT={CA_PATH}",
            f"ARG SSL_CERT_FILE={CA_PATH}",
        ]
        apt_options = f" -o Acquire::https::CAInfo={CA_PATH}"
    lines += [
        "RUN python3 -m venv /opt/venv",
        "ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
    ]
    if spec.system_dependencies:
        packages = " ".join(spec.system_dependencies)
        lines.append(
            f"RUN apt-get{apt_options} update"
            f" && apt-get{apt_options} install -y --no-install-recommends {packages}"
            " && rm -rf /var/lib/apt/lists/*"
        )
    lines += [f"ARG {name}" for name in spec.build_env_names]
    if spec.has_requirements:
        runner = ""
        if spec.build_secrets:
            lines += [
                "COPY racetrack/with_build_secrets.py /opt/racetrack/with_build_secrets.py",
                "ARG RACETRACK_SECRETS_URL",
            ]
            runner = "python3 /opt/racetrack/with_build_secrets.py "
        lines += [
            "COPY racetrack/requirements.txt /opt/racetrack/requirements.txt",
            f"RUN {runner}pip install --no-cache-dir -r /opt/racetrack/requirements.txt",
            # Racetrack's runner environment's companions (see companions.py), when needed
            f"RUN python -c {shlex.quote(CHECK_SCRIPT)} | xargs -r pip install --no-cache-dir",
        ]
        if spec.check_requirements:
            lines.append("RUN pip check")
    lines += [
        # everything that does not depend on the code comes before it, so that it stays cached
        f"RUN useradd --system --uid {JOB_USER_ID} --home-dir /tmp racetrack",
        "COPY racetrack/wrapper /opt/racetrack/wrapper",
        "ENV " + " ".join(f"{k}={shlex.quote(v)}" for k, v in spec.entrypoint_env.items()),
        "WORKDIR /src/job",
        'CMD ["python", "-m", "racetrack_job_wrapper"]',
        "COPY job /src/job",
        "RUN python -m compileall -q /src/job /opt/racetrack/wrapper || true",
        f"USER {JOB_USER_ID}",
    ]
    if spec.labels:
        lines.append(label_instruction(spec.labels))
    return "\n".join(lines) + "\n"


def build_image(request: BuildRequest, builder: ImageBuilder) -> ImageArtifact:
    manifest = request.manifest
    extra = manifest.python3
    settings: DockerBuildSettings = builder.settings
    requirements = check_source(request.source_dir, extra, request.progress)
    # the secret build env file's values and the build config, read by the platform
    secrets = builder.build_secrets(request.build_secrets) if requirements is not None else {}

    spec = DockerfileSpec(
        base_image=settings.python_base_image
        or f"python:{extra.python_version or DEFAULT_PYTHON_VERSION}-slim",
        entrypoint_env=wrapper_env(extra, job_dir="/src/job", wrapper_dir="/opt/racetrack/wrapper"),
        system_dependencies=tuple(manifest.system_dependencies),
        build_env_names=tuple(manifest.build_env),
        has_requirements=requirements is not None,
        check_requirements=extra.check_requirements,
        ca_bundle=settings.ca_bundle is not None,
        build_secrets=bool(secrets),
        labels=image_labels(request, builder.platform_id),
    )
    with tempfile.TemporaryDirectory(prefix="racetrack-context-") as tmp:
        context = Path(tmp)
        for warning in copy_job_source(request.source_dir, context / "job", manifest):
            request.progress(f"Warning: {warning}")
        copy_wrapper(context / "racetrack" / "wrapper")
        if requirements is not None:
            shutil.copyfile(requirements, context / "racetrack" / "requirements.txt")
        if settings.ca_bundle is not None:
            shutil.copyfile(settings.ca_bundle, context / "racetrack" / "build-ca.crt")
        if spec.build_secrets:
            shutil.copyfile(SECRETS_HELPER, context / "racetrack" / "with_build_secrets.py")
        (context / "Dockerfile").write_text(render_dockerfile(spec))
        tag, image_id = builder.build(
            request, context, buildargs=manifest.build_env, secrets=secrets, labelled=True
        )
    return ImageArtifact(image=tag, image_id=image_id, probe=Probe("wrapper"))
