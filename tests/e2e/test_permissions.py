"""Racetrack's permission model, through the real SSH client, git and HTTP: every rule, allowed
and refused."""

import itertools
import json

import pytest

from tests.harness import JobRepo, Server, python_job, wait_for

_names = itertools.count(1)


@pytest.fixture
def user(server: Server):
    """A fresh non-admin user: (name, key)."""
    name = f"dev{next(_names)}"
    return name, server.add_user(name)


def deploy(server: Server, workdir, job: str, key=None, *, version: str = "1.0.0", files=None):
    repo = JobRepo.create(
        workdir / f"{job}-{version}", job, files or python_job(job, version=version)
    )
    return repo, server.push(repo, key=key)


def test_a_user_deploys_a_new_family_and_owns_it(server, user, workdir, job_name):
    name, key = user
    _repo, pushed = deploy(server, workdir, job_name, key)
    assert pushed.returncode == 0, pushed.stderr
    info = json.loads(server.ssh("jobs:info", job_name, "--json", key=key).stdout)
    assert info["owner"] == name
    assert server.ssh("jobs:delete", job_name, "1.0.0", key=key).returncode == 0


def test_a_user_may_not_deploy_or_delete_someone_elses_family(server, user, workdir, job_name):
    name, key = user
    repo, pushed = deploy(server, workdir, job_name)  # the admin's family
    assert pushed.returncode == 0
    repo.commit(python_job(job_name, "return 0"))
    refused = server.push(repo, key=key)
    assert refused.returncode != 0
    assert f"permission denied: user {name} lacks deploy_job on {job_name}" in refused.stderr
    deleted = server.ssh("jobs:delete", job_name, "1.0.0", key=key)
    assert (deleted.returncode, deleted.stderr) == (
        1,
        f"racetrack: permission denied: user {name} lacks delete_job on {job_name} 1.0.0\n",
    )
    config = server.ssh("config:set", job_name, "A=1", key=key)
    assert config.returncode == 1 and "lacks deploy_job" in config.stderr


def test_a_user_reads_and_calls_every_job(server, user, workdir, job_name):
    _name, key = user
    _repo, pushed = deploy(server, workdir, job_name)
    assert pushed.returncode == 0
    assert server.ssh("jobs:info", job_name, key=key).returncode == 0
    assert server.ssh("releases:list", job_name, key=key).returncode == 0
    token = server.token(key)
    assert server.call(job_name, "latest", payload={"numbers": [1]}, token=token) == (200, 1)


def test_a_grant_lets_a_user_deploy_someone_elses_family_but_only_that_one(
    server, user, workdir, job_name
):
    name, key = user
    repo, _ = deploy(server, workdir, job_name)
    other, _ = deploy(server, workdir, f"{job_name}x")  # a family whose name starts the same
    granted = server.ssh("perms:grant", f"user:{name}", "deploy_job", "--family", job_name)
    assert granted.returncode == 0, granted.stderr

    repo.commit(python_job(job_name, "return 2", signature=""))
    assert server.push(repo, key=key).returncode == 0
    other.commit(python_job(f"{job_name}x", "return 2", signature=""))
    assert server.push(other, key=key).returncode != 0, "a grant for foo never covers foox"


def test_a_version_narrowed_grant_covers_that_version_only(server, user, workdir, job_name):
    name, key = user
    repo, _ = deploy(server, workdir, job_name)
    grant = server.ssh(
        "perms:grant", f"user:{name}", "deploy_job", "--family", job_name, "--version", "1.0.0"
    )
    assert grant.returncode == 0
    repo.commit(python_job(job_name, "return 9", signature=""))
    assert server.push(repo, key=key).returncode == 0
    repo.commit(python_job(job_name, "return 9", signature="", version="2.0.0"))
    refused = server.push(repo, key=key)
    assert refused.returncode != 0
    assert f"lacks deploy_job on {job_name} 2.0.0" in refused.stdout


def test_an_esc_has_nothing_until_granted_and_then_exactly_that(server, workdir, job_name):
    repo, _ = deploy(server, workdir, job_name)
    repo.commit(python_job(job_name, version="2.0.0"))
    assert server.push(repo).returncode == 0
    esc = f"esc{next(_names)}"
    created = server.ssh("tokens:create", esc)
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[0]

    status, body = server.call(job_name, "1.0.0", payload={"numbers": [1]}, token=token)
    assert (
        status == 403
        and body["error"] == f"ESC {esc} may not call {job_name} 1.0.0 /api/v1/perform"
    )
    assert server.api("jobs:list", token=token)[1]["result"] == [], "it cannot even see jobs"

    grant = server.ssh(
        "perms:grant", f"esc:{esc}", "call_job", "--family", job_name, "--version", "1.0.0",
        "--endpoint", "/api/v1/perform",
    )  # fmt: skip
    assert grant.returncode == 0, grant.stderr
    wait_for(
        lambda: server.call(job_name, "1.0.0", payload={"numbers": [3]}, token=token) == (200, 3),
        "the grant to apply (within the router's cache time)",
    )
    assert server.call(job_name, "2.0.0", payload={"numbers": [3]}, token=token)[0] == 403
    assert server.call(job_name, "1.0.0", "/api/v1/other", payload={}, token=token)[0] == 403


def test_only_admins_manage_people_and_permissions(server, user):
    name, key = user
    for argv in (
        ("users:add", "intruder"),
        ("users:list",),
        ("tokens:create", "intruder"),
        ("tokens:list",),
        ("perms:grant", f"user:{name}", "full_access"),
        ("perms:list",),
        ("audit:log",),
        ("config:show", "anything", "--reveal"),
    ):
        result = server.ssh(*argv, key=key)
        assert result.returncode == 1, argv
        assert result.stderr.startswith("racetrack: "), argv
    assert server.ssh("perms:grant", f"user:{name}", "full_access", key=key).stderr == (
        f"racetrack: permission denied: user {name} is not an admin\n"
    )
    assert server.ssh("perms:list", f"user:{name}", key=key).returncode == 0, "own grants: yes"


def test_admins_have_full_access(server, user, workdir, job_name):
    _name, key = user
    _repo, pushed = deploy(server, workdir, job_name, key)  # owned by the user
    assert pushed.returncode == 0
    assert server.ssh("jobs:restart", job_name).returncode == 0  # the admin, on someone's job
    assert server.ssh("jobs:delete", job_name, "1.0.0").returncode == 0


CALLER = """
import json, os, urllib.request, urllib.error

class JobEntrypoint:
    def perform(self, target):
        request = urllib.request.Request(
            os.environ["PUB_URL"] + "/job/" + target + "/latest/api/v1/perform",
            data=json.dumps({"numbers": [20, 22]}).encode(),
            headers={"X-Racetrack-Auth": os.environ["AUTH_TOKEN"]},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            return {"status": error.code, "error": json.loads(error.read())["error"]}
"""


def test_job_chaining_with_the_family_token_needs_a_call_job_grant(
    server, token, workdir, job_name
):
    callee, caller = f"{job_name}-b", f"{job_name}-a"
    deploy(server, workdir, callee)
    files = python_job(caller)
    files["entry.py"] = CALLER
    _repo, pushed = deploy(server, workdir, caller, files=files)
    assert pushed.returncode == 0, pushed.stderr

    status, answer = server.call(caller, "latest", payload={"target": callee}, token=token)
    assert status == 200
    assert answer == {
        "status": 403,
        "error": f"job family {caller} may not call {callee} 1.0.0 /api/v1/perform",
    }
    granted = server.ssh("perms:grant", f"family:{caller}", "call_job", "--family", callee)
    assert granted.returncode == 0, granted.stderr
    wait_for(
        lambda: server.call(caller, "latest", payload={"target": callee}, token=token) == (200, 42),
        "the chained call to go through",
    )
