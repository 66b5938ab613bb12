import re
from pathlib import Path

import pytest

from buildpacks.build import BuildFailed
from buildpacks.manifest import (
    ManifestError,
    decode_manifest,
    parse_manifest,
    parse_manifest_with_warnings,
)
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
        "name": "bad..name",
        "jobtype": "pyhton3",
        "version": "1.0",
        "replicas": 0,
        "surprise": 1,
        "runtime_env": {"1BAD": "x"},
    }
    errors = errors_of(data)
    assert (
        "name: 'bad..name' is not a job name (letters, digits, '-', '_' and '.', 1-63"
        " characters, starting with a letter or digit, without '..')"
    ) in errors
    assert any(e.startswith("jobtype: 'pyhton3' is not a job type (known: python3") for e in errors)
    assert "version: '1.0' is not a semantic version like 1.2.3" in errors
    assert "owner_email: required field is missing" in errors
    assert any(e.startswith("replicas: 0 ") for e in errors)
    assert "surprise: unknown field" in errors
    assert "runtime_env: {'1BAD': 'x'} '1BAD' is not an environment variable name" in errors
    assert len(errors) == 6 + 1  # the six above plus runtime_env


def test_older_racetrack_sections_say_where_they_moved():
    golang = {**GOOD, "jobtype": "golang", "jobtype_extra": {}}
    errors = errors_of({**golang, "lang": "golang:latest", "golang": {"gomod": "go.mod"}})
    assert errors == [
        "lang: an older Racetrack field; write it as jobtype",
        "golang: an older Racetrack field; write it as jobtype_extra",
    ]
    # `python:` is read as jobtype_extra for python3 jobs only
    assert errors_of({**golang, "python": {}}) == [
        "python: an older Racetrack field; write it as jobtype_extra"
    ]


def without_extra(**fields) -> dict:
    return {**{k: v for k, v in GOOD.items() if k != "jobtype_extra"}, **fields}


def test_python_section_is_read_as_jobtype_extra_with_a_warning():
    data = without_extra(python={"entrypoint_path": "a.py", "entrypoint_class": "Adder"})
    manifest, warnings = parse_manifest_with_warnings(data, expected_name="adder")
    assert manifest.python3.entrypoint_path == "a.py"
    assert manifest.python3.entrypoint_class == "Adder"
    assert warnings == ("the python section is deprecated; rename it to jobtype_extra",)
    assert parse_manifest_with_warnings(GOOD)[1] == ()


def test_errors_inside_the_python_section_name_it_as_written():
    errors = errors_of(without_extra(python={"entrypoint_path": "../a.py", "surprise": 1}))
    assert errors == [
        "python.entrypoint_path: '../a.py' is not a relative path inside the repository",
        "python.surprise: unknown field",
    ]
    assert errors_of(without_extra(python="a.py")) == [
        "python: 'a.py' input should be a valid dictionary"
    ]


def test_python_section_and_jobtype_extra_together_are_refused():
    errors = errors_of({**GOOD, "python": {"entrypoint_path": "b.py"}})
    assert errors == [
        "python: jobtype_extra is set too, and python is its older name; keep only jobtype_extra"
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


def test_load_job_source_reports_warnings_naming_the_file(tmp_path):
    python_section = MANIFEST.replace("jobtype_extra:", "python:")
    write(tmp_path, {"jobs/adder/job.yaml": python_section.format(name="adder")})
    source = load_job_source(tmp_path, "adder")
    assert source.manifest.python3.entrypoint_path == "e.py"
    assert source.warnings == (
        "jobs/adder/job.yaml: the python section is deprecated; rename it to jobtype_extra",
    )


def test_extends_merges_a_python_section_with_jobtype_extra(tmp_path):
    write(
        tmp_path,
        {
            "base.yaml": "owner_email: a@b.c\njobtype: python3\npython:\n  entrypoint_path: e.py\n",
            "job.yaml": "extends: base.yaml\nname: adder\njobtype_extra:\n  entrypoint_class: E\n",
        },
    )
    source = load_job_source(tmp_path, "adder")
    assert (source.manifest.python3.entrypoint_path, source.manifest.python3.entrypoint_class) == (
        "e.py",
        "E",
    )
    assert source.warnings == ()  # the job's own spelling is the current one


def test_monorepo_finds_a_job_named_through_extends(tmp_path):
    write(
        tmp_path,
        {
            "jobs/adder/job.yaml": MANIFEST.format(name="adder"),
            "jobs/base.yaml": MANIFEST.format(name="subtractor"),
            "jobs/subtractor/job.yaml": "extends: ../base.yaml\n",
        },
    )
    source = load_job_source(tmp_path, "subtractor")
    assert source.job_dir == tmp_path / "jobs" / "subtractor"
    assert source.manifest.name == "subtractor"
    assert load_job_source(tmp_path, "adder").job_dir == tmp_path / "jobs" / "adder"


def test_monorepo_with_two_manifests_of_one_name_lists_them(tmp_path):
    write(
        tmp_path,
        {
            "a/job.yaml": MANIFEST.format(name="adder"),
            "b/job.yaml": MANIFEST.format(name="adder"),
            "c/job.yaml": MANIFEST.format(name="other"),
        },
    )
    with pytest.raises(ManifestError) as caught:
        load_job_source(tmp_path, "adder")
    assert caught.value.errors == [
        "several job.yaml files name the job 'adder': a/job.yaml, b/job.yaml"
    ]


def test_a_root_manifest_of_another_job_leaves_the_monorepo_search_open(tmp_path):
    write(
        tmp_path,
        {"job.yaml": MANIFEST.format(name="other"), "sub/job.yaml": MANIFEST.format(name="adder")},
    )
    assert load_job_source(tmp_path, "adder").job_dir == tmp_path / "sub"
    assert load_job_source(tmp_path, "other").job_dir == tmp_path
    with pytest.raises(ManifestError, match="name: 'other' does not match the repository 'third'"):
        load_job_source(tmp_path, "third")


def test_secret_env_files_are_read_when_the_commit_holds_them(tmp_path):
    manifest = MANIFEST.format(name="adder") + (
        "secret_build_env_file: build.env\nsecret_runtime_env_file: runtime.env\n"
    )
    write(tmp_path, {"job.yaml": manifest})
    absent = load_job_source(tmp_path, "adder")
    assert (absent.secret_build_env, absent.secret_runtime_env) == (None, None)

    write(tmp_path, {"runtime.env": "# comment\nexport TOKEN='s3cret'\nMODE=fast\n"})
    present = load_job_source(tmp_path, "adder")
    assert present.secret_runtime_env == {"TOKEN": "s3cret", "MODE": "fast"}
    assert present.secret_build_env is None
    assert "s3cret" not in repr(present), "values never show in a repr"


def test_a_secret_env_file_that_is_not_name_value_lines_is_refused_without_its_values(tmp_path):
    manifest = MANIFEST.format(name="adder") + "secret_runtime_env_file: runtime.env\n"
    write(tmp_path, {"job.yaml": manifest, "runtime.env": "A=1\nnot a pair s3cret\n"})
    with pytest.raises(BuildFailed) as caught:
        load_job_source(tmp_path, "adder")
    assert str(caught.value) == (
        "secret_runtime_env_file: line 2 of 'runtime.env' is not NAME=VALUE"
    )


def test_python3_extra_takes_racetracks_concurrency_and_home_page_fields():
    extra = {"entrypoint_path": "a.py", "max_concurrency": 2, "max_concurrency_queue": 0,
             "home_page": "/api/v1/webview/", "check_requirements": False}  # fmt: skip
    manifest = parse_manifest({**GOOD, "jobtype_extra": extra})
    parsed = manifest.python3
    assert (parsed.max_concurrency, parsed.max_concurrency_queue) == (2, 0)
    assert (parsed.home_page, parsed.check_requirements) == ("/api/v1/webview/", False)
    assert errors_of({**GOOD, "jobtype_extra": {**extra, "home_page": "docs"}}) == [
        "jobtype_extra.home_page: 'docs' is not a path of the job starting with '/', like /docs"
    ]
    assert errors_of({**GOOD, "jobtype_extra": {**extra, "max_concurrency": 0}}) == [
        "jobtype_extra.max_concurrency: 0 input should be greater than or equal to 1"
    ]


ALIAS_BOMB = "name: adder\nlabels:\n  a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  {chr(98 + n)}: &{chr(98 + n)} [{', '.join([f'*{chr(97 + n)}'] * 9)}]\n" for n in range(8)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ALIAS_BOMB, "job.yaml at line 3, column 6: anchors (&a) are not allowed in a manifest"),
        ("name: adder\nbase: *missing\n", "line 2, column 7: aliases (*missing) are not allowed"),
        ("a: &x 1\n<<: *x\n", "anchors (&x) are not allowed in a manifest"),
        ("a: " + "[" * 40 + "]" * 40 + "\n", "line 1, column 35: nested deeper than 32 levels"),
        ("- x\n" * 20_000, "line 10000, column 3: more than 10000 values"),
    ],
)
def test_yaml_that_expands_or_nests_without_bound_is_refused_before_it_is_built(text, message):
    """A 439-byte alias bomb once took gigabytes and minutes: refused while composing."""
    with pytest.raises(ManifestError) as refused:
        decode_manifest(text)
    assert message in str(refused.value)


@pytest.mark.parametrize("field", ["runtime_env", "build_env"])
@pytest.mark.parametrize(
    "name", ["PYTHONPATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "HOME", "PORT", "JOB_NAME"]
)
def test_reserved_environment_names_are_refused_naming_the_variable(field, name):
    data = {**GOOD, field: {"GREETING": "hi", name: "/tmp/evil"}}
    with pytest.raises(ManifestError) as refused:
        parse_manifest(data)
    assert f"{name} is reserved: the platform sets it, or it changes what code" in str(
        refused.value
    )
    assert str(refused.value).startswith(f"{field}: ")


def test_reserved_names_in_a_committed_secret_env_file_are_refused(tmp_path):
    (tmp_path / "job.yaml").write_text(
        "name: adder\nowner_email: a@b.c\njobtype: python3\njobtype_extra:\n"
        "  entrypoint_path: adder.py\nsecret_runtime_env_file: secrets.env\n"
    )
    (tmp_path / "secrets.env").write_text("API_KEY=1\nLD_PRELOAD=/tmp/evil.so\n")
    with pytest.raises(BuildFailed) as refused:
        load_job_source(tmp_path, "adder")
    assert str(refused.value) == (
        "secret_runtime_env_file: line 2 of 'secrets.env': LD_PRELOAD is reserved: the platform"
        " sets it, or it changes what code a process loads"
    )


SAMPLE = (
    MANIFEST
    + "git:\n  remote: https://github.com/TheRacetrack/racetrack\n  directory: {directory}\n"
)


def test_a_git_directory_this_commit_lacks_falls_back_to_the_manifests_directory(tmp_path):
    # a Racetrack sample pushed as its own repository
    write(tmp_path / "alone", {"job.yaml": SAMPLE.format(name="adder", directory="sample/adder")})
    source = load_job_source(tmp_path / "alone", "adder")
    assert source.job_dir == tmp_path / "alone"
    assert source.warnings == (
        "job.yaml: git.directory 'sample/adder' is not in this commit: the job is the directory"
        " of its job.yaml (the repository root)",
    )
    # the samples at the root of a monorepo
    write(
        tmp_path / "mono", {"adder/job.yaml": SAMPLE.format(name="adder", directory="sample/adder")}
    )
    source = load_job_source(tmp_path / "mono", "adder")
    assert source.job_dir == tmp_path / "mono" / "adder"
    assert source.warnings[0].endswith("the job is the directory of its job.yaml (adder/)")


def test_a_git_directory_this_commit_has_wins_and_one_that_escapes_is_refused(tmp_path):
    # Racetrack's own layout: the manifest in sample/adder, git.directory naming it
    files = {"sample/adder/job.yaml": SAMPLE.format(name="adder", directory="sample/adder")}
    write(tmp_path / "racetrack", files)
    source = load_job_source(tmp_path / "racetrack", "adder")
    assert source.job_dir == tmp_path / "racetrack" / "sample" / "adder" and not source.warnings
    # the code elsewhere than the manifest
    write(tmp_path / "split", {"job.yaml": SAMPLE.format(name="adder", directory="code"),
                               "code/e.py": ""})  # fmt: skip
    assert load_job_source(tmp_path / "split", "adder").job_dir == tmp_path / "split" / "code"
    write(tmp_path / "out", {"job.yaml": SAMPLE.format(name="adder", directory="../../etc")})
    with pytest.raises(
        ManifestError, match=r"git.directory: '\.\./\.\./etc' is not a relative path"
    ):
        load_job_source(tmp_path / "out", "adder")
    write(tmp_path / "file", {"job.yaml": SAMPLE.format(name="adder", directory="e.py"),
                              "e.py": ""})  # fmt: skip
    with pytest.raises(ManifestError, match=r"git.directory: 'e.py' is not a directory"):
        load_job_source(tmp_path / "file", "adder")


def test_racetracks_job_names_are_taken_and_hostile_ones_refused():
    for name in ("my_fantabulous_skynet_AI", "Adder", "adder.v2", "9lives", "A" * 63):
        assert parse_manifest({**GOOD, "name": name}).name == name
    for name in ("..", "a..b", ".x", "_x", "a/b", "a b", "a;b", "a\0b", "A" * 64, "x.git", ""):
        assert any(e.startswith("name: ") for e in errors_of({**GOOD, "name": name})), name


def test_job_names_map_to_resource_names_that_never_collide():
    from buildpacks.names import safe_name
    from controller.runtimes.names import release_name

    names = ["my-job", "My-Job", "my_job", "my.job", "MY_JOB", "my-job-", "a" * 63, "A" * 63]
    mapped = {safe_name(name) for name in names}
    assert len(mapped) == len(names)
    assert safe_name("my-job") == "my-job"
    releases = {release_name(name, "1.0.0", 1) for name in names}
    assert len(releases) == len(names)
    label = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
    assert all(label.fullmatch(r) and len(r) <= 58 for r in releases)  # room for "-<replica>"
    assert all(label.fullmatch(m) and len(m) <= 63 for m in mapped)
