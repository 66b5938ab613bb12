"""Releases, rollbacks and build logs, through the real SSH commands."""

import json

from tests.harness import JobRepo, python_job


def answering(job: str, answer: str, version: str = "1.0.0") -> dict[str, str]:
    return python_job(job, f"return {answer!r}", signature="", version=version)


def test_releases_are_listed_and_described(server, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, answering(job_name, "a"))
    first = repo.git("rev-parse", "HEAD").strip()
    assert server.push(repo).returncode == 0
    repo.commit({**answering(job_name, "b"), "entry.py": "import missing_module\n"})
    assert server.push(repo).returncode != 0

    listed = json.loads(server.ssh("releases:list", job_name, "--json").stdout)
    assert [(r["release"], r["status"]) for r in listed] == [("r2", "failed"), ("r1", "serving")]
    info = json.loads(server.ssh("releases:info", job_name, "r1", "--json").stdout)
    assert info["commit"] == first and info["deployed_by"] == "admin"
    assert info["version"] == "1.0.0" and info["artifact"]["kind"] == "directory"
    text = server.ssh("releases:info", job_name, "1").stdout
    assert "status       serving" in text

    failed_log = server.ssh("builds:log", job_name, "r2").stdout
    assert "No module named 'missing_module'" in failed_log
    assert failed_log.rstrip().endswith("(entry.py, line 1)")

    missing = server.ssh("releases:info", job_name, "r9")
    assert (missing.returncode, missing.stderr) == (1, f"racetrack: {job_name} has no release r9\n")
    unknown = server.ssh("releases:list", "no-such-job")
    assert (unknown.returncode, unknown.stderr) == (1, "racetrack: no job 'no-such-job'\n")


def test_rollback_redeploys_an_earlier_artifact_without_rebuilding(
    server, token, workdir, job_name
):
    repo = JobRepo.create(workdir / "job", job_name, answering(job_name, "a"))
    assert server.push(repo).returncode == 0
    repo.commit(answering(job_name, "b"))
    assert server.push(repo).returncode == 0

    rolled = server.ssh("releases:rollback", job_name)

    assert rolled.returncode == 0, rolled.stderr
    assert "Rolling" in rolled.stdout and "back to r1" in rolled.stdout
    assert "without rebuilding" in rolled.stdout and "Building" not in rolled.stdout
    assert f"{job_name} 1.0.0 now serves r3 (the artifact and config of r1)" in rolled.stdout
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "a")
    listed = json.loads(server.ssh("releases:list", job_name, "--json").stdout)
    assert listed[0]["rollback_of"] == "r1" and listed[0]["status"] == "serving"
    assert listed[0]["artifact"] == listed[2]["artifact"], "the same artifact, not a rebuild"
    assert [r["status"] for r in listed[1:]] == ["superseded", "superseded"]

    assert server.ssh("releases:rollback", job_name, "r2").returncode == 0
    assert server.call(job_name, "latest", payload={}, token=token) == (200, "b")


def test_rollback_refuses_what_it_cannot_do(server, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, answering(job_name, "a"))
    assert server.push(repo).returncode == 0
    repo.commit({"entry.py": "raise SystemExit(1)\n"})
    assert server.push(repo).returncode != 0

    nothing_before = server.ssh("releases:rollback", job_name)
    assert nothing_before.returncode == 1
    assert nothing_before.stderr.startswith(f"racetrack: no release of {job_name} 1.0.0 before r1")
    failed = server.ssh("releases:rollback", job_name, "r2")
    assert (failed.returncode, failed.stderr) == (
        1,
        f"racetrack: r2 of {job_name} never served (failed): nothing to roll back to\n",
    )
    assert server.ssh("releases:rollback", job_name, "r7").stderr == (
        f"racetrack: {job_name} has no release r7\n"
    )
    assert "argument release: 'rx' is not a release (like r3)" in (
        server.ssh("releases:rollback", job_name, "rx").stderr
    )


def test_cancel_without_a_deploy_under_way_says_so(server):
    result = server.ssh("builds:cancel", "nothing-deploying")
    assert (result.returncode, result.stderr) == (
        1,
        "racetrack: no deploy of 'nothing-deploying' is under way\n",
    )
