"""`racetrack serve --runtime docker` against the real engine that scripts/setup-docker starts.

In CI (CI=true) a missing engine fails these tests; elsewhere they are skipped with the reason.
"""

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.runtimes.names import release_name
from tests.e2e.test_zero_downtime import check_calls, redeploy_under_load
from tests.harness import (
    JobRepo,
    Server,
    docker_engine_problem,
    fixture_files,
    python_job,
    remove_docker_leftovers,
    wait_for,
)

BASE_IMAGE = "racetrack/python3-base:bookworm"
GOLANG_IMAGE = "racetrack/golang-base:bookworm"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


problem = docker_engine_problem()
if problem is not None:
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"docker tests must run in CI: {problem}")
    pytest.skip(problem, allow_module_level=True)


@pytest.fixture(scope="module")
def dserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("racetrack-docker"),
        extra_args=(
            "--runtime", "docker",
            "--python-base-image", BASE_IMAGE,
            "--golang-base-image", GOLANG_IMAGE,
            "--golang-runtime-image", BASE_IMAGE,
            "--build-ca-bundle", CA_BUNDLE,
            "--keep-images", "2",
            "--ready-timeout", "20",
            "--reconcile-interval", "1",
        ),
    ).start()  # fmt: skip
    yield running
    running.stop()
    remove_docker_leftovers(running.data_dir)


@pytest.fixture(scope="module")
def dtoken(dserver: Server) -> str:
    return dserver.token()


def containers_of(job: str) -> list[dict]:
    """The job's containers as `docker inspect` shows them (one removed meanwhile is left out)."""
    found = []
    for container_id in docker("ps", "-aq", "--filter", f"label=racetrack.job={job}").split():
        inspected = subprocess.run(
            ["docker", "inspect", container_id], capture_output=True, text=True, timeout=60
        )
        if inspected.returncode == 0:
            found.extend(json.loads(inspected.stdout))
    return found


def tags_of(job: str) -> list[str]:
    out = docker("images", f"racetrack-job/{job}", "--format", "{{.Repository}}:{{.Tag}}")
    return sorted(out.split())


def test_python3_job_with_requirements_replicas_and_limits(dserver, dtoken, workdir, job_name):
    files = python_job(
        job_name,
        "import six, subprocess; jq = subprocess.run(['jq', '--version'], capture_output=True)"
        "; return [sum(numbers), six.__name__, jq.returncode]",
    )
    files["job.yaml"] += (
        "  requirements_path: requirements.txt\n"
        "system_dependencies:\n  - jq\n"
        "replicas: 2\n"
        "resources:\n  memory_min: 64Mi\n  memory_max: 256Mi\n  cpu_min: 250m\n  cpu_max: 500m\n"
        "runtime_env:\n  GREETING: hello\n"
    )
    files["requirements.txt"] = "six\n"
    repo = JobRepo.create(workdir / "job", job_name, files)
    commit = repo.git("rev-parse", "HEAD").strip()

    pushed = dserver.push(repo)

    assert pushed.returncode == 0, pushed.stderr
    tag = f"racetrack-job/{job_name}:1.0.0-r1-{commit[:12]}"
    assert f"Successfully tagged {tag}" in pushed.stderr
    assert dserver.call(job_name, "latest", payload={"numbers": [2, 3]}, token=dtoken) == (
        200,
        [5, "six", 0],
    )
    labels = json.loads(docker("image", "inspect", tag))[0]["Config"]["Labels"]
    assert {k: labels[k] for k in labels if k != "racetrack.platform"} == {
        "racetrack.job": job_name,
        "racetrack.version": "1.0.0",
        "racetrack.release": "1",
        "racetrack.commit": commit,
    }
    containers = sorted(containers_of(job_name), key=lambda c: c["Name"])
    assert [c["Name"] for c in containers] == [
        f"/{release_name(job_name, '1.0.0', 1)}-0",
        f"/{release_name(job_name, '1.0.0', 1)}-1",
    ]
    for container in containers:
        host = container["HostConfig"]
        assert host["Memory"] == 256 * 2**20
        assert host["MemoryReservation"] == 64 * 2**20
        assert host["NanoCpus"] == 500_000_000
        assert host["CpuShares"] == 256
        assert host["RestartPolicy"]["Name"] == "unless-stopped"
        assert host["NetworkMode"] == "host"
        env = dict(item.split("=", 1) for item in container["Config"]["Env"])
        assert env["GREETING"] == "hello" and env["JOB_NAME"] == job_name
        assert env["JOB_VERSION"] == "1.0.0" and env["PUB_URL"] == f"{dserver.router_url}/pub"
        assert container["Config"]["Labels"]["racetrack.release"] == "1"


def test_code_only_change_gets_a_new_tag_and_reuses_the_dependency_layer(
    dserver, dtoken, workdir, job_name
):
    files = python_job(job_name, "import six; return 'one'", signature="")
    files["job.yaml"] += "  requirements_path: requirements.txt\n"
    files["requirements.txt"] = "six\n"
    repo = JobRepo.create(workdir / "job", job_name, files)
    assert dserver.push(repo).returncode == 0
    first_tags = tags_of(job_name)

    repo.commit({"entry.py": files["entry.py"].replace("'one'", "'two'")})
    pushed = dserver.push(repo)

    assert pushed.returncode == 0, pushed.stderr
    pip_step = pushed.stderr.index("pip install --no-cache-dir")
    assert pushed.stderr[pip_step:].splitlines()[1].strip() == "remote:    ---> Using cache"
    assert dserver.call(job_name, "latest", payload={}, token=dtoken) == (200, "two")
    tags = tags_of(job_name)
    assert len(tags) == 2 and set(first_tags) < set(tags), "the old tag is still there"


def test_old_images_beyond_the_kept_releases_are_pruned(dserver, dtoken, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name, "return 0", signature=""))
    assert dserver.push(repo).returncode == 0
    for n in (1, 2, 3):
        repo.commit(python_job(job_name, f"return {n}", signature=""))
        assert dserver.push(repo).returncode == 0
    assert dserver.call(job_name, "latest", payload={}, token=dtoken) == (200, 3)
    # --keep-images 2: releases r3 and r4 keep their images; pruning runs after the push
    wait_for(
        lambda: [t.rsplit("-r", 1)[1].split("-")[0] for t in tags_of(job_name)] == ["3", "4"],
        "old images to be pruned",
    )
    wait_for(  # replaced containers are stopped and removed in the background
        lambda: (
            [c["Config"]["Labels"]["racetrack.release"] for c in containers_of(job_name)] == ["4"]
        ),
        "only the serving release's container to remain",
    )


DOCKER_HTTP_SERVER = """
import http.server, json, os

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "port": os.environ["PORT"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

port = int(os.environ.get("PORT", "7000"))
host = os.environ.get("LISTEN_HOST", "0.0.0.0")
http.server.ThreadingHTTPServer((host, port), Handler).serve_forever()
"""


def dockerfile_job(name: str, jobtype: str, extra: str = "", server: str = DOCKER_HTTP_SERVER):
    return {
        "job.yaml": (
            f"name: {name}\nowner_email: dev@example.com\njobtype: {jobtype}\nversion: 1.0.0\n"
            + (f"jobtype_extra:\n{extra}" if extra else "")
        ),
        "Dockerfile": (
            f'FROM {BASE_IMAGE}\nCOPY server.py /server.py\nCMD ["python3", "/server.py"]\n'
        ),
        "server.py": server,
    }


def test_docker_http_job_gets_the_path_unchanged_and_its_build_env(
    dserver, dtoken, workdir, job_name
):
    files = dockerfile_job(job_name, "docker-http", "  health_path: /up\n")
    files["job.yaml"] += "build_env:\n  FLAVOUR: vanilla\n"
    files["Dockerfile"] = files["Dockerfile"].replace(
        "COPY server.py", "ARG FLAVOUR\nRUN echo $FLAVOUR > /flavour\nCOPY server.py"
    )
    files["server.py"] = files["server.py"].replace(
        '"port": os.environ["PORT"]',
        '"port": os.environ["PORT"], "flavour": open("/flavour").read()',
    )
    repo = JobRepo.create(workdir / "job", job_name, files)
    pushed = dserver.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    status, body = dserver.call(job_name, "latest", "/some/path?q=1", token=dtoken)
    assert status == 200
    assert body["path"] == "/some/path?q=1"
    assert body["flavour"] == "vanilla\n"
    assert body["port"] != "7000", "in host network mode each container gets its own port"


def test_a_crashed_container_comes_back(dserver, dtoken, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, dockerfile_job(job_name, "docker-http"))
    assert dserver.push(repo).returncode == 0
    (container,) = containers_of(job_name)
    # a crash, not a stop: SIGKILL the server process itself (`docker kill` counts as stopping
    # it on purpose, after which the engine rightly leaves it down)
    init = container["State"]["Pid"]
    (server_pid,) = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    os.kill(int(server_pid), signal.SIGKILL)
    wait_for(
        lambda: (
            containers_of(job_name)[0]["RestartCount"] >= 1
            and dserver.call(job_name, "latest", "/again", token=dtoken)[0] == 200
        ),
        "the engine to restart the container",
    )


def test_a_container_removed_by_hand_is_started_again_and_calls_go_around_it(
    dserver, dtoken, workdir, job_name
):
    """The engine reports the removal at once (the replica is routed around: the other one
    answers every call) and the next reconcile starts a new container under the same name."""
    files = dockerfile_job(job_name, "docker-http")
    files["job.yaml"] += "replicas: 2\n"
    repo = JobRepo.create(workdir / "job", job_name, files)
    assert dserver.push(repo).returncode == 0
    replicas = [c for c in containers_of(job_name) if "racetrack.instance" in c["Config"]["Labels"]]
    removed = min(replicas, key=lambda c: c["Name"])
    docker("rm", "-f", removed["Id"])
    statuses: list[int] = []

    def replaced() -> bool:
        statuses.append(dserver.call(job_name, "latest", "/again", token=dtoken)[0])
        now = {c["Name"]: c["Id"] for c in containers_of(job_name)}
        return len(now) == 2 and now.get(removed["Name"], removed["Id"]) != removed["Id"]

    wait_for(replaced, "reconcile to start the removed container again")

    def both_up() -> bool:
        info = json.loads(dserver.ssh("jobs:info", job_name, "--json").stdout)
        return [i["up"] for i in info["versions"][0]["instances"]] == [True, True]

    wait_for(both_up, "the new container to be routed")
    assert dserver.call(job_name, "latest", "/back", token=dtoken)[0] == 200
    assert statuses and set(statuses) == {200}, statuses


def test_a_container_that_never_gets_ready_is_rejected_and_removed(dserver, workdir, job_name):
    files = dockerfile_job(job_name, "docker-http", "  health_path: /never-healthy\n")
    files["server.py"] = files["server.py"].replace(
        "self.send_response(200)", "self.send_response(503)"
    )
    repo = JobRepo.create(workdir / "job", job_name, files)
    pushed = dserver.push(repo)
    assert pushed.returncode != 0
    assert "was not ready within 20s" in pushed.stdout
    assert containers_of(job_name) == []


PROXY_SERVER = DOCKER_HTTP_SERVER.replace(
    'port = int(os.environ.get("PORT", "7000"))', "port = 7001"
).replace('host = os.environ.get("LISTEN_HOST", "0.0.0.0")', 'host = "127.0.0.1"')
assert "port = 7001" in PROXY_SERVER and 'host = "127.0.0.1"' in PROXY_SERVER


def test_docker_proxy_job_maps_api_paths_and_the_platform_answers_probes(
    dserver, dtoken, workdir, job_name
):
    repo = JobRepo.create(
        workdir / "job", job_name, dockerfile_job(job_name, "docker-proxy", server=PROXY_SERVER)
    )
    commit = repo.git("rev-parse", "HEAD").strip()
    pushed = dserver.push(repo)
    assert pushed.returncode == 0, pushed.stderr

    status, body = dserver.call(job_name, "latest", "/api/v1/hello?x=1", token=dtoken)
    assert (status, body["path"]) == (200, "/hello?x=1")
    assert dserver.call(job_name, "latest", "/health") == (
        200,
        {
            "service": "job",
            "job_name": job_name,
            "job_version": "1.0.0",
            "git_version": commit,
            "status": "pass",
        },
    )
    assert dserver.call(job_name, "latest", "/elsewhere", token=dtoken)[0] == 404

    # another version cannot share the fixed port in host network mode: refused, with the holder
    manifest = (workdir / "job" / "job.yaml").read_text()
    repo.commit({"job.yaml": manifest.replace("version: 1.0.0", "version: 2.0.0")}, "2.0.0")
    pushed = dserver.push(repo)
    assert pushed.returncode != 0
    assert f"port 7001 is held by {job_name} 1.0.0 (r1)" in pushed.stdout
    repo.git("reset", "-q", "--hard", "HEAD~1")

    # host network mode: the fixed port forces stop-then-start, and the push says so
    repo.commit(
        {"server.py": PROXY_SERVER.replace('"path": self.path', '"path": "v2" + self.path')}
    )
    pushed = dserver.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    assert "port 7001 is fixed in host network mode" in pushed.stderr
    assert dserver.call(job_name, "latest", "/api/v1/x", token=dtoken)[1]["path"] == "v2/x"


def test_failing_build_is_rejected_with_its_last_lines_and_nothing_changes(
    dserver, dtoken, workdir, job_name
):
    files = dockerfile_job(job_name, "docker-http")
    repo = JobRepo.create(workdir / "job", job_name, files)
    assert dserver.push(repo).returncode == 0
    before = {c["Id"] for c in containers_of(job_name)}
    files["Dockerfile"] = f"FROM {BASE_IMAGE}\nRUN echo 'compiler says no' && exit 3\n"
    repo.commit(files)

    pushed = dserver.push(repo)

    assert pushed.returncode != 0
    assert "compiler says no" in pushed.stdout
    assert "returned a non-zero code: 3" in pushed.stdout
    assert dserver.call(job_name, "latest", "/still", token=dtoken)[1]["path"] == "/still"
    assert {c["Id"] for c in containers_of(job_name)} == before


def test_a_failed_build_never_removes_the_image_it_builds_on(dserver, workdir, job_name):
    base = f"racetrack-test/base-of-{job_name}:1"
    docker("tag", BASE_IMAGE, base)
    try:
        files = dockerfile_job(job_name, "docker-http")
        files["Dockerfile"] = f"FROM {base}\nRUN exit 3\n"
        repo = JobRepo.create(workdir / "job", job_name, files)
        assert dserver.push(repo).returncode != 0
        assert docker("images", "-q", base).strip(), "the base image is still there"
    finally:
        docker("rmi", base)


def test_missing_requirement_is_rejected_naming_it(dserver, workdir, job_name):
    files = python_job(job_name)
    files["job.yaml"] += "  requirements_path: requirements.txt\n"
    files["requirements.txt"] = "racetrack-no-such-package-xyz==1.0\n"
    repo = JobRepo.create(workdir / "job", job_name, files)
    pushed = dserver.push(repo)
    assert pushed.returncode != 0
    assert (
        "docker build failed: ERROR: Could not find a version that satisfies the requirement"
        " racetrack-no-such-package-xyz==1.0"
    ) in pushed.stdout


def test_container_exiting_at_start_is_rejected_and_removed(dserver, workdir, job_name):
    files = dockerfile_job(
        job_name, "docker-http", server="print('no config, giving up')\nraise SystemExit(4)\n"
    )
    repo = JobRepo.create(workdir / "job", job_name, files)
    pushed = dserver.push(repo)
    assert pushed.returncode != 0
    assert "exited with status 4 before it was ready" in pushed.stdout
    assert "no config, giving up" in pushed.stdout
    assert containers_of(job_name) == [], "no half-started container is left"


def test_build_secrets_reach_the_build_but_no_layer_history_or_log(
    dserver, dtoken, workdir, job_name
):
    secret = "1.16.0"  # used as a version pin, so its effect is visible in the running job
    files = python_job(job_name, "import six; return six.__version__", signature="")
    files["job.yaml"] += "  requirements_path: requirements.txt\nsecret_build_env_file: build.env\n"
    files["requirements.txt"] = "six==${SIX_VERSION}\n"
    files["build.env"] = f"SIX_VERSION={secret}\n"
    repo = JobRepo.create(workdir / "job", job_name, files)
    commit = repo.git("rev-parse", "HEAD").strip()

    pushed = dserver.push(repo)

    assert pushed.returncode == 0, pushed.stderr
    assert dserver.call(job_name, "latest", payload={}, token=dtoken) == (200, secret)
    assert secret not in pushed.stderr and "six-********" in pushed.stderr
    tag = f"racetrack-job/{job_name}:1.0.0-r1-{commit[:12]}"
    assert secret not in docker("history", "--no-trunc", tag)
    assert secret not in docker("image", "inspect", tag)
    check = subprocess.run(["docker", "run", "--rm", tag, "test", "-e", "/src/job/build.env"])
    assert check.returncode == 1, "the secrets file is not in the image"


GO_JOB = {
    "go.mod": "module example.com/adder\n\ngo 1.19\n",
    "adder.go": """package adder

import "fmt"

func Perform(input map[string]interface{}) (interface{}, error) {
	numbers, ok := input["numbers"].([]interface{})
	if !ok {
		return nil, fmt.Errorf("numbers must be a list")
	}
	total := 0.0
	for _, n := range numbers {
		total += n.(float64)
	}
	return total, nil
}
""",
}


def test_golang_job_serves_perform(dserver, dtoken, workdir, job_name):
    files = {
        **GO_JOB,
        "job.yaml": f"name: {job_name}\nowner_email: dev@example.com\njobtype: golang\n",
    }
    repo = JobRepo.create(workdir / "job", job_name, files)
    pushed = dserver.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    assert dserver.call(job_name, "latest", payload={"numbers": [40, 2]}, token=dtoken) == (200, 42)
    status, body = dserver.call(job_name, "latest", payload={"numbers": "x"}, token=dtoken)
    assert (status, body) == (500, {"error": "numbers must be a list", "type": "error"})


def test_a_killed_platform_adopts_its_containers_and_removes_strays(tmp_path, workdir, job_name):
    """SIGKILL the platform: on restart the serving container is adopted as it is (same id, not
    restarted), and a container of this platform that serves no release is removed."""
    platform = Server(
        tmp_path / "platform",
        extra_args=("--runtime", "docker", "--python-base-image", BASE_IMAGE),
    ).start()
    try:
        repo = JobRepo.create(workdir / "job", job_name, dockerfile_job(job_name, "docker-http"))
        assert platform.push(repo).returncode == 0
        (before,) = containers_of(job_name)
        identity = (platform.data_dir / "platform-id").read_text().strip()
        stray = f"{release_name(job_name, '0.0.9', 99)}-0"
        docker(
            "run", "-d", "--name", stray, "--label", f"racetrack.platform={identity}",
            "--label", f"racetrack.job={job_name}", "--label", "racetrack.instance=0",
            BASE_IMAGE, "sleep", "600",
        )  # fmt: skip

        platform.stop(signal.SIGKILL)
        platform.start()
        token = platform.token()

        wait_for(
            lambda: platform.call(job_name, "latest", "/back", token=token)[0] == 200,
            "the adopted container to be routed",
        )
        (after,) = [c for c in containers_of(job_name) if c["Name"] != f"/{stray}"]
        assert (
            after["Id"] == before["Id"]
            and after["State"]["StartedAt"] == before["State"]["StartedAt"]
        )
        wait_for(
            lambda: stray not in docker("ps", "-a", "--format", "{{.Names}}"), "the stray to go"
        )
    finally:
        platform.stop()
        remove_docker_leftovers(platform.data_dir)


def test_docker_redeploys_and_a_rollback_under_load_drop_nothing(
    dserver, dtoken, workdir, job_name
):
    check_calls(redeploy_under_load(dserver, dtoken, workdir, job_name))


def test_rollback_needs_the_artifact_still_kept(dserver, dtoken, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name, "return 1", signature=""))
    assert dserver.push(repo).returncode == 0
    for n in (2, 3, 4):
        repo.commit(python_job(job_name, f"return {n}", signature=""))
        assert dserver.push(repo).returncode == 0
    wait_for(lambda: len(tags_of(job_name)) == 2, "old images to be pruned (--keep-images 2)")
    gone = dserver.ssh("releases:rollback", job_name, "r1")
    assert gone.returncode == 1
    assert gone.stderr.startswith("racetrack: the artifact of r1 is gone (only the newest 2")
    assert dserver.ssh("releases:rollback", job_name).returncode == 0  # r3 is kept
    assert dserver.call(job_name, "latest", payload={}, token=dtoken) == (200, 3)


def test_the_user_guides_job_runs_under_a_lowercase_image_name(dserver, dtoken, workdir):
    files = fixture_files("user-guide")
    name = "my_fantabulous_skynet_AI"
    pushed = dserver.push(JobRepo.create(workdir / "guide", name, files))
    assert pushed.returncode == 0, pushed.stderr
    assert "Successfully tagged racetrack-job/my-fantabulous-skynet-ai-" in pushed.stderr
    assert dserver.call(name, "latest", payload={"x": 40, "y": 2}, token=dtoken) == (200, 42)
