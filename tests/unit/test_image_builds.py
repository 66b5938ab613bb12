"""What the docker buildpacks generate, and how the runtime configures containers."""

import re
import subprocess
import sys

import pytest

from buildpacks.build import BuildRequest, ImageArtifact, SecretMask
from buildpacks.docker_build import DockerBuildSettings, image_tag
from buildpacks.golang import module_path, render_wrapper
from buildpacks.golang import render_dockerfile as golang_dockerfile
from buildpacks.manifest import Resources, parse_manifest
from buildpacks.python3.companions import CHECK_SCRIPT, missing_companions
from buildpacks.python3.image import DockerfileSpec, render_dockerfile
from controller.runtimes.base import ReleaseSpec
from controller.runtimes.docker import DockerRuntime
from controller.runtimes.names import release_name, safe_name
from controller.runtimes.resources import cpu_cores, docker_limits, memory_bytes


def request(version: str = "1.2.3") -> BuildRequest:
    manifest = parse_manifest(
        {
            "name": "adder",
            "owner_email": "a@b.c",
            "jobtype": "python3",
            "version": version,
            "jobtype_extra": {"entrypoint_path": "a.py"},
        }
    )
    return BuildRequest("adder", version, 7, "0123456789abcdef", manifest, None, print)  # type: ignore[arg-type]


def test_image_tags_are_per_release_and_docker_safe():
    assert image_tag(request()) == "racetrack-job/adder:1.2.3-r7-0123456789ab"
    assert image_tag(request("1.2.3-rc.1+build.5")) == (
        "racetrack-job/adder:1.2.3-rc.1_build.5-r7-0123456789ab"
    )


def test_python3_dockerfile_puts_dependencies_before_code():
    text = render_dockerfile(
        DockerfileSpec(
            base_image="racetrack/python3-base:bookworm",
            entrypoint_env={"ENTRYPOINT_PATH": "a.py"},
            system_dependencies=("libgomp1",),
            build_env_names=("DEBUG",),
            has_requirements=True,
            ca_bundle=True,
            build_secrets=True,
            labels={"racetrack.job": "adder", "racetrack.release": "7"},
        )
    )
    lines = text.splitlines()
    order = [
        "FROM racetrack/python3-base:bookworm",
        "COPY racetrack/build-ca.crt /etc/racetrack/build-ca.crt",
        "RUN python3 -m venv /opt/venv",
        "ARG DEBUG",
        "COPY racetrack/requirements.txt /opt/racetrack/requirements.txt",
        "RUN python3 /opt/racetrack/with_build_secrets.py pip install --no-cache-dir"
        " -r /opt/racetrack/requirements.txt",
        "RUN pip check",
        "COPY racetrack/wrapper /opt/racetrack/wrapper",
        'CMD ["python", "-m", "racetrack_job_wrapper"]',
        "COPY job /src/job",  # only what follows is rebuilt when only the code changes
        "USER 10001",
        'LABEL racetrack.job="adder" racetrack.release="7"',
    ]
    positions = [lines.index(line) for line in order]
    assert positions == sorted(positions)
    apt = next(line for line in lines if "apt-get" in line)
    assert "Acquire::https::CAInfo=/etc/racetrack/build-ca.crt" in apt and "libgomp1" in apt
    assert positions[order.index("RUN python3 -m venv /opt/venv")] < lines.index(apt)
    assert "ARG RACETRACK_SECRETS_URL" in lines  # secrets and the index URL come from there
    # build-only settings are ARGs, never ENV: they must not reach the running job
    assert not [
        line for line in lines if line.startswith("ENV") and "PIP_" in line.split("PATH")[0]
    ]


def test_python3_dockerfile_without_requirements_has_no_pip_step():
    text = render_dockerfile(DockerfileSpec("python:3.11-slim", {"ENTRYPOINT_PATH": "a.py"}))
    assert "pip install" not in text and "requirements" not in text
    assert text.startswith("FROM python:3.11-slim\n")


def test_secret_values_are_masked_longest_first():
    mask = SecretMask({"A": "s3cret", "B": "s3cret-and-more", "C": "x"})
    assert mask("got s3cret-and-more and s3cret; x stays") == "got ******** and ********; x stays"


def test_golang_wrapper_imports_the_jobs_module():
    assert module_path('// comment\nmodule "example.com/adder"\n\ngo 1.19\n') == "example.com/adder"
    wrapper = render_wrapper("example.com/adder")
    assert 'job "example.com/adder"' in wrapper
    assert "job.Perform(input)" in wrapper
    assert "{{" not in wrapper


def test_golang_dockerfile_is_multi_stage():
    stage = "racetrack-job/adder:1.0.0-r3-abc"
    text = golang_dockerfile(DockerBuildSettings(golang_base_image="go:base"), ["GOPROXY"], stage)
    assert text.count("FROM ") == 2
    assert text.startswith("FROM go:base AS build\n")
    assert f'LABEL racetrack.build-stage="{stage}"' in text  # removed after this very build
    assert "ARG GOPROXY" in text
    assert "COPY --from=build /out/job-server /usr/local/bin/job-server" in text


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("512Mi", 512 * 2**20), ("1Gi", 2**30), ("1G", 10**9), ("1.5Ki", 1536), ("1000", 1000)],
)
def test_memory_quantities(quantity, expected):
    assert memory_bytes(quantity) == expected


def test_cpu_quantities_and_docker_limits():
    assert cpu_cores("250m") == 0.25 and cpu_cores("2") == 2.0
    limits = docker_limits(
        Resources(memory_min="64Mi", memory_max="1Gi", cpu_min="500m", cpu_max="2")
    )
    assert limits == {
        "mem_limit": 2**30,
        "mem_reservation": 64 * 2**20,
        "nano_cpus": 2_000_000_000,
        "cpu_shares": 512,
    }
    assert docker_limits(None) == {}


def spec(port: int | None = None) -> ReleaseSpec:
    artifact = ImageArtifact("racetrack-job/adder:1.0.0-r3-abc", "sha256:feed", {"A": "1"}, port)
    return ReleaseSpec(
        "adder", "1.0.0", 3, artifact, {"JOB_NAME": "adder"}, 2, Resources(cpu_max="1")
    )


def runtime(network: str) -> DockerRuntime:
    return DockerRuntime(None, platform_id="p1", network=network)  # type: ignore[arg-type]


def test_container_config_in_host_network_mode():
    config = runtime("host").container_config(spec(), 1, 40123)
    assert config["name"] == "rt-adder-1-0-0-r3-1"
    assert config["image"] == "sha256:feed"
    assert config["network_mode"] == "host" and "network" not in config
    assert config["environment"]["PORT"] == "40123"
    assert config["environment"]["LISTEN_HOST"] == "127.0.0.1"
    assert config["environment"]["A"] == "1" and config["environment"]["JOB_NAME"] == "adder"
    assert config["labels"] == {
        "racetrack.platform": "p1",
        "racetrack.job": "adder",
        "racetrack.version": "1.0.0",
        "racetrack.release": "3",
        "racetrack.release-name": "rt-adder-1-0-0-r3",
        "racetrack.instance": "1",
    }
    assert config["restart_policy"] == {"Name": "unless-stopped"}
    assert config["init"] is True
    assert config["nano_cpus"] == 1_000_000_000


def test_container_config_on_a_named_network():
    config = runtime("racetrack").container_config(spec(), 1, 7000)
    assert config["network"] == "racetrack" and "network_mode" not in config
    assert config["hostname"] == "rt-adder-1-0-0-r3-1"
    assert config["environment"]["LISTEN_HOST"] == "0.0.0.0"


def test_only_fixed_ports_in_host_mode_are_exclusive():
    assert runtime("host").exclusive_ports and spec(7001).artifact.fixed_port == 7001
    assert spec().artifact.fixed_port is None
    assert not runtime("racetrack").exclusive_ports


def test_release_names_are_dns_labels_that_never_collide():
    assert release_name("adder", "1.0.0", 3) == "rt-adder-1-0-0-r3"
    names = {
        release_name(job, version, 1)
        for job, version in [
            ("a", "1.0.0-beta"),
            ("a", "1.0.0+beta"),
            ("a", "1.0.0-Beta"),
            ("a-1", "0.0.1"),
            ("a", "1.0.0"),
            ("a" * 63, "1.0.0"),
            ("a" * 63, "1.0.1"),
        ]
    }
    assert len(names) == 7
    label = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
    for name in names:
        assert label.fullmatch(name) and len(name) <= 58, name  # room for "-<replica>"
    assert safe_name("Hello_World") != safe_name("hello-world") == "hello-world"


def test_secret_endpoint_answers_its_path_once_and_an_idle_client_cannot_hold_it():
    import json
    import socket
    import time
    import urllib.error
    import urllib.request

    from buildpacks.docker_build import _secret_endpoint

    with _secret_endpoint({"TOKEN": "s3cret"}, "/build-env/abc", 0) as port:
        idle = socket.create_connection(("127.0.0.1", port))  # connects, never sends
        base = f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/build-env/guess", timeout=5)
        with urllib.request.urlopen(base + "/build-env/abc", timeout=5) as response:
            assert json.load(response) == {"TOKEN": "s3cret"}
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/build-env/abc", timeout=5)  # only once
        started = time.monotonic()
    assert time.monotonic() - started < 10, "shutting down did not wait for the idle client"
    idle.close()


def test_racetracks_companions_are_added_only_for_what_needs_them():
    assert missing_companions({"FastAPI", "starlette"}) == ["python-multipart>=0.0.9"]
    assert missing_companions({"fastapi", "python_multipart"}) == []
    assert missing_companions({"flask"}) == []
    printed = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    assert printed.strip() == "", "the test environment has no fastapi: nothing to add"
