import json

from tests.harness import JobRepo, python_job


def test_jobs_list_shows_versions_status_release_and_url(server, token, workdir, job_name):
    repo = JobRepo.create(workdir / "job", job_name, python_job(job_name))
    assert server.push(repo).returncode == 0
    repo.commit(python_job(job_name, version="1.1.0"))
    assert server.push(repo).returncode == 0
    repo.commit({**python_job(job_name, version="2.0.0"), "entry.py": "import nope\n"})
    assert server.push(repo).returncode != 0

    rows = [
        r for r in json.loads(server.ssh("jobs:list", "--json").stdout) if r["name"] == job_name
    ]

    url = f"{server.router_url}/pub/job/{job_name}"
    assert [(r["version"], r["status"], r["release"], r["url"]) for r in rows] == [
        ("1.0.0", "running", "r1", f"{url}/1.0.0/"),
        ("1.1.0", "running", "r2", f"{url}/1.1.0/"),
        ("2.0.0", "failed", "r3", None),
    ]
    assert "No module named 'nope'" in rows[2]["error"]

    table = server.ssh("jobs:list").stdout.splitlines()
    assert table[0].split() == ["NAME", "VERSION", "STATUS", "RELEASE", "RESTARTS", "URL"]
    rows = [row.split() for row in table]
    assert [job_name, "1.1.0", "running", "r2", "0", f"{url}/1.1.0/"] in rows
    assert [job_name, "2.0.0", "failed", "r3", "0", "-"] in rows
