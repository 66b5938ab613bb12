"""Failure is safe: readiness that never comes, waiting and cancelled deploys, pushers that
vanish, crashing instances, a platform killed hard, and SSH keepalives during long deploys."""

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests.harness import JobRepo, Server, job_processes, python_job, wait_for

READY_TIMEOUT = 5
DEPLOY_WAIT = 3


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A platform with short deadlines, so that waiting and giving up happen within a test."""
    running = Server(
        tmp_path_factory.mktemp("racetrack-quick"),
        extra_args=(
            "--ready-timeout", str(READY_TIMEOUT),
            "--deploy-wait", str(DEPLOY_WAIT),
            "--ssh-keepalive", "1",
            # reconcile passes overlap starts and revivals: none may take them for leftovers
            "--reconcile-interval", "0.2",
        ),
    ).start()  # fmt: skip
    yield running
    running.stop()


@pytest.fixture(scope="module")
def quick_token(quick: Server) -> str:
    return quick.token()


def slow_job(name: str, seconds: float, answer: str) -> dict[str, str]:
    """A job whose class takes `seconds` to load (a model being read, say)."""
    files = python_job(name)
    files["entry.py"] = (
        "import time\n\nclass JobEntrypoint:\n"
        f"    def __init__(self):\n        time.sleep({seconds})\n"
        f"    def perform(self):\n        return {answer!r}\n"
    )
    return files


def release_statuses(server: Server, job: str) -> dict[str, str]:
    listed = server.ssh("releases:list", job, "--json")
    return (
        {r["release"]: r["status"] for r in json.loads(listed.stdout)}
        if listed.returncode == 0
        else {}
    )


def push_in_background(server: Server, repo: JobRepo) -> tuple[threading.Thread, dict]:
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(push=server.push(repo)))
    thread.start()
    return thread, result


def test_readiness_that_never_comes_keeps_the_old_release(quick, quick_token, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, slow_job(job_name, 0, "old"))
    assert quick.push(repo).returncode == 0
    repo.commit(slow_job(job_name, 600, "new"))

    pushed = quick.push(repo)

    assert pushed.returncode != 0
    assert f"was not ready within {READY_TIMEOUT}s" in pushed.stdout
    assert quick.call(job_name, "latest", payload={}, token=quick_token) == (200, "old")
    assert release_statuses(quick, job_name) == {"r2": "failed", "r1": "serving"}
    assert len(job_processes(quick.data_dir, job_name)) == 1, "the new instance was stopped"


def test_a_second_deploy_waits_saying_who_and_since_when_then_gives_up(quick, workdir, job_name):
    first = JobRepo.create(workdir / "first", job_name, slow_job(job_name, 4, "first"))
    second = JobRepo.create(workdir / "second", job_name, slow_job(job_name, 0, "second"))
    thread, result = push_in_background(quick, first)
    wait_for(lambda: "deploying" in release_statuses(quick, job_name).values(), "the first deploy")

    waited = quick.push(second)

    assert waited.returncode != 0
    assert f"remote: Waiting for the deploy of {job_name} by admin since" in waited.stderr
    assert (
        f"the deploy of {job_name} by admin since" in waited.stdout
        and f"still holds {job_name} after {DEPLOY_WAIT}s; try again later, or stop it:"
        f" builds:cancel {job_name}"
        in waited.stdout
    )
    thread.join(60)
    assert result["push"].returncode == 0, result["push"].stderr


def test_builds_cancel_stops_a_deploy_and_keeps_what_served(quick, quick_token, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, slow_job(job_name, 0, "kept"))
    assert quick.push(repo).returncode == 0
    repo.commit(slow_job(job_name, 600, "never"))
    thread, result = push_in_background(quick, repo)
    wait_for(lambda: release_statuses(quick, job_name).get("r2") == "deploying", "the deploy")

    cancelled = quick.ssh("builds:cancel", job_name)

    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == f"Cancelled the deploy of {job_name} r2\n"
    thread.join(60)
    assert result["push"].returncode != 0
    assert "cancelled by admin" in result["push"].stdout
    info = json.loads(quick.ssh("releases:info", job_name, "r2", "--json").stdout)
    assert (info["status"], info["error"]) == ("failed", "cancelled by admin")
    assert quick.call(job_name, "latest", payload={}, token=quick_token) == (200, "kept")
    wait_for(lambda: len(job_processes(quick.data_dir, job_name)) == 1, "the new instance to stop")


def test_a_pusher_that_disconnects_does_not_stop_the_deploy(quick, quick_token, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, slow_job(job_name, 0, "before"))
    assert quick.push(repo).returncode == 0
    new_commit = repo.commit(slow_job(job_name, 2, "after"))
    pusher = subprocess.Popen(
        ["git", "push", quick.remote(job_name), "main"],
        cwd=repo.path, env=quick.git_env(), stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # git and its ssh in one group, killed together
    )  # fmt: skip
    assert pusher.stderr is not None
    for line in pusher.stderr:
        if "Starting 1 instance(s)" in line:
            break
    os.killpg(pusher.pid, signal.SIGKILL)  # the laptop lid closes mid-deploy
    pusher.wait(30)

    wait_for(
        lambda: quick.call(job_name, "latest", payload={}, token=quick_token) == (200, "after"),
        "the deploy to complete without its pusher",
    )
    assert release_statuses(quick, job_name) == {"r2": "serving", "r1": "superseded"}
    assert quick.remote_refs(job_name)["refs/heads/main"] == new_commit


def test_server_keepalives_flow_while_a_long_deploy_is_silent(quick, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, slow_job(job_name, 3, "slow"))
    env = {**quick.git_env(), "GIT_SSH_COMMAND": " ".join([*quick.ssh_command(), "-v"])}
    pushed = subprocess.run(
        ["git", "push", quick.remote(job_name), "main"],
        cwd=repo.path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    assert "keepalive@openssh.com" in pushed.stderr, "the server kept the connection alive"


def test_a_crashing_instance_is_restarted_and_calls_go_around_it(
    quick, quick_token, workdir, job_name
):
    files = slow_job(job_name, 0, "up")
    files["job.yaml"] += "replicas: 2\n"
    repo = JobRepo.create(workdir / "job", job_name, files)
    assert quick.push(repo).returncode == 0
    victim = job_processes(quick.data_dir, job_name)[0]

    def row() -> dict:
        rows = json.loads(quick.ssh("jobs:list", "--json").stdout)
        return next(r for r in rows if r["name"] == job_name)

    os.kill(victim, signal.SIGKILL)

    # Once the platform has noticed (a call racing the crash itself may fail, as with any
    # proxy), calls go to the other replica while the crashed one is restarted.
    wait_for(lambda: row()["restarts"] == 1, "the crash to be noticed")
    for _ in range(20):
        assert quick.call(job_name, "latest", payload={}, token=quick_token) == (200, "up")
    wait_for(lambda: row()["status"] == "running", "the crashed instance to be back")
    assert len(job_processes(quick.data_dir, job_name)) == 2
    assert victim not in job_processes(quick.data_dir, job_name)
    assert "reconcile: process group" not in quick.log_path.read_text()


def test_a_platform_killed_hard_serves_the_same_release_after_a_restart(tmp_path, workdir):
    platform = Server(tmp_path / "platform").start()
    try:
        repo = JobRepo.create(workdir / "job", "phoenix", slow_job("phoenix", 0, "alive"))
        assert platform.push(repo).returncode == 0
        token = platform.token()
        (before,) = job_processes(platform.data_dir, "phoenix")

        platform.stop(signal.SIGKILL)
        wait_for(lambda: not job_processes(platform.data_dir), "job processes to die with it")
        platform.start()

        wait_for(
            lambda: platform.call("phoenix", "latest", payload={}, token=token) == (200, "alive"),
            "the job to serve again",
        )
        assert release_statuses(platform, "phoenix") == {"r1": "serving"}, "no redeploy"
        (after,) = job_processes(platform.data_dir, "phoenix")
        assert after != before
    finally:
        platform.stop()


def test_a_deploy_under_way_when_the_platform_dies_is_marked_interrupted(tmp_path, workdir):
    platform = Server(tmp_path / "platform").start()
    try:
        repo = JobRepo.create(workdir / "job", "halfway", slow_job("halfway", 0, "first"))
        assert platform.push(repo).returncode == 0
        repo.commit(slow_job("halfway", 600, "second"))
        thread, _result = push_in_background(platform, repo)
        wait_for(lambda: release_statuses(platform, "halfway").get("r2") == "deploying", "r2")

        platform.stop(signal.SIGKILL)
        thread.join(60)
        platform.start()

        info = json.loads(platform.ssh("releases:info", "halfway", "r2", "--json").stdout)
        assert (info["status"], info["error"]) == ("failed", "interrupted by restart")
        token = platform.token()
        wait_for(
            lambda: platform.call("halfway", "latest", payload={}, token=token) == (200, "first"),
            "r1 to serve again",
        )
        wait_for(
            lambda: len(job_processes(platform.data_dir, "halfway")) == 1,
            "no process of the interrupted r2 to be left",
        )
    finally:
        platform.stop()
