"""Redeploys and a rollback under constant load: not one call may fail."""

from pathlib import Path

from tests.harness import JobRepo, Server, python_job
from tests.load import Load

REDEPLOYS = 5


def answer_files(job: str, n: int) -> dict[str, str]:
    return python_job(job, f"return {n}", signature="")


def redeploy_under_load(server: Server, token: str, workdir: Path, job: str) -> list:
    """Deploy answer 0, then 1..REDEPLOYS, then roll back (to REDEPLOYS - 1), all while four
    keep-alive clients call the job; return the calls they made."""
    repo = JobRepo.create(workdir / "job", job, answer_files(job, 0))
    assert server.push(repo).returncode == 0
    url = f"{server.router_url}/pub/job/{job}/latest/api/v1/perform"
    with Load(url, token, clients=4) as load:
        load.wait_for_calls(50)
        for n in range(1, REDEPLOYS + 1):
            repo.commit(answer_files(job, n), f"answer {n}")
            pushed = server.push(repo)
            assert pushed.returncode == 0, pushed.stderr
            load.wait_for_calls(50)
        rolled = server.ssh("releases:rollback", job)
        assert rolled.returncode == 0, rolled.stderr
        load.wait_for_calls(50)
    return load.calls


def check_calls(calls: list) -> None:
    failed = [call for call in calls if not call.ok]
    assert not failed, f"{len(failed)} of {len(calls)} calls failed, e.g. {failed[:3]}"
    assert {call.answer for call in calls} == set(range(REDEPLOYS + 1)), "every release answered"
    for client in {call.client for call in calls}:
        answers = [
            call.answer for call in sorted(calls, key=lambda c: c.started) if call.client == client
        ]
        peak = answers.index(REDEPLOYS)
        before, after = answers[: peak + 1], answers[peak:]
        assert before == sorted(before), f"client {client} went back before the rollback: {before}"
        assert after[-1] == REDEPLOYS - 1, "after the rollback the previous release answers"
        assert after == sorted(after, reverse=True), f"client {client} after the peak: {after}"


def test_redeploys_and_a_rollback_under_load_drop_nothing(server, token, workdir, job_name):
    check_calls(redeploy_under_load(server, token, workdir, job_name))
