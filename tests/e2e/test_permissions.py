"""Racetrack's permission model, through the real SSH client, git and HTTP: every rule, allowed
and refused."""

import itertools
import json
import threading

import pytest

from tests.harness import JobRepo, Server, make_key, python_job, wait_for

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


def grant_deploy_of_version(server: Server, user: str, job: str, version: str) -> None:
    """Grant USER deploy_job on one version of JOB only."""
    granted = server.ssh(
        "perms:grant", f"user:{user}", "deploy_job", "--family", job, "--version", version
    )
    assert granted.returncode == 0, granted.stderr


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
    grant_deploy_of_version(server, name, job_name, "1.0.0")
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
    # a grant applies to the very next call (the router never remembers a refusal)
    assert server.call(job_name, "1.0.0", payload={"numbers": [3]}, token=token) == (200, 3)
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
        ("perms:list", "user:admin"),
        ("audit:log",),
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
    assert server.call(caller, "latest", payload={"target": callee}, token=token) == (200, 42)

    # revoking the family's token gives its instances a new one, so chaining keeps working
    (family_token,) = [
        t
        for t in json.loads(server.ssh("tokens:list", "--json").stdout)
        if t["subject"] == f"family:{caller}" and t["revoked_at"] is None
    ]
    revoked = server.ssh("tokens:revoke", str(family_token["id"]))
    assert revoked.returncode == 0, revoked.stderr
    assert f"{caller} 1.0.0 now serves r2 with a new token" in revoked.stdout
    assert server.call(caller, "latest", payload={"target": callee}, token=token) == (200, 42)


def serving_releases(server: Server, job: str) -> dict[str, str]:
    """version -> the release that serves it."""
    listed = json.loads(server.ssh("releases:list", job, "--json").stdout)
    return {r["version"]: r["release"] for r in listed if r["status"] == "serving"}


def test_a_version_narrowed_grant_acts_on_that_version_and_nothing_wider(
    server, user, workdir, job_name
):
    name, key = user
    repo, _ = deploy(server, workdir, job_name)
    repo.commit(python_job(job_name, version="2.0.0"))
    assert server.push(repo).returncode == 0
    grant_deploy_of_version(server, name, job_name, "1.0.0")
    before = serving_releases(server, job_name)

    assert server.ssh("jobs:restart", job_name, "1.0.0", key=key).returncode == 0
    after = serving_releases(server, job_name)
    assert after["1.0.0"] != before["1.0.0"] and after["2.0.0"] == before["2.0.0"]

    lacks_v2 = f"racetrack: permission denied: user {name} lacks deploy_job on {job_name} 2.0.0\n"
    lacks_job = f"racetrack: permission denied: user {name} lacks deploy_job on {job_name}\n"
    for argv, reason in (
        (("jobs:restart", job_name), lacks_v2),  # every version that serves
        (("ps:scale", job_name, "2"), lacks_v2),
        (("ps:scale", job_name, "2", "--version", "2.0.0"), lacks_v2),
        (("config:set", job_name, "A=1"), lacks_job),  # the config is the whole job's
        (("releases:rollback", job_name), lacks_job),  # so is the config a rollback restores
    ):
        refused = server.ssh(*argv, key=key)
        assert (refused.returncode, refused.stderr) == (1, reason), argv
    assert serving_releases(server, job_name) == after, "nothing was redeployed"
    assert server.ssh("config:show", job_name, "--json").stdout.strip() == "{}"


def test_builds_cancel_needs_the_version_being_deployed(server, user, workdir, job_name):
    name, key = user
    repo, _ = deploy(server, workdir, job_name)
    grant_deploy_of_version(server, name, job_name, "1.0.0")
    files = python_job(job_name, version="2.0.0")
    files["entry.py"] = (
        "import time\n\nclass JobEntrypoint:\n    def __init__(self):\n        time.sleep(600)\n"
        "    def perform(self):\n        return 0\n"
    )
    repo.commit(files)
    pushed: dict = {}
    pushing = threading.Thread(target=lambda: pushed.update(result=server.push(repo)))
    pushing.start()
    try:
        wait_for(
            lambda: any(
                (r["version"], r["status"]) == ("2.0.0", "deploying")
                for r in json.loads(server.ssh("releases:list", job_name, "--json").stdout)
            ),
            "the deploy of 2.0.0 to be under way",
        )
        refused = server.ssh("builds:cancel", job_name, key=key)
        assert (refused.returncode, refused.stderr) == (
            1,
            f"racetrack: permission denied: user {name} lacks deploy_job on {job_name} 2.0.0\n",
        )
    finally:
        assert server.ssh("builds:cancel", job_name).returncode == 0
        pushing.join(120)
    assert "cancelled by admin" in pushed["result"].stdout


def test_a_delete_job_grant_lets_that_delete_through(server, user, workdir, job_name):
    name, key = user
    repo, _ = deploy(server, workdir, job_name)
    repo.commit(python_job(job_name, version="2.0.0"))
    assert server.push(repo).returncode == 0
    server.ssh(
        "perms:grant", f"user:{name}", "delete_job", "--family", job_name, "--version", "2.0.0"
    )
    refused = server.ssh("jobs:delete", job_name, "1.0.0", key=key)
    assert refused.stderr == (
        f"racetrack: permission denied: user {name} lacks delete_job on {job_name} 1.0.0\n"
    )
    deleted = server.ssh("jobs:delete", job_name, "2.0.0", key=key)
    assert deleted.returncode == 0, deleted.stderr
    assert serving_releases(server, job_name).keys() == {"1.0.0"}


def test_an_esc_read_grant_narrowed_to_a_version_shows_that_version_only(server, workdir, job_name):
    repo, _ = deploy(server, workdir, job_name)
    repo.commit(python_job(job_name, version="2.0.0"))
    assert server.push(repo).returncode == 0
    esc = f"reader{next(_names)}"
    token = server.ssh("tokens:create", esc).stdout.splitlines()[0]
    status, body = server.api("jobs:info", {"job": job_name}, token=token)
    assert (status, body["error"]) == (
        403,
        f"permission denied: ESC {esc} lacks read_job on {job_name}",
    )
    server.ssh("perms:grant", f"esc:{esc}", "read_job", "--family", job_name, "--version", "1.0.0")

    status, body = server.api("jobs:info", {"job": job_name}, token=token)
    assert status == 200 and [v["version"] for v in body["result"]["versions"]] == ["1.0.0"]
    status, body = server.api("releases:list", {"job": job_name}, token=token)
    assert status == 200 and {r["version"] for r in body["result"]} == {"1.0.0"}
    status, body = server.api("jobs:list", {}, token=token)
    assert [(j["name"], j["version"]) for j in body["result"]] == [(job_name, "1.0.0")]
    status, body = server.api("logs", {"job": job_name}, token=token)
    assert status == 403, "every version's output needs a grant for every version"
    status, body = server.api("logs", {"job": job_name, "version": "1.0.0"}, token=token)
    assert status == 200, body
    status, body = server.api("releases:info", {"job": job_name, "release": "r2"}, token=token)
    assert (status, body["error"]) == (
        403,
        f"permission denied: ESC {esc} lacks read_job on {job_name} 2.0.0",
    )


def test_a_stranger_cannot_tell_which_jobs_exist(server, workdir, job_name):
    deploy(server, workdir, job_name)
    esc = f"blind{next(_names)}"
    token = server.ssh("tokens:create", esc).stdout.splitlines()[0]
    for job in (job_name, f"{job_name}-never"):
        for command, body in (
            ("jobs:info", {"job": job}),
            ("releases:info", {"job": job, "release": "r1"}),
            ("builds:log", {"job": job}),
            ("releases:rollback", {"job": job}),
            ("config:show", {"job": job}),
        ):
            status, answer = server.api(command, body, token=token)
            assert status == 403, (command, job, answer)


def test_full_access_for_a_non_admin(server, user, workdir, job_name):
    name, key = user
    deploy(server, workdir, job_name)
    narrowed = server.ssh("perms:grant", f"user:{name}", "full_access", "--family", job_name)
    assert narrowed.returncode == 0
    assert server.ssh("config:set", job_name, "A=1", key=key).returncode == 0
    assert server.ssh("users:list", key=key).returncode == 1, "full access to one family only"
    server.ssh("perms:grant", f"user:{name}", "full_access")
    assert server.ssh("users:list", key=key).returncode == 0, "full access to everything"


def test_config_reveal_is_for_admins(server, user, workdir, job_name):
    name, key = user
    deploy(server, workdir, job_name)
    assert server.ssh("config:set", job_name, "SECRET=s3cret").returncode == 0
    masked = server.ssh("config:show", job_name, "--json", key=key)
    assert json.loads(masked.stdout) == {"SECRET": "********"}
    refused = server.ssh("config:show", job_name, "--reveal", key=key)
    assert (refused.returncode, refused.stderr) == (
        1,
        f"racetrack: permission denied: user {name} is not an admin\n",
    )
    revealed = server.ssh("config:show", job_name, "--reveal", "--json")
    assert json.loads(revealed.stdout) == {"SECRET": "s3cret"}


def test_perms_list_shows_a_user_their_own_grants(server, user, workdir, job_name):
    name, key = user
    server.ssh("perms:grant", f"user:{name}", "call_job", "--family", job_name)
    own = json.loads(server.ssh("perms:list", "--json", key=key).stdout)
    assert [(g["subject"], g["scope"], g["family"]) for g in own] == [
        (f"user:{name}", "call_job", job_name)
    ]
    assert server.ssh("perms:list", "user:admin", key=key).returncode == 1


def test_a_revoked_call_grant_stops_calls_within_the_cache_time(server, workdir, job_name):
    deploy(server, workdir, job_name)
    esc = f"caller{next(_names)}"
    token = server.ssh("tokens:create", esc).stdout.splitlines()[0]
    granted = server.ssh("perms:grant", f"esc:{esc}", "call_job", "--family", job_name, "--json")
    grant_id = json.loads(granted.stdout)["id"]
    assert server.call(job_name, "latest", payload={"numbers": [1]}, token=token) == (200, 1)
    assert server.ssh("perms:revoke", str(grant_id)).returncode == 0
    # the router remembered the yes; the revocation makes it forget at once
    assert server.call(job_name, "latest", payload={"numbers": [1]}, token=token)[0] == 403


def test_a_removed_user_leaves_nothing_to_a_new_user_of_that_name(server, workdir, job_name):
    name = f"leaver{next(_names)}"
    key = server.add_user(name)
    _repo, pushed = deploy(server, workdir, job_name, key)
    assert pushed.returncode == 0
    server.ssh("perms:grant", f"user:{name}", "deploy_job", "--family", f"{job_name}-other")
    old_token = server.token(key)

    removed = server.ssh("users:remove", name)
    assert removed.returncode == 0, removed.stderr
    assert f"their jobs now belong to admin: {job_name}" in removed.stdout
    assert server.ssh("users:add", name).returncode == 0
    again = make_key(workdir / "again")
    assert server.ssh("keys:add", name, stdin=again.with_suffix(".pub").read_text()).returncode == 0

    info = json.loads(server.ssh("jobs:info", job_name, "--json").stdout)
    assert info["owner"] == "admin"
    assert json.loads(server.ssh("perms:list", f"user:{name}", "--json").stdout) == []
    refused = server.ssh("jobs:delete", job_name, "1.0.0", key=again)
    assert refused.returncode == 1 and "lacks delete_job" in refused.stderr
    assert server.api("jobs:list", token=old_token)[0] == 401
    assert server.token(again) != old_token
