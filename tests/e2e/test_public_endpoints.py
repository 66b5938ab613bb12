"""Public endpoints as Racetrack has them, through the real ssh, git and HTTP: prefixes that
take effect once an admin approves them, at once and without a redeploy; the flag that approves
at push; and the page a browser gets instead of a bare 401."""

import http.client
import json
from urllib.parse import urlsplit

import pytest

from tests.harness import JobRepo, Server, python_job, wait_for

PREFIX = "/api/v1/perform"


def public_job(name: str, *endpoints: str, version: str = "1.0.0") -> dict[str, str]:
    listed = "".join(f"  - '{e}'\n" for e in endpoints or (PREFIX,))
    return python_job(name, version=version, extra_manifest=f"public_endpoints:\n{listed}")


def remote_lines(pushed) -> list[str]:
    """The push's `remote:` lines, without git's padding."""
    return [line.rstrip() for line in pushed.stderr.splitlines() if line.startswith("remote: ")]


def push(server: Server, workdir, job: str, files: dict[str, str]):
    repo = JobRepo.create(workdir / job, job, files)
    pushed = server.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    return pushed


def anonymous(server: Server, job: str, path: str = PREFIX) -> int:
    """The status of a call without a token (the path sent exactly as written)."""
    parts = urlsplit(server.router_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        body = json.dumps({"numbers": [1, 2]})
        headers = {"Content-Type": "application/json"}
        connection.request("POST", f"/pub/job/{job}/latest{path}", body, headers)
        return connection.getresponse().status
    finally:
        connection.close()


def endpoints(server: Server, *args: str, key=None) -> list[dict]:
    listed = server.ssh("endpoints:list", *args, "--json", key=key)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def approve_command(server: Server, job: str, path: str = PREFIX) -> str:
    return f"ssh -p {server.ssh_port} git@127.0.0.1 endpoints:approve {job} 1.0.0 {path}"


def test_a_public_endpoint_is_pending_until_approved_and_closes_again_when_revoked(
    server, workdir, job_name
):
    pushed = push(server, workdir, job_name, public_job(job_name))
    assert (
        f"remote: Public endpoint {PREFIX} of {job_name} 1.0.0 is pending: it needs a token until"
        f" an admin approves it with: {approve_command(server, job_name)}"
    ) in remote_lines(pushed)
    assert anonymous(server, job_name) == 401
    [row] = endpoints(server, job_name)
    assert (row["path"], row["status"], row["approved_by"]) == (PREFIX, "pending", None)
    assert "endpoints:approve" in server.ssh("endpoints:list", job_name).stdout

    approved = server.ssh("endpoints:approve", job_name, "1.0.0", PREFIX)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout == (
        f"Approved public endpoint {PREFIX} of {job_name} 1.0.0: calls without a token reach it"
        " (and what is below it) from now on\n"
    )
    assert anonymous(server, job_name) == 200  # at once: no redeploy, no wait
    for below in ("/", "/more"):  # reach the job (which has no such paths: not 401)
        assert anonymous(server, job_name, PREFIX + below) not in (401, 403), below
    assert anonymous(server, job_name, "/api/v1/perform2") == 401  # segment boundaries
    assert anonymous(server, job_name, f"{PREFIX}/../../../openapi.json") == 401
    assert anonymous(server, job_name, f"{PREFIX}/%2e%2e/%2e%2e/%2e%2e/openapi.json") == 401
    assert anonymous(server, job_name, f"{PREFIX}%2f..%2f..%2f..%2fopenapi.json") == 401
    [row] = endpoints(server, job_name, "1.0.0")
    assert (row["status"], row["approved_by"]) == ("approved", "admin")
    again = server.ssh("endpoints:approve", job_name, "1.0.0", PREFIX + "/")  # the same one
    assert again.returncode == 0 and "was already approved by admin" in again.stdout

    revoked = server.ssh("endpoints:revoke", job_name, "1.0.0", PREFIX)
    assert revoked.returncode == 0, revoked.stderr
    assert anonymous(server, job_name) == 401  # at once
    assert endpoints(server, job_name)[0]["status"] == "pending"
    twice = server.ssh("endpoints:revoke", job_name, "1.0.0", PREFIX)
    assert (twice.returncode, twice.stderr) == (
        1,
        f"racetrack: public endpoint {PREFIX} of {job_name} 1.0.0 is not approved\n",
    )

    audit = json.loads(server.ssh("audit:log", "--job", job_name, "--json").stdout)
    actions = [(e["action"], e["detail"], e["actor"]) for e in audit]
    assert ("endpoints:approve", f"1.0.0 {PREFIX}", "user:admin") in actions
    assert ("endpoints:revoke", f"1.0.0 {PREFIX}", "user:admin") in actions


def test_an_approval_stays_with_the_version_across_pushes(server, workdir, job_name):
    push(server, workdir, job_name, public_job(job_name))
    assert server.ssh("endpoints:approve", job_name, "1.0.0", PREFIX).returncode == 0
    repo = JobRepo(workdir / job_name, job_name)
    repo.commit(public_job(job_name) | {"entry.py": pushed_entry("return 100")})
    again = server.push(repo)
    assert again.returncode == 0, again.stderr
    assert f"remote: Public endpoint {PREFIX} of {job_name} 1.0.0: approved" in remote_lines(again)
    assert anonymous(server, job_name) == 200

    repo.commit(public_job(job_name, version="2.0.0"))  # a new version asks again
    newer = server.push(repo)
    assert newer.returncode == 0, newer.stderr
    assert f"{job_name} 2.0.0 is pending" in newer.stderr
    assert anonymous(server, job_name) == 401  # latest is 2.0.0 now


def pushed_entry(body: str) -> str:
    return f"class JobEntrypoint:\n    def perform(self, numbers: list[float]):\n        {body}\n"


def test_only_admins_approve_and_revoke_and_others_see_what_they_may_read(
    server, workdir, job_name
):
    push(server, workdir, job_name, public_job(job_name))
    key = server.add_user("endpoints-dev")
    for verb in ("endpoints:approve", "endpoints:revoke"):
        refused = server.ssh(verb, job_name, "1.0.0", PREFIX, key=key)
        assert refused.returncode == 1
        assert refused.stderr.startswith("racetrack: permission denied: user ")
        assert refused.stderr.endswith(" is not an admin\n")
    assert anonymous(server, job_name) == 401
    assert [r["status"] for r in endpoints(server, job_name, key=key)] == ["pending"]


def test_approving_what_the_manifest_does_not_declare_is_refused(server, workdir, job_name):
    push(server, workdir, job_name, public_job(job_name, "/api/v1/webview", PREFIX))
    refused = server.ssh("endpoints:approve", job_name, "1.0.0", "/api/v1/secret")
    assert (refused.returncode, refused.stderr) == (
        1,
        f"racetrack: {job_name} 1.0.0 does not declare /api/v1/secret in public_endpoints (its"
        f" job.yaml declares: /api/v1/webview, {PREFIX}); only a declared endpoint can be"
        " approved\n",
    )
    wider = server.ssh("endpoints:approve", job_name, "1.0.0", "/api/v1")  # a prefix of one
    assert wider.returncode == 1 and "does not declare /api/v1 in" in wider.stderr
    tricky = server.ssh("endpoints:approve", job_name, "1.0.0", f"{PREFIX}/../secret")
    assert tricky.returncode == 1 and "has a '.' or '..' segment" in tricky.stderr
    missing = server.ssh("endpoints:approve", job_name, "9.9.9", PREFIX)
    assert (missing.returncode, missing.stderr) == (
        1,
        f"racetrack: {job_name} has no version 9.9.9\n",
    )
    assert server.ssh("endpoints:approve", "no-such-job", "1.0.0", PREFIX).stderr == (
        "racetrack: no job 'no-such-job'\n"
    )
    assert [r["status"] for r in endpoints(server, job_name)] == ["pending", "pending"]


def test_a_manifest_with_a_tricky_endpoint_is_refused_naming_it(server, workdir, job_name):
    repo = JobRepo.create(workdir / job_name, job_name, public_job(job_name, "/api/v1/x/../y"))
    refused = server.push(repo)
    assert refused.returncode != 0
    assert "public_endpoints.0: '/api/v1/x/../y' has a '.' or '..' segment" in refused.stderr


@pytest.fixture
def own_server(tmp_path):
    """A platform of this test's own, stopped whatever fails."""
    started: list[Server] = []

    def start(*flags: str) -> Server:
        platform = Server(tmp_path / "platform", extra_args=flags).start()
        started.append(platform)
        return platform

    yield start
    for platform in started:
        platform.stop()


def test_auto_approve_flag_approves_what_a_push_declares(own_server, workdir):
    platform = own_server("--auto-approve-public-endpoints")
    assert any("--auto-approve-public-endpoints" in line for line in platform.banner)
    pushed = push(platform, workdir, "open-job", public_job("open-job"))
    assert (
        f"remote: Public endpoint {PREFIX} of open-job 1.0.0: approved"
        " (--auto-approve-public-endpoints)"
    ) in remote_lines(pushed)
    assert "pending" not in pushed.stderr
    assert anonymous(platform, "open-job") == 200
    assert anonymous(platform, "open-job", "/api/v1/perform2") == 401
    [row] = endpoints(platform, "open-job")
    assert (row["status"], row["approved_by"]) == ("approved", "--auto-approve-public-endpoints")
    audit = json.loads(platform.ssh("audit:log", "--json").stdout)
    approvals = [e for e in audit if e["action"] == "endpoints:approve"]
    assert [e["actor"] for e in approvals] == ["platform"], audit
    # an admin may still revoke it; the next push approves it again
    assert platform.ssh("endpoints:revoke", "open-job", "1.0.0", PREFIX).returncode == 0
    assert anonymous(platform, "open-job") == 401


def test_an_approval_survives_a_restart(own_server, workdir):
    platform = own_server()
    push(platform, workdir, "kept-open", public_job("kept-open"))
    assert platform.ssh("endpoints:approve", "kept-open", "1.0.0", PREFIX).returncode == 0
    assert anonymous(platform, "kept-open") == 200
    platform.stop()
    platform.start()  # same data dir
    wait_for(lambda: anonymous(platform, "kept-open") == 200, "the approved endpoint to serve")
    assert endpoints(platform, "kept-open")[0]["status"] == "approved"


def test_a_browser_without_a_token_gets_a_page_saying_how_to_get_in(server, workdir, job_name):
    push(server, workdir, job_name, python_job(job_name))
    parts = urlsplit(server.router_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(
            "GET",
            f"/pub/job/{job_name}/latest/docs",
            headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
        )
        response = connection.getresponse()
        page = response.read().decode()
    finally:
        connection.close()
    assert response.status == 401
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert f"ssh -p {server.ssh_port} git@127.0.0.1 auth:token" in page
    assert "X-Racetrack-Auth=TOKEN; path=/pub/job/" in page
    assert f"{job_name} 1.0.0 needs a Racetrack token" in page

    status, body = server.call(job_name, "latest", "/docs")  # no Accept: text/html
    assert status == 401
    assert body["error"].startswith("missing X-Racetrack-Auth header")


def test_the_cookie_the_page_describes_lets_the_browser_in(server, token, workdir, job_name):
    push(server, workdir, job_name, python_job(job_name))
    parts = urlsplit(server.router_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(
            "GET",
            f"/pub/job/{job_name}/latest/docs",
            headers={"Accept": "text/html", "Cookie": f"X-Racetrack-Auth={token}"},
        )
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 200
