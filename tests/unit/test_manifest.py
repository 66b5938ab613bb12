from pathlib import Path

import pytest

from buildpacks.manifest import ManifestError, decode_manifest, parse_manifest
from buildpacks.source import load_job_source

GOOD = {
    "name": "adder",
    "owner_email": "dev@example.com",
    "jobtype": "python3",
    "jobtype_extra": {"entrypoint_path": "adder.py"},
}


def errors_of(data, **kwargs) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, **kwargs)
    return caught.value.errors


def test_minimal_manifest_gets_defaults():
    manifest = parse_manifest(GOOD, expected_name="adder")
    assert manifest.version == "0.0.1"
    assert manifest.replicas == 1
    assert manifest.git is None
    assert manifest.python3.entrypoint_path == "adder.py"
    assert manifest.python3.check_requirements is True


def test_every_racetrack_field_is_accepted():
    data = {
        **GOOD,
        "version": "1.2.3-rc.1+build.5",
        "git": {"remote": "https://github.com/x/y", "branch": "main", "directory": "jobs/adder"},
        "extends": "base.yaml",
        "build_env": {"DEBUG": True, "LEVEL": 3},
        "runtime_env": {"MODE": "fast"},
        "secret_build_env_file": "build.env",
        "secret_runtime_env_file": "runtime.env",
        "labels": {"team": "ml"},
        "public_endpoints": ["/api/v1/perform"],
        "replicas": 3,
        "resources": {"memory_min": "256Mi", "memory_max": "1Gi", "cpu_min": "100m", "cpu_max": 2},
        "system_dependencies": ["libgomp1", "curl=7.88.1-10"],
        "infrastructure_target": "docker",
        "image_type": "docker",
    }
    manifest = parse_manifest(data)
    assert manifest.build_env == {"DEBUG": "true", "LEVEL": "3"}
    assert manifest.resources is not None and manifest.resources.cpu_max == "2"
    assert manifest.git is not None and manifest.git.directory == "jobs/adder"


def test_racetrack_versioned_jobtype_is_accepted():
    assert parse_manifest({**GOOD, "jobtype": "python3:2.4.0"}).jobtype_base == "python3"


def test_error_names_field_and_value():
    errors = errors_of({**GOOD, "resources": {"memory_max": "lots"}})
    assert errors == ["resources.memory_max: 'lots' is not a quantity like 512Mi"]


def test_all_errors_are_reported_at_once():
    data = {
        "name": "Bad_Name",
        "jobtype": "pyhton3",
        "version": "1.0",
        "replicas": 0,
        "surprise": 1,
        "runtime_env": {"1BAD": "x"},
    }
    errors = errors_of(data)
    assert (
        "name: 'Bad_Name' is not a job name (lowercase letters, digits and '-', 1-63 chars)"
        in errors
    )
    assert any(e.startswith("jobtype: 'pyhton3' is not a job type (known: python3") for e in errors)
    assert "version: '1.0' is not a semantic version like 1.2.3" in errors
    assert "owner_email: required field is missing" in errors
    assert any(e.startswith("replicas: 0 ") for e in errors)
    assert "surprise: unknown field" in errors
    assert "runtime_env: {'1BAD': 'x'} '1BAD' is not an environment variable name" in errors
    assert len(errors) == 6 + 1  # the six above plus runtime_env


def test_older_racetrack_sections_say_where_they_moved():
    errors = errors_of({**GOOD, "lang": "python3:latest", "python": {"entrypoint_path": "a.py"}})
    assert errors == [
        "lang: an older Racetrack field; write it as jobtype",
        "python: an older Racetrack field; write it as jobtype_extra",
    ]


def test_python3_extra_is_validated_with_the_manifest():
    errors = errors_of({**GOOD, "version": "x", "jobtype_extra": {"entrypoint_path": "../up.py"}})
    assert (
        "jobtype_extra.entrypoint_path: '../up.py' is not a relative path inside the repository"
        in errors
    )
    assert "version: 'x' is not a semantic version like 1.2.3" in errors


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "adder\n"),
        ("version", "1.0.0\n"),
        ("system_dependencies", ["curl\n", "run", "touch", "pwned"]),
        ("runtime_env", {"A\n": "x"}),
        ("resources", {"memory_max": "1Gi\n"}),
        ("jobtype_extra", {"entrypoint_path": "a.py\nRUN touch pwned"}),
    ],
)
def test_a_trailing_newline_never_slips_through(field, value):
    """`$` matches before a final newline; every pattern must match the whole value."""
    assert errors_of({**GOOD, field: value})


def test_python3_requires_entrypoint_path():
    assert errors_of({**GOOD, "jobtype_extra": {}}) == [
        "jobtype_extra.entrypoint_path: required field is missing"
    ]


def test_name_must_match_repository():
    (error,) = errors_of(GOOD, expected_name="subtractor")
    assert error.startswith("name: 'adder' does not match the repository 'subtractor'")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed", "job.yaml is not valid YAML at line 1"),
        ("- a\n- b\n", "job.yaml must be a mapping of fields, not list"),
        ("just text", "job.yaml must be a mapping of fields, not str"),
    ],
)
def test_unusable_yaml_is_explained(text, message):
    with pytest.raises(ManifestError) as caught:
        parse_manifest(decode_manifest(text))
    assert str(caught.value).startswith(message)


def test_huge_manifest_is_refused_before_parsing():
    with pytest.raises(ManifestError, match="larger than the limit"):
        decode_manifest("a: " + "x" * 10_000_000)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


MANIFEST = (
    "name: {name}\nowner_email: a@b.c\njobtype: python3\njobtype_extra:\n  entrypoint_path: e.py\n"
)


def test_monorepo_picks_the_manifest_named_after_the_job(tmp_path):
    write(
        tmp_path,
        {
            "jobs/adder/job.yaml": MANIFEST.format(name="adder"),
            "jobs/other/job.yaml": MANIFEST.format(name="other"),
        },
    )
    source = load_job_source(tmp_path, "adder")
    assert source.job_dir == tmp_path / "jobs" / "adder"


def test_monorepo_without_a_matching_manifest_lists_what_it_found(tmp_path):
    write(tmp_path, {"jobs/other/job.yaml": MANIFEST.format(name="other")})
    with pytest.raises(ManifestError, match=r"no job.yaml with name 'adder'.*jobs/other/job.yaml"):
        load_job_source(tmp_path, "adder")


def test_extends_merges_base_fields(tmp_path):
    write(
        tmp_path,
        {
            "base.yaml": "owner_email: team@b.c\njobtype: python3\n"
            "runtime_env:\n  A: base\n  B: base\n",
            "job.yaml": "extends: base.yaml\nname: adder\njobtype_extra:\n  entrypoint_path: e.py\n"
            "runtime_env:\n  B: job\n",
        },
    )
    manifest = load_job_source(tmp_path, "adder").manifest
    assert manifest.owner_email == "team@b.c"
    assert manifest.runtime_env == {"A": "base", "B": "job"}


def test_extends_outside_the_repository_is_refused(tmp_path):
    write(tmp_path / "repo", {"job.yaml": "extends: ../../etc/passwd\nname: adder\n"})
    with pytest.raises(
        ManifestError, match=r"extends: '\.\./\.\./etc/passwd' is not a relative path"
    ):
        load_job_source(tmp_path / "repo", "adder")
