"""Racetrack python3 jobs pushed unchanged: the older `python:` section, monorepos, the `git`
section, secret env files and the build config, through the real git and OpenSSH clients."""

import json

from tests.harness import JobRepo, Server, python_job

ALIAS_WARNING = "Warning: job.yaml: the python section is deprecated; rename it to jobtype_extra"
GIT_NOTE = "Note: git.remote and git.branch are ignored: a push deploys the pushed commit"
READS_TOKEN = "import os; return os.environ.get('TOKEN')"
# pip expands ${VAR} in requirements files: the install fails unless the build gets FLAVOR
REQUIRES_FLAVOR = "-r extra-${FLAVOR}.txt\n"


def remote_lines(pushed) -> list[str]:
    return [line.removeprefix("remote: ").strip() for line in pushed.stderr.splitlines()]


def ssh_prefix(server: Server) -> str:
    return f"ssh -p {server.ssh_port} git@127.0.0.1"


def build_log(server: Server, job: str) -> str:
    shown = server.ssh("builds:log", job)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_python_section_deploys_with_a_deprecation_warning(server, token, workdir, job_name):
    files = python_job(job_name, "return 'old style'", signature="")
    files["job.yaml"] = files["job.yaml"].replace("jobtype_extra:", "python:")
    repo = JobRepo.create(workdir / "job", job_name, files)

    pushed = server.push(repo)

    assert pushed.returncode == 0, pushed.stderr
    assert remote_lines(pushed).count(ALIAS_WARNING) == 1
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "old style")


def test_python_section_beside_jobtype_extra_is_refused(server, workdir, job_name):
    files = python_job(job_name)
    files["job.yaml"] += "python:\n  entrypoint_path: entry.py\n"
    repo = JobRepo.create(workdir / "job", job_name, files)

    pushed = server.push(repo)

    assert pushed.returncode != 0
    reason = (
        "python: jobtype_extra is set too, and python is its older name; keep only jobtype_extra"
    )
    assert reason in pushed.stderr
    assert server.remote_refs(job_name) == {}, "the branch did not move"


def test_a_monorepo_pushed_whole_deploys_each_job(server, token, workdir, job_name):
    first, second = f"{job_name}-a", f"{job_name}-b"
    one = python_job(first, "return 'one'", signature="")
    two = python_job(second, "return 'two'", signature="", version="2.0.0")
    files = {
        "README.md": "two jobs\n",
        "jobs/one/job.yaml": one["job.yaml"],
        "jobs/one/entry.py": one["entry.py"],
        # the second job takes its name (and everything else) from its base
        "jobs/two/base.yaml": two["job.yaml"],
        "jobs/two/job.yaml": "extends: base.yaml\nreplicas: 1\n",
        "jobs/two/entry.py": two["entry.py"],
    }
    repo = JobRepo.create(workdir / "mono", first, files)

    for job, answer, version in ((first, "one", "1.0.0"), (second, "two", "2.0.0")):
        pushed = server.push(JobRepo(repo.path, job))
        assert pushed.returncode == 0, pushed.stderr
        assert f"Job {job} version {version}, jobtype python3" in remote_lines(pushed)
        assert server.call(job, "latest", payload={}, token=token) == (200, answer)


def test_two_manifests_naming_the_job_are_refused_listing_both(server, workdir, job_name):
    job = python_job(job_name)
    files = {f"{d}/{name}": text for d in ("left", "right") for name, text in job.items()}
    repo = JobRepo.create(workdir / "job", job_name, files)

    pushed = server.push(repo)

    assert pushed.returncode != 0
    assert f"several job.yaml files name the job '{job_name}': left/job.yaml, right/job.yaml" in (
        pushed.stderr
    )


def test_git_remote_and_branch_are_noted_once(server, token, workdir, job_name):
    git = "git:\n  remote: https://github.com/example/jobs\n  branch: develop\n"
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name, extra_manifest=git))

    pushed = server.push(repo)

    assert pushed.returncode == 0, pushed.stderr
    assert remote_lines(pushed).count(GIT_NOTE) == 1
    assert server.call(job_name, "latest", payload={"numbers": [1, 2]}, token=token) == (200, 3)


def test_a_committed_secret_runtime_file_reaches_the_job_and_no_output(
    server, token, workdir, job_name
):
    secret = "s3cret-from-file"
    manifest = "runtime_env:\n  TOKEN: plain\nsecret_runtime_env_file: secrets.env\n"
    files = python_job(job_name, READS_TOKEN, signature="", extra_manifest=manifest)
    files["secrets.env"] = f"TOKEN={secret}\n"
    repo = JobRepo.create(workdir / "job", job_name, files)

    pushed = server.push(repo)

    assert pushed.returncode == 0, pushed.stderr
    warning = (
        "Warning: secret_runtime_env_file 'secrets.env' is committed to git, and so are its"
        " secrets; keep it out of the repository and set them with:"
        f" {ssh_prefix(server)} config:set {job_name} KEY=VALUE..."
    )
    assert remote_lines(pushed).count(warning) == 1
    assert server.call(job_name, "latest", payload={}, token=token) == (200, secret)
    assert secret not in pushed.stderr + pushed.stdout
    assert secret not in build_log(server, job_name)
    artifacts = server.data_dir / "artifacts" / job_name
    assert not list(artifacts.glob("*/src/secrets.env")), "the file is not in the artifact"

    # restarts keep the values; the config (config:set) overrides them
    assert server.ssh("jobs:restart", job_name).returncode == 0
    assert server.call(job_name, "latest", payload={}, token=token) == (200, secret)
    assert server.ssh("config:set", job_name, "TOKEN=from-config").returncode == 0
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "from-config")
    releases = server.ssh("releases:list", job_name, "--json").stdout
    assert secret not in releases


def test_absent_secret_files_leave_the_push_going_and_name_config_set(
    server, token, workdir, job_name
):
    manifest = "secret_build_env_file: build.env\nsecret_runtime_env_file: secrets.env\n"
    files = python_job(job_name, READS_TOKEN, signature="", extra_manifest=manifest)
    repo = JobRepo.create(workdir / "job", job_name, files)

    pushed = server.push(repo)

    assert pushed.returncode == 0, pushed.stderr
    lines = remote_lines(pushed)
    assert (
        "Note: secret_build_env_file 'build.env' is not in the pushed commit; set its values"
        f" with: {ssh_prefix(server)} config:set --build {job_name} KEY=VALUE..."
    ) in lines
    assert (
        "Note: secret_runtime_env_file 'secrets.env' is not in the pushed commit; set its values"
        f" with: {ssh_prefix(server)} config:set {job_name} KEY=VALUE..."
    ) in lines
    assert server.call(job_name, "latest", payload={}, token=token) == (200, None)
    assert server.ssh("config:set", job_name, "TOKEN=set-by-command").returncode == 0
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "set-by-command")


def flavored_job(job_name: str, flavor: str, extra_manifest: str = "") -> dict[str, str]:
    """A job whose requirements install only when the build's environment has FLAVOR."""
    manifest = "  requirements_path: requirements.txt\n" + extra_manifest
    files = python_job(job_name, "return 'built'", signature="", extra_manifest=manifest)
    files["requirements.txt"] = REQUIRES_FLAVOR
    files[f"extra-{flavor}.txt"] = "# nothing to install: its name is the point\n"
    return files


def test_a_committed_secret_build_file_reaches_pip_install(server, token, workdir, job_name):
    flavor = "blue-sky-flavor"
    files = flavored_job(job_name, flavor, "secret_build_env_file: build.env\n")
    files["build.env"] = f"FLAVOR={flavor}\n"
    repo = JobRepo.create(workdir / "job", job_name, files)

    pushed = server.push(repo)

    assert pushed.returncode == 0, pushed.stderr
    assert any(
        line.startswith("Warning: secret_build_env_file 'build.env' is committed to git")
        for line in remote_lines(pushed)
    )
    assert flavor not in pushed.stderr + pushed.stdout
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "built")
    artifacts = server.data_dir / "artifacts" / job_name
    assert not list(artifacts.glob("*/src/build.env")), "the file is not in the artifact"


def test_build_config_reaches_pip_install_masked_and_unset(server, token, workdir, job_name):
    flavor = "green-tea-flavor"
    # the committed file names a flavor that does not exist: the build config wins over it
    files = flavored_job(job_name, flavor, "secret_build_env_file: build.env\n")
    files["build.env"] = "FLAVOR=no-such-flavor\n"
    repo = JobRepo.create(workdir / "job", job_name, files)
    failed = server.push(repo)
    assert failed.returncode != 0, "without the build config pip cannot install"
    assert "pip install failed" in failed.stderr
    assert "no-such-flavor" not in failed.stderr + failed.stdout + build_log(server, job_name)
    releases_before = server.ssh("releases:list", job_name, "--json").stdout

    result = server.ssh("config:set", "--build", job_name, f"FLAVOR={flavor}")

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"Build config of {job_name} changed (FLAVOR): it applies to the next build;"
        " nothing is redeployed now (push to build with it)\n"
    )
    assert server.ssh("releases:list", job_name, "--json").stdout == releases_before
    shown = json.loads(server.ssh("config:show", job_name, "--build", "--json").stdout)
    assert shown == {"FLAVOR": "********"}
    revealed = server.ssh("config:show", job_name, "--build", "--reveal", "--json").stdout
    assert json.loads(revealed) == {"FLAVOR": flavor}
    assert json.loads(server.ssh("config:show", job_name, "--json").stdout) == {}

    repo.commit({"README": "build again\n"})
    pushed = server.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "built")
    assert flavor not in pushed.stderr + pushed.stdout + build_log(server, job_name)

    unset = server.ssh("config:unset", job_name, "FLAVOR", "--build")
    assert unset.returncode == 0, unset.stderr
    assert json.loads(server.ssh("config:show", job_name, "--build", "--json").stdout) == {}
    missing = server.ssh("config:unset", "--build", job_name, "FLAVOR")
    assert missing.stderr == f"racetrack: {job_name} has no build config FLAVOR\n"
    events = json.loads(server.ssh("audit:log", "--job", job_name, "--json").stdout)
    details = [(e["action"], e["detail"]) for e in events]
    assert ("config:set", "--build FLAVOR") in details
    assert ("config:unset", "--build FLAVOR") in details
    assert flavor not in json.dumps(events)


def test_build_config_over_the_api(server, token, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    assert server.push(repo).returncode == 0
    body = {"job": job_name, "pairs": ["INDEX_TOKEN=t0ken-value"], "build": True}
    status, answer = server.api("config:set", body, token=token)
    assert (status, answer["result"]) == (
        200,
        {"keys": ["INDEX_TOKEN"], "build": True, "releases": []},
    )
    status, answer = server.api("config:show", {"job": job_name, "build": True}, token=token)
    assert (status, answer["result"]) == (200, {"INDEX_TOKEN": "********"})
