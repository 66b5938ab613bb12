"""Push with the real git over the real OpenSSH client, call over real HTTP."""

import shutil
import subprocess
import threading

from tests.harness import EXAMPLES, JobRepo, job_processes, python_job, wait_for


def test_first_deploy_and_call(server, token, workdir):
    source = workdir / "adder"
    shutil.copytree(EXAMPLES / "adder", source)
    repo = JobRepo(source, "adder")
    repo.git("init", "-q", "-b", "main")
    repo.commit({}, "adder")

    pushed = server.push(repo)

    assert pushed.returncode == 0, pushed.stderr
    assert "remote: Deploying adder at" in pushed.stderr
    assert (
        f"remote: Deployed adder 1.0.0 (r1): {server.router_url}/pub/job/adder/1.0.0/"
        in pushed.stderr
    )
    for version in ("1.0.0", "latest", "1.x"):
        assert server.call("adder", version, payload={"numbers": [40, 2]}, token=token) == (200, 42)
    assert server.call("adder", "latest", "/health", token=token)[1]["job_version"] == "1.0.0"


def test_progress_streams_before_the_ref_moves(server, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    pushed = server.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    lines = [line.strip() for line in pushed.stderr.splitlines() if line.startswith("remote:")]
    assert lines[0].startswith(
        f"remote: Deploying {job_name} at {repo.git('rev-parse', 'HEAD')[:12]}"
    )
    assert lines[-1].startswith(f"remote: Deployed {job_name} 1.0.0 (r1)")
    # the ref moved only after the deploy: porcelain status comes after every remote: line
    assert "refs/heads/main:refs/heads/main\t[new branch]" in pushed.stdout


def test_second_version_runs_beside_the_first_and_latest_moves(server, token, workdir, job_name):
    repo = JobRepo.create(
        workdir / "job", job_name, python_job(job_name, "return 'one'", signature="")
    )
    assert server.push(repo).returncode == 0
    repo.commit(python_job(job_name, "return 'two'", version="2.0.0", signature=""))
    pushed = server.push(repo)
    assert pushed.returncode == 0, pushed.stderr

    assert server.call(job_name, "1.0.0", payload={}, token=token) == (200, "one")
    assert server.call(job_name, "2.0.0", payload={}, token=token) == (200, "two")
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "two")
    assert server.call(job_name, "1.x", payload={}, token=token) == (200, "one")

    repo.commit(python_job(job_name, "return 'beta'", version="3.0.0-beta.1", signature=""))
    assert server.push(repo).returncode == 0
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "two")
    assert server.call(job_name, "3.0.0-beta.1", payload={}, token=token) == (200, "beta")
    status, body = server.call(job_name, "4.x", payload={}, token=token)
    assert status == 404
    assert body["error"] == f"no running version '4.x' of job '{job_name}'"


def test_redeploying_a_version_replaces_its_release(server, token, workdir, job_name):
    repo = JobRepo.create(
        workdir / "job", job_name, python_job(job_name, "return 'old'", signature="")
    )
    assert server.push(repo).returncode == 0
    repo.commit(python_job(job_name, "return 'new'", signature=""))
    pushed = server.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    assert f"Deployed {job_name} 1.0.0 (r2)" in pushed.stderr
    assert server.call(job_name, "1.0.0", payload={}, token=token) == (200, "new")


def test_failed_import_is_rejected_and_the_previous_release_keeps_answering(
    server, token, workdir, job_name
):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    good = repo.git("rev-parse", "HEAD").strip()
    assert server.push(repo).returncode == 0
    files = python_job(job_name)
    files["entry.py"] = "import no_such_module_here\n" + files["entry.py"]
    repo.commit(files, "broken import")

    pushed = server.push(repo)

    assert pushed.returncode != 0
    reason = "ModuleNotFoundError: No module named 'no_such_module_here' (entry.py, line 1)"
    assert f"[remote rejected] ({job_name}" not in pushed.stdout
    assert reason in pushed.stdout  # the ng reason git prints for the ref
    assert reason in pushed.stderr  # and the progress lines
    assert server.remote_refs(job_name)["refs/heads/main"] == good, (
        "the branch must still name what is deployed"
    )
    assert server.call(job_name, "1.0.0", payload={"numbers": [1, 2]}, token=token) == (200, 3)


def test_failed_new_version_leaves_other_versions_alone(server, token, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    assert server.push(repo).returncode == 0
    repo.commit({**python_job(job_name, version="2.0.0"), "entry.py": "raise SystemExit(3)\n"})
    pushed = server.push(repo)
    assert pushed.returncode != 0
    assert "SystemExit: 3" in pushed.stderr
    assert server.call(job_name, "latest", payload={"numbers": [2, 2]}, token=token) == (200, 4)


def test_bad_manifest_is_rejected_naming_the_fields(server, workdir, job_name):
    files = python_job(job_name)
    files["job.yaml"] += "replicas: many\nresources:\n  memory_max: lots\n"
    repo = JobRepo.create(workdir / "job", job_name, files)

    pushed = server.push(repo)

    assert pushed.returncode != 0
    assert "remote:   resources.memory_max: 'lots' is not a quantity like 512Mi" in pushed.stderr
    assert "remote:   replicas: 'many' " in pushed.stderr
    assert "job.yaml is invalid" in pushed.stdout
    assert server.remote_refs(job_name) == {}, "a refused push moves no ref"


def test_manifest_naming_another_job_is_refused(server, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job("someone-else"))
    pushed = server.push(repo)
    assert pushed.returncode != 0
    assert f"name: 'someone-else' does not match the repository '{job_name}'" in pushed.stderr


def test_missing_manifest_is_refused(server, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, {"README.md": "no manifest\n"})
    pushed = server.push(repo)
    assert pushed.returncode != 0
    assert f"no job.yaml with name '{job_name}' in this commit (found: none)" in pushed.stderr


def test_wrong_arguments_and_errors_have_the_documented_shape(server, token, workdir, job_name):
    files = python_job(job_name, "return 10 / divisor", signature="divisor: float")
    repo = JobRepo.create(workdir / "job", job_name, files)
    assert server.push(repo).returncode == 0

    assert server.call(job_name, "latest", payload={"divisor": 4}, token=token) == (200, 2.5)
    status, body = server.call(job_name, "latest", payload={"divisor": 1, "nope": 1}, token=token)
    assert (status, body) == (
        400,
        {
            "error": "failed to call a function: unexpected argument 'nope' (it takes: divisor)",
            "type": "ValueError",
        },
    )
    status, body = server.call(job_name, "latest", payload={}, token=token)
    assert status == 400 and "missing required argument 'divisor'" in body["error"]
    status, body = server.call(job_name, "latest", payload=[1, 2], token=token)
    assert status == 422 and "must be a JSON object" in body["error"]
    status, body = server.call(job_name, "latest", payload={"divisor": 0}, token=token)
    assert (status, body["type"]) == (500, "ZeroDivisionError")


def test_other_branches_are_stored_not_deployed(server, token, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    repo.git("checkout", "-q", "-b", "feature")
    first = server.push(repo, "feature")
    assert first.returncode != 0, "a new job name is claimed by a deploy, not by a parked branch"
    assert f"{job_name} has not been deployed yet: its first push must deploy main" in first.stdout
    stored = server.data_dir / "repos" / f"{job_name}.git"
    wait_for(lambda: not stored.exists(), "the refused first push's repository to go (it ends)")
    assert server.push(repo, "feature:main").returncode == 0

    repo.commit(python_job(job_name, "return -sum(numbers)"))
    pushed = server.push(repo, "feature")
    assert pushed.returncode == 0, pushed.stderr
    assert "Branch 'feature' stored, not deployed: only main and master deploy." in pushed.stderr
    assert "git push <remote> feature:main" in pushed.stderr
    assert server.call(job_name, "latest", payload={"numbers": [1]}, token=token) == (200, 1)
    assert server.push(repo, "feature:main").returncode == 0
    assert server.call(job_name, "latest", payload={"numbers": [1]}, token=token) == (200, -1)


def test_pushed_code_can_be_fetched_back(server, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    assert server.push(repo).returncode == 0
    clone = workdir / "clone"
    subprocess.run(
        ["git", "clone", "-q", server.remote(job_name), str(clone)],
        env=server.git_env(), check=True, capture_output=True,
    )  # fmt: skip
    assert (clone / "entry.py").read_text() == (repo.path / "entry.py").read_text()


def test_requirements_are_installed_into_the_release(server, token, workdir, job_name):
    files = python_job(job_name, "import six; return six.__name__", signature="")
    files["job.yaml"] += "  requirements_path: requirements.txt\n"
    files["requirements.txt"] = "six\n"
    repo = JobRepo.create(workdir / "job", job_name, files)
    pushed = server.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    assert "Installing requirements.txt" in pushed.stderr
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "six")

    repo.commit({"entry.py": files["entry.py"].replace("six.__name__", "'code only'")})
    pushed = server.push(repo)
    assert "Dependencies unchanged: reusing the cached environment" in pushed.stderr
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "code only")


def test_a_failed_install_is_rejected_with_its_first_error_in_one_short_line(
    server, workdir, job_name
):
    files = python_job(job_name)
    files["job.yaml"] += "  requirements_path: requirements.txt\n"
    files["requirements.txt"] = "racetrack-no-such-package-xyz==1.0\n"
    repo = JobRepo.create(workdir / "job", job_name, files)
    pushed = server.push(repo)
    assert pushed.returncode != 0
    (rejection,) = [line for line in pushed.stdout.splitlines() if "[remote rejected]" in line]
    reason = rejection.split("(", 1)[1]
    assert reason.startswith(
        "build failed: pip install failed with exit status 1: ERROR: Could not find a version"
        " that satisfies the requirement racetrack-no-such-package-xyz==1.0"
    ), reason
    assert len(reason) <= 310 and "originates from a subprocess" not in reason
    assert "\x1b" not in pushed.stderr + pushed.stdout


def test_a_cached_environment_serves_one_family_and_follows_included_files(
    server, token, workdir, job_name
):
    """Another family with the same requirements builds its own environment (what a build
    wrote never serves another family); a change to a file the requirements include rebuilds."""
    body = "import six; return six.__version__"
    files = python_job(job_name, body, signature="")
    files["job.yaml"] += "  requirements_path: requirements.txt\n"
    files.update({"requirements.txt": "-r pins.txt\n", "pins.txt": "six==1.16.0\n"})
    repo = JobRepo.create(workdir / "job", job_name, files)
    assert server.push(repo).returncode == 0
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "1.16.0")
    repo.commit({"pins.txt": "six==1.15.0\n"}, "an older pin, in the included file")
    pushed = server.push(repo)
    assert "reusing the cached environment" not in pushed.stderr
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "1.15.0")

    other = f"{job_name}-other"
    key = server.add_user(f"u{abs(hash(job_name)) % 10_000}")
    other_files = {**files, "pins.txt": "six==1.15.0\n"}
    other_files["job.yaml"] = other_files["job.yaml"].replace(job_name, other)
    other_repo = JobRepo.create(workdir / "other", other, other_files)
    pushed = server.push(other_repo, key=key)
    assert pushed.returncode == 0, pushed.stderr
    assert "Creating the job's virtual environment" in pushed.stderr, "its own, not the first's"


def tree_state(root):
    """Every path below root with its mode and content, to prove nothing changed."""
    state = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            state[str(path.relative_to(root))] = ("link", str(path.readlink()))
        elif path.is_file():
            state[str(path.relative_to(root))] = (path.stat().st_mode, path.read_bytes())
        else:
            state[str(path.relative_to(root))] = (path.stat().st_mode, None)
    return state


def test_release_artifact_is_immutable(server, token, workdir, job_name):
    files = python_job(job_name)
    files["helper.py"] = "def double(x):\n    return 2 * x\n"
    files["entry.py"] = (
        "from helper import double\n\nclass JobEntrypoint:\n"
        "    def perform(self, numbers):\n        return double(sum(numbers))\n"
    )
    repo = JobRepo.create(workdir / "job", job_name, files)
    commit = repo.git("rev-parse", "HEAD").strip()
    assert server.push(repo).returncode == 0
    artifact = server.data_dir / "artifacts" / job_name / f"1.0.0-r1-{commit[:12]}"
    before = tree_state(artifact)
    assert "src/__pycache__" in before, "bytecode is written at build time"
    assert all(mode & 0o222 == 0 for mode, _ in before.values() if mode != "link")

    assert server.call(job_name, "latest", payload={"numbers": [1, 2]}, token=token) == (200, 6)

    assert tree_state(artifact) == before


def test_slow_initialisation_deploys_fine(server, token, workdir, job_name):
    """The wrapper answers /live while the class loads; the deploy waits for /ready."""
    files = python_job(job_name)
    files["entry.py"] = (
        "import time\n\nclass JobEntrypoint:\n"
        "    def __init__(self):\n        time.sleep(25)  # loads for tens of seconds\n"
        "    def perform(self):\n        return 'loaded'\n"
    )
    repo = JobRepo.create(workdir / "job", job_name, files)
    pushed = server.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "loaded")


def test_concurrent_pushes_leave_the_branch_naming_what_serves(server, token, workdir, job_name):
    """Two clones push different commits at once: both pushes end cleanly, and the branch
    names the commit whose code answers."""
    clones = {
        answer: JobRepo.create(
            workdir / answer, job_name, python_job(job_name, f"return {answer!r}", signature="")
        )
        for answer in ("first", "second")
    }
    results: dict = {}
    threads = [
        threading.Thread(target=lambda a=a, r=r: results.__setitem__(a, server.push(r)))
        for a, r in clones.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    succeeded = [answer for answer, result in results.items() if result.returncode == 0]
    assert len(succeeded) == 1, {a: r.stdout for a, r in results.items()}
    (loser,) = set(clones) - set(succeeded)
    assert (
        "[rejected]" in results[loser].stdout
        or "during this push; fetch and push again" in results[loser].stdout
    )
    head = server.remote_refs(job_name)["refs/heads/main"]
    assert head == clones[succeeded[0]].git("rev-parse", "HEAD").strip()
    assert server.call(job_name, "latest", payload={}, token=token) == (200, succeeded[0])


def test_a_branch_that_cannot_move_fails_the_deploy_and_stops_its_instances(
    server, token, workdir, job_name
):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    assert server.push(repo).returncode == 0
    lock = server.data_dir / "repos" / f"{job_name}.git" / "refs" / "heads" / "main.lock"
    lock.write_text("left by a crashed git process\n")
    repo.commit(python_job(job_name, "return 'new'", signature=""))

    pushed = server.push(repo)

    assert pushed.returncode != 0
    assert "refs/heads/main is locked: its .lock file exists" in pushed.stdout
    assert len(job_processes(server.data_dir, job_name)) == 1, "the new instance was stopped"
    assert server.call(job_name, "latest", payload={"numbers": [1]}, token=token) == (200, 1)
    lock.unlink()
    assert server.push(repo).returncode == 0
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "new")
