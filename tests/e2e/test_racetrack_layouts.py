"""Racetrack's jobs in every layout they come in (the fixtures have the shape of Racetrack's
own sample/ jobs: a manifest whose git.directory names its place in Racetrack's repository)."""

from pathlib import Path

from tests.harness import JobRepo, fixture_files


def layout_files(job: str, prefix: str = "") -> dict[str, str]:
    return fixture_files(f"racetrack-layout/{job}", prefix)


def fallback_line(where: str, manifest: str = "job.yaml") -> str:
    return (
        f"{manifest}: git.directory 'sample/{{job}}' is not in this commit: the job is the"
        f" directory of its job.yaml ({where})"
    )


def test_a_sample_pushed_as_its_own_repository_deploys_from_its_root(server, token, workdir):
    repo = JobRepo.create(workdir / "alone", "python-class", layout_files("python-class"))
    pushed = server.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    line = fallback_line("the repository root").format(job="python-class")
    assert f"remote: Warning: {line}" in pushed.stderr
    assert server.call("python-class", "latest", payload={"numbers": [40, 2]}, token=token) == (
        200,
        42,
    )


def test_samples_at_the_root_of_a_monorepo_deploy_from_their_folders(server, token, workdir):
    files = {**layout_files("python-class", "python-class/"),
             **layout_files("python-greeter", "python-greeter/")}  # fmt: skip
    repo = JobRepo.create(workdir / "mono", "python-greeter", files)
    pushed = server.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    line = fallback_line("python-greeter/", "python-greeter/job.yaml")
    assert line.format(job="python-greeter") in pushed.stderr
    assert server.call("python-greeter", "latest", payload={"name": "racetrack"}, token=token) == (
        200,
        "hello racetrack",
    )


def test_racetracks_own_layout_still_deploys_without_a_note(server, token, workdir):
    files = layout_files("python-greeter", "sample/python-greeter/")
    files["README.md"] = "Racetrack's repository, in miniature\n"
    repo = JobRepo.create(Path(workdir) / "racetrack", "python-greeter", files)
    pushed = server.push(repo, "+main")  # a history of its own over the monorepo test's
    assert pushed.returncode == 0, pushed.stderr
    assert "is not in this commit" not in pushed.stderr
    assert server.call("python-greeter", "latest", payload={}, token=token) == (200, "hello world")


def test_the_user_guides_manifest_and_code_deploy_as_written(server, token, workdir):
    """Racetrack's user guide, byte for byte: a name with capitals and underscores, the job
    type with its version, a git section, an empty requirements file, a memory limit."""
    files = fixture_files("user-guide")
    name = "my_fantabulous_skynet_AI"
    repo = JobRepo.create(workdir / "guide", name, files)
    pushed = server.push(repo)
    assert pushed.returncode == 0, pushed.stderr
    assert f"Deployed {name} 0.0.1 (r1): {server.router_url}/pub/job/{name}/0.0.1/" in pushed.stderr
    assert server.call(name, "latest", payload={"x": 40, "y": 2}, token=token) == (200, 42)
    listed = server.ssh("jobs:list").stdout
    assert name in listed, "listings show the name as written"
    # another spelling is another job; the same letters in another case cannot share its resources
    other = JobRepo.create(
        workdir / "other",
        name.lower(),
        {**files, "job.yaml": files["job.yaml"].replace(name, name.lower())},
    )
    assert server.push(other).returncode == 0
    assert server.call(name.lower(), "latest", payload={"x": 1, "y": 2}, token=token) == (200, 3)
    assert server.call(name, "latest", payload={"x": 40, "y": 2}, token=token) == (200, 42)
