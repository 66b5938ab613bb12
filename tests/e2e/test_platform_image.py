"""The platform's own image (the repository's Dockerfile): built from the offline base image,
run with the host's engine socket, and used for a real push and call."""

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_docker_runtime import BASE_IMAGE, CA_BUNDLE
from tests.harness import (
    REPO_ROOT,
    JobRepo,
    Server,
    docker_engine_problem,
    python_job,
    remove_docker_leftovers,
)

if docker_engine_problem() is not None:  # the docker runtime tests already fail or skip for it
    pytest.skip(str(docker_engine_problem()), allow_module_level=True)

PLATFORM_IMAGE = "racetrack/platform:test"


@pytest.fixture(scope="module")
def platform_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    context = tmp_path_factory.mktemp("platform-context")
    listed = subprocess.run(  # the checkout as git sees it: no venv, caches or data
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        target = context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    (context / "build-ca").mkdir(exist_ok=True)
    shutil.copyfile(CA_BUNDLE, context / "build-ca" / "ca.crt")  # this machine's TLS proxy CA
    built = subprocess.run(
        ["docker", "build", "--network", "host", "-t", PLATFORM_IMAGE, str(context)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the classic builder: no buildx needed
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    yield PLATFORM_IMAGE
    subprocess.run(["docker", "rmi", "-f", PLATFORM_IMAGE], capture_output=True)


def test_platform_image_deploys_a_job_on_the_hosts_engine(platform_image, tmp_path: Path):
    workdir = tmp_path / "platform"
    workdir.mkdir()
    launcher = (
        "docker", "run", "--rm", "--network", "host",
        "-v", "/var/run/docker.sock:/var/run/docker.sock",
        "-v", f"{workdir}:{workdir}",  # same paths inside: data dir, admin key
        "-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
        platform_image,
    )  # fmt: skip
    server = Server(
        workdir,
        extra_args=(
            "--host", "127.0.0.1",
            "--python-base-image", BASE_IMAGE,
            "--build-ca-bundle", CA_BUNDLE,
        ),
        launcher=launcher,
    ).start()  # fmt: skip
    try:
        assert "  runtime:   docker (network host)" in server.banner
        repo = JobRepo.create(tmp_path / "job", "from-image", python_job("from-image"))
        pushed = server.push(repo)
        assert pushed.returncode == 0, pushed.stderr
        token = server.token()
        assert server.call("from-image", "latest", payload={"numbers": [4, 5]}, token=token) == (
            200,
            9,
        )
    finally:
        assert server.stop() == 0, "the containerised platform stops cleanly on SIGTERM"
        remove_docker_leftovers(server.data_dir)
