"""Who gets in: SSH keys, API tokens, public endpoints (more in test_public_endpoints.py), and
names refused before the disk."""

import subprocess

import pytest

from tests.harness import JobRepo, http_json, make_key, python_job


@pytest.fixture
def deployed(server, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    assert server.push(repo).returncode == 0
    return job_name


def test_call_without_token_is_refused(server, deployed):
    status, body = server.call(deployed, "latest", payload={"numbers": [1]})
    assert status == 401
    assert body["error"].startswith("missing X-Racetrack-Auth header")


def test_call_with_a_wrong_token_is_refused(server, deployed):
    status, body = server.call(deployed, "latest", payload={"numbers": [1]}, token="rt_forged")
    assert (status, body["error"]) == (401, "invalid X-Racetrack-Auth token")


def test_token_from_auth_token_command_is_accepted_as_header_and_cookie(server, token, deployed):
    assert server.call(deployed, "latest", payload={"numbers": [1, 1]}, token=token) == (200, 2)
    url = f"{server.router_url}/pub/job/{deployed}/latest/api/v1/perform"
    cookie = {"Cookie": f"X-Racetrack-Auth={token}"}
    assert http_json(url, {"numbers": [3]}, headers=cookie) == (200, 3)


def test_probes_need_no_token(server, deployed):
    for path in ("/live", "/ready", "/health"):
        status, _ = server.call(deployed, "latest", path)
        assert status == 200, path


def test_public_endpoints_need_no_token_once_approved_and_match_on_segments(
    server, workdir, job_name
):
    files = python_job(job_name, extra_manifest="public_endpoints:\n  - /api/v1/perform\n")
    repo = JobRepo.create(workdir / "job", job_name, files)
    assert server.push(repo).returncode == 0
    assert server.call(job_name, "latest", payload={"numbers": [5]})[0] == 401  # pending
    approved = server.ssh("endpoints:approve", job_name, "1.0.0", "/api/v1/perform")
    assert approved.returncode == 0, approved.stderr
    assert server.call(job_name, "latest", payload={"numbers": [5]}) == (200, 5)
    assert server.call(job_name, "latest", "/api/v1/perform2", payload={})[0] == 401


def test_unknown_ssh_key_is_refused(server, workdir, job_name):
    stranger = make_key(workdir / "stranger")
    result = server.ssh("help", key=stranger)
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr

    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    pushed = server.push(repo, key=stranger)
    assert pushed.returncode != 0
    assert "Permission denied (publickey)" in pushed.stderr


def test_only_public_key_authentication_is_offered(server):
    """OpenSSH lists the methods the server allows in its refusal: publickey only."""
    result = subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
         "-o", f"UserKnownHostsFile={server.known_hosts}", "-p", str(server.ssh_port),
         "git@127.0.0.1", "help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


@pytest.mark.parametrize(
    "name", ["../evil", "a..b", ".hidden", "-rf", "a;b", "x" * 64, "etc/passwd", "x.git.git"]
)
def test_bad_job_names_are_refused_before_touching_the_disk(server, workdir, name):
    repo = JobRepo.create(workdir / "job", "anything", python_job("anything"))
    before = sorted(p.name for p in (server.data_dir / "repos").iterdir())
    result = subprocess.run(
        ["git", "push", f"ssh://git@127.0.0.1:{server.ssh_port}/{name}", "main"],
        cwd=repo.path, env=server.git_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "is not a job repository" in result.stderr
    assert sorted(p.name for p in (server.data_dir / "repos").iterdir()) == before


def test_admin_commands_exit_with_their_real_status(server):
    assert server.ssh("help").returncode == 0
    unknown = server.ssh("no:such-command")
    assert unknown.returncode == 1
    assert (
        unknown.stderr
        == "racetrack: unknown command 'no:such-command'; 'help' lists the commands\n"
    )
    bad_flag = server.ssh("jobs:list", "--bogus")
    assert bad_flag.returncode == 1
    assert bad_flag.stderr.startswith("racetrack: jobs:list: unrecognized arguments: --bogus")
    assert server.ssh("jobs:list", "--help").stdout.startswith("usage: jobs:list")


def test_no_interactive_shell(server):
    result = subprocess.run(
        [*server.ssh_command(), "-p", str(server.ssh_port), "git@127.0.0.1"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Racetrack has no interactive shell" in result.stderr


def test_help_lists_the_commands(server):
    result = server.ssh("help")
    for name in ("help", "jobs:list", "auth:token"):
        assert f"  {name} " in result.stdout


def test_api_lists_jobs_for_token_holders_only(server, token, deployed):
    status, body = http_json(f"{server.api_url}/api/v1/jobs", token=token)
    assert status == 200
    assert any(row["name"] == deployed and row["status"] == "running" for row in body)
    status, body = http_json(f"{server.api_url}/api/v1/jobs")
    assert status == 401 and body["error"].startswith("missing X-Racetrack-Auth header")
    assert http_json(f"{server.api_url}/health") == (
        200,
        {"service": "racetrack-controller", "status": "pass"},
    )
