"""Every admin command through the real OpenSSH client, and the same operations over the API."""

import itertools
import json
import queue
import subprocess
import threading

from controller.runtimes.names import release_name
from tests.harness import JobRepo, Server, http_json, make_key, python_job

_names = itertools.count(1)


def deployed(server: Server, workdir, job: str, files=None) -> JobRepo:
    repo = JobRepo.create(workdir / "job", job, files or python_job(job))
    pushed = server.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    return repo


def releases(server: Server, job: str) -> list[dict]:
    return json.loads(server.ssh("releases:list", job, "--json").stdout)


def test_every_command_answers_help_and_fails_with_one_line(server):
    names = json.loads(server.ssh("help", "--json").stdout)
    assert len(names) >= 30
    for name in names:
        helped = server.ssh(name, "--help")
        assert helped.returncode == 0, name
        assert helped.stdout.startswith(f"usage: {name}"), name
        wrong = server.ssh(name, "--no-such-flag")
        assert wrong.returncode == 1, name
        assert wrong.stderr.count("\n") == 1 and wrong.stderr.startswith("racetrack: "), name


def test_listings_accept_json(server, workdir, job_name):
    deployed(server, workdir, job_name)
    for argv in (
        ("jobs:list",),
        ("jobs:info", job_name),
        ("releases:list", job_name),
        ("releases:info", job_name, "r1"),
        ("builds:list", job_name),
        ("config:show", job_name),
        ("users:list",),
        ("keys:list",),
        ("tokens:list",),
        ("perms:list",),
        ("audit:log",),
    ):
        result = server.ssh(*argv, "--json")
        assert result.returncode == 0, (argv, result.stderr)
        json.loads(result.stdout)


def test_jobs_info_restart_scale_delete(server, token, workdir, job_name):
    deployed(server, workdir, job_name)
    info = json.loads(server.ssh("jobs:info", job_name, "1.0.0", "--json").stdout)
    assert info["owner"] == "admin"
    (version,) = info["versions"]
    assert version["status"] == "running" and len(version["instances"]) == 1

    restarted = server.ssh("jobs:restart", job_name)
    assert restarted.returncode == 0, restarted.stderr
    assert f"{job_name} 1.0.0 now serves r2" in restarted.stdout
    assert releases(server, job_name)[0]["cause"] == "restart"

    scaled = server.ssh("ps:scale", job_name, "3")
    assert scaled.returncode == 0, scaled.stderr
    info = json.loads(server.ssh("jobs:info", job_name, "--json").stdout)
    assert len(info["versions"][0]["instances"]) == 3
    assert server.call(job_name, "latest", payload={"numbers": [1]}, token=token) == (200, 1)

    deleted = server.ssh("jobs:delete", job_name, "1.0.0")
    assert deleted.returncode == 0, deleted.stderr
    assert server.call(job_name, "1.0.0", payload={"numbers": [1]}, token=token)[0] == 404
    assert releases(server, job_name)[0]["status"] == "deleted"
    listed = json.loads(server.ssh("jobs:list", "--json").stdout)
    assert job_name not in {row["name"] for row in listed}, "deleted versions are not listed"
    everything = json.loads(server.ssh("jobs:list", "--all", "--json").stdout)
    assert [row["status"] for row in everything if row["name"] == job_name] == ["deleted"]
    again = server.ssh("jobs:delete", job_name, "1.0.0")
    assert (again.returncode, again.stderr) == (1, f"racetrack: {job_name} 1.0.0 is not running\n")


def test_config_is_a_new_release_with_masked_values(server, token, workdir, job_name):
    files = python_job(job_name, "import os; return os.environ.get('GREETING')", signature="")
    deployed(server, workdir, job_name, files)

    # ssh joins its words with spaces: a value with a space is quoted for the remote side
    result = server.ssh("config:set", job_name, "'GREETING=hello there'", "SECRET=s3cr3t-value")
    assert result.returncode == 0, result.stderr
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "hello there")
    newest = releases(server, job_name)[0]
    assert (newest["cause"], newest["config_keys"]) == ("config", ["GREETING", "SECRET"])

    shown = json.loads(server.ssh("config:show", job_name, "--json").stdout)
    assert shown == {"GREETING": "********", "SECRET": "********"}
    revealed = json.loads(server.ssh("config:show", job_name, "--reveal", "--json").stdout)
    assert revealed["SECRET"] == "s3cr3t-value"
    logs = server.ssh("builds:log", job_name).stdout + server.ssh("audit:log").stdout
    assert "s3cr3t-value" not in logs and "hello there" not in logs

    assert server.ssh("config:unset", job_name, "GREETING").returncode == 0
    assert server.call(job_name, "latest", payload={}, token=token) == (200, None)
    missing = server.ssh("config:unset", job_name, "NOPE")
    assert missing.stderr == f"racetrack: {job_name} has no config NOPE\n"
    for bad, reason in (
        ("a;b=1", "'a;b' is not an environment variable name"),
        ("PORT=1", "PORT is reserved: the platform sets it"),
        (
            "LD_PRELOAD=/tmp/x.so",
            "LD_PRELOAD is reserved: the platform sets it, or it changes what",
        ),
        ("PYTHONPATH=/tmp", "PYTHONPATH is reserved"),
        ("JOB_NAME=x", "JOB_NAME is reserved"),
        ("novalue", "'novalue' is not KEY=VALUE"),
    ):
        refused = server.ssh("config:set", job_name, bad)
        assert refused.returncode == 1 and reason in refused.stderr, bad


def test_a_push_keeps_the_config(server, token, workdir, job_name):
    files = python_job(job_name, "import os; return os.environ.get('MODE')", signature="")
    repo = deployed(server, workdir, job_name, files)
    assert server.ssh("config:set", job_name, "MODE=fast").returncode == 0
    repo.commit({"README": "a code change\n"})
    assert server.push(repo).returncode == 0
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "fast")


def test_config_set_with_nothing_serving_applies_at_the_next_deploy(
    server, token, workdir, job_name
):
    files = python_job(job_name, "import os; return os.environ.get('MODE')", signature="")
    repo = deployed(server, workdir, job_name, files)
    assert server.ssh("jobs:delete", job_name, "1.0.0").returncode == 0

    result = server.ssh("config:set", job_name, "MODE=later")
    assert (result.returncode, result.stdout) == (
        0,
        f"{job_name} serves nothing now: the next deploy runs with the new config\n",
    )
    assert json.loads(server.ssh("config:show", job_name, "--json").stdout) == {"MODE": "********"}
    repo.commit({"README": "back again\n"})
    assert server.push(repo).returncode == 0
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "later")


def test_the_audit_log_records_every_kind_of_change(server, workdir, job_name):
    deployed(server, workdir, job_name)
    name, esc = f"audited{next(_names)}", f"auditsvc{next(_names)}"
    server.add_user(name)  # users:add, keys:add
    fingerprint = json.loads(server.ssh("keys:list", name, "--json").stdout)[0]["fingerprint"]
    granted = server.ssh("perms:grant", f"user:{name}", "read_job", "--family", job_name, "--json")
    created = server.ssh("tokens:create", esc, "--json")
    steps = [
        ("config:set", job_name, "KEY=hidden-value"),
        ("config:unset", job_name, "KEY"),
        ("perms:revoke", str(json.loads(granted.stdout)["id"])),
        ("tokens:revoke", str(json.loads(created.stdout)["id"])),
        ("keys:remove", fingerprint),
        ("jobs:delete", job_name, "1.0.0"),
        ("users:remove", name),
    ]
    for argv in steps:
        done = server.ssh(*argv)
        assert done.returncode == 0, (argv, done.stderr)

    events = json.loads(server.ssh("audit:log", "--json").stdout)
    mine = [e for e in events if job_name in (e["job"] or "") or name in e["detail"]
            or esc in e["detail"]]  # fmt: skip
    actions = {e["action"] for e in mine}
    expected = {"deploy", "users:add", "keys:add", "keys:remove", "users:remove", "config:set",
                "config:unset", "perms:grant", "perms:revoke", "tokens:create", "tokens:revoke",
                "jobs:delete"}  # fmt: skip
    assert expected <= actions, expected - actions
    assert all(e["actor"] == "user:admin" for e in mine)
    assert "hidden-value" not in json.dumps(events), "config values are never in the audit log"


def test_builds_list_and_logs(server, workdir, job_name):
    files = python_job(job_name, "print('computing', flush=True); return 1", signature="")
    deployed(server, workdir, job_name, files)
    built = json.loads(server.ssh("builds:list", job_name, "--json").stdout)
    assert [(b["release"], b["status"], b["by"]) for b in built] == [("r1", "serving", "admin")]
    token = server.token()
    server.call(job_name, "latest", payload={}, token=token)
    tail = server.ssh("logs", job_name, "--tail", "50")
    assert tail.returncode == 0
    assert f"[{release_name(job_name, '1.0.0', 1)}-0] computing" in tail.stdout


def test_logs_follow_streams_until_the_client_leaves(server, token, workdir, job_name):
    files = python_job(job_name, "print('call', n, flush=True); return n", signature="n")
    deployed(server, workdir, job_name, files)
    follower = subprocess.Popen(
        [*server.ssh_command(), "-p", str(server.ssh_port), "git@127.0.0.1", "logs", job_name,
         "-f", "--tail", "1"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert follower.stdout is not None
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in follower.stdout], daemon=True
    ).start()
    try:
        lines.get(timeout=60)  # the tail: the follower is connected
        server.call(job_name, "latest", payload={"n": 7}, token=token)
        while "call 7" not in lines.get(timeout=60):
            pass
    finally:
        follower.terminate()
        follower.wait(30)
    assert server.ssh("help").returncode == 0, "the server serves on"


def test_users_and_keys(server, workdir):
    name = f"kay{next(_names)}"
    key = server.add_user(name)
    listed = json.loads(server.ssh("users:list", "--json").stdout)
    assert {"name": name, "admin": False, "keys": 1} == {
        k: v for k, v in next(u for u in listed if u["name"] == name).items() if k != "created_at"
    }
    mine = json.loads(server.ssh("keys:list", "--json", key=key).stdout)
    (fingerprint,) = [k["fingerprint"] for k in mine]

    second = make_key(workdir / "second")
    added = server.ssh("keys:add", name, key=key, stdin=(workdir / "second.pub").read_text())
    assert added.returncode == 0, added.stderr
    assert server.ssh("help", key=second).returncode == 0, "the new key works"
    duplicate = server.ssh("keys:add", name, stdin=(workdir / "second.pub").read_text())
    assert duplicate.returncode == 1 and "registered already" in duplicate.stderr
    garbage = server.ssh("keys:add", name, stdin="ssh-rsa not-base64 x\n")
    assert garbage.returncode == 1 and "not an OpenSSH public key" in garbage.stderr

    assert server.ssh("keys:remove", fingerprint, key=key).returncode == 0
    assert server.ssh("help", key=key).returncode == 255, "the removed key is refused"
    assert server.ssh("users:remove", name).returncode == 0
    assert server.ssh("help", key=second).returncode == 255, "a removed user's keys go too"
    taken = server.ssh("users:add", "admin")
    assert taken.stderr == "racetrack: user 'admin' exists already\n"
    last = server.ssh("users:remove", "admin")
    assert last.stderr == "racetrack: admin is the last admin; add another admin first\n"


def test_tokens_create_list_revoke(server, workdir, job_name):
    deployed(server, workdir, job_name)
    esc = f"svc{next(_names)}"
    created = server.ssh("tokens:create", esc)
    token = created.stdout.splitlines()[0]
    assert server.ssh("perms:grant", f"esc:{esc}", "call_job", "--family", job_name).returncode == 0
    assert server.call(job_name, "latest", payload={"numbers": [5]}, token=token) == (200, 5)
    listed = json.loads(server.ssh("tokens:list", "--json").stdout)
    (row,) = [t for t in listed if t["subject"] == f"esc:{esc}"]
    assert "token" not in row, "tokens are never listed"
    assert server.ssh("tokens:revoke", str(row["id"])).returncode == 0
    assert server.call(job_name, "latest", payload={"numbers": [5]}, token=token)[0] == 401
    again = server.ssh("tokens:revoke", str(row["id"]))
    assert again.returncode == 1 and "revoked already" in again.stderr


def test_perms_grant_list_revoke_and_audit(server, workdir, job_name):
    deployed(server, workdir, job_name)
    name = f"aud{next(_names)}"
    server.add_user(name)
    result = server.ssh("perms:grant", f"user:{name}", "delete_job", "--family", job_name)
    assert result.stdout.startswith(f"Granted user:{name} delete_job on {job_name} (grant ")
    (granted,) = json.loads(server.ssh("perms:list", f"user:{name}", "--json").stdout)
    assert (granted["scope"], granted["family"], granted["version"]) == (
        "delete_job",
        job_name,
        None,
    )
    assert server.ssh("perms:revoke", str(granted["id"])).returncode == 0
    assert json.loads(server.ssh("perms:list", f"user:{name}", "--json").stdout) == []
    for bad, reason in (
        ("user:nobody-here", "no user 'nobody-here'"),
        ("robot:x", "is not a subject: user:NAME, esc:NAME or family:NAME"),
    ):
        refused = server.ssh("perms:grant", bad, "call_job")
        assert refused.returncode == 1 and reason in refused.stderr, bad
    unknown_scope = server.ssh("perms:grant", f"user:{name}", "everything")
    assert "invalid choice: 'everything'" in unknown_scope.stderr

    events = json.loads(server.ssh("audit:log", "--json").stdout)
    actions = {e["action"] for e in events}
    assert {"deploy", "users:add", "keys:add", "perms:grant", "perms:revoke"} <= actions
    for_job = json.loads(server.ssh("audit:log", "--job", job_name, "--json").stdout)
    assert {e["job"] for e in for_job} == {job_name}


def test_failed_deploys_are_in_the_audit_log(server, workdir, job_name):
    repo = JobRepo.create(
        workdir / "job", job_name, {**python_job(job_name), "entry.py": "x = (\n"}
    )
    assert server.push(repo).returncode != 0
    events = json.loads(server.ssh("audit:log", "--job", job_name, "--json").stdout)
    assert events[0]["action"] == "deploy:failed" and "SyntaxError" in events[0]["detail"]


def test_the_api_runs_the_same_commands(server, token, workdir, job_name):
    deployed(server, workdir, job_name)
    status, body = server.api("config:set", {"job": job_name, "pairs": ["X=1"]}, token=token)
    assert status == 200, body
    assert body["result"]["keys"] == ["X"] and any(
        "without rebuilding" in line for line in body["output"]
    )
    status, body = server.api("releases:info", {"job": job_name, "release": "r2"}, token=token)
    assert (status, body["result"]["cause"]) == (200, "config")

    assert server.api("no:such", {}, token=token) == (404, {"error": "unknown command 'no:such'"})
    status, body = server.api("jobs:info", {"job": "../x"}, token=token)
    assert status == 400 and "'../x' is not a job name" in body["error"]
    status, body = server.api("jobs:info", {"job": job_name, "surprise": 1}, token=token)
    assert status == 400 and "unknown parameter 'surprise'" in body["error"]
    assert server.api("users:list", {})[0] == 401
    user_key = server.add_user(f"api{next(_names)}")
    status, body = server.api("users:list", {}, token=server.token(user_key))
    assert status == 403 and "is not an admin" in body["error"]
    status, body = server.api("logs", {"job": job_name, "follow": True}, token=token)
    assert status == 400 and "use it over SSH" in body["error"]
    status, body = http_json(f"{server.api_url}/api/v1/commands", token=token)
    assert status == 200 and "config:set" in body
