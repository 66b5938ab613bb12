"""The golang buildpack's parts that need no compiler: the generated server's inputs, the
Dockerfile, the toolchain search and the bound on a build's time."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from buildpacks.build import BuildFailed, BuildRequest, run_logged
from buildpacks.docker_build import DockerBuildSettings
from buildpacks.golang import GolangBuildpack, render_dockerfile
from buildpacks.golang.openapi import openapi_document
from buildpacks.golang.signature import Form
from buildpacks.golang.toolchain import NO_TOOLCHAIN, deadline, find_go
from buildpacks.golang.tree import module_path
from buildpacks.golang.wrapper import check_module_path, go_string, render_openapi
from buildpacks.source import load_job_source
from tests.harness import FIXTURES


@pytest.mark.parametrize("form", list(Form))
def test_the_openapi_document_is_valid_for_both_forms(form):
    document = openapi_document(title="golang-guide", version="1.0.0", form=form)
    validate({**document, "servers": [{"url": "/pub/job/golang-guide/1.0.0"}]})
    body = document["paths"]["/api/v1/perform"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert ("oneOf" in schema) is (form is Form.GUIDE)
    assert {"/live", "/ready", "/health", "/metrics"} <= set(document["paths"])


def test_go_string_literals_escape_what_go_would_misread():
    assert go_string('a"b\\c') == '"a\\"b\\\\c"'
    assert go_string("é\n") == '"\\xc3\\xa9\\x0a"'
    generated = render_openapi('job "x"', "1.0.0", Form.PLUGIN)
    assert generated.count("\n") == 4  # one line of Go holds the whole document


def test_module_paths_are_checked():
    assert module_path('// comment\nmodule "example.com/adder"\n') == "example.com/adder"
    assert check_module_path("dummyserver") == "dummyserver"
    for bad in ('x"; import "os', "a/../b", "", "-x"):
        with pytest.raises(BuildFailed, match="is not a module path"):
            check_module_path(bad)


def test_the_dockerfile_builds_in_one_stage_and_runs_in_another():
    settings = DockerBuildSettings(golang_base_image="go:base", golang_runtime_image="run:base")
    text = render_dockerfile(settings, ["GOPROXY", "GOFLAGS", "GOPROXY"], "tag", ca_bundle=True)
    build, run = text.split("\nFROM run:base\n")
    assert text.count("ARG GOPROXY") == 1
    assert "ARG SSL_CERT_FILE=/etc/racetrack/build-ca.crt" in build  # trusted while building
    assert "go build -mod=mod -trimpath -buildvcs=false" in build
    assert "GOTOOLCHAIN=local" in build
    assert "SSL_CERT_FILE" not in run and "GOPROXY" not in run
    assert "COPY job /src/job" in run and "WORKDIR /src/job" in run
    assert "ENV RACETRACK_SWAGGER_UI_DIR=/opt/racetrack/swagger_ui" in run
    assert run.rstrip().endswith('CMD ["/usr/local/bin/job-server"]')


def test_go_is_found_on_path_or_where_debian_and_the_tarball_put_it(tmp_path):
    assert find_go(search_path="", candidates=()) is None
    go = tmp_path / "bin" / "go"
    go.parent.mkdir()
    go.write_text("#!/bin/sh\n")
    assert find_go(search_path="", candidates=(tmp_path / "missing", go)) is None  # not runnable
    go.chmod(0o755)
    assert find_go(search_path="", candidates=(tmp_path / "missing", go)) == go
    assert find_go(search_path=str(go.parent), candidates=()) == go


def request_for(fixture: str, checkout: Path) -> BuildRequest:
    shutil.copytree(FIXTURES / fixture, checkout)
    source = load_job_source(checkout, fixture)
    return BuildRequest(
        job=fixture,
        version=source.manifest.version,
        release=1,
        commit="c" * 40,
        manifest=source.manifest,
        source_dir=source.job_dir,
        progress=lambda _line: None,
    )


def test_without_a_toolchain_the_local_build_says_how_to_get_one(tmp_path):
    buildpack = GolangBuildpack(tmp_path / "a", tmp_path / "c", tmp_path / "w", lambda: None)
    with pytest.raises(BuildFailed) as failure:
        buildpack.build_directory(request_for("golang-guide", tmp_path / "checkout"))
    assert str(failure.value) == NO_TOOLCHAIN
    assert "scripts/setup-go" in NO_TOOLCHAIN and "--runtime docker" in NO_TOOLCHAIN
    assert not (tmp_path / "a").exists()


def test_a_wrong_signature_is_refused_before_anything_compiles(tmp_path):
    request = request_for("golang-plugin", tmp_path / "checkout")
    perform = request.source_dir / "perform.go"
    perform.write_text(perform.read_text().replace("(interface{}, error)", "(float64, error)"))
    buildpack = GolangBuildpack(tmp_path / "a", tmp_path / "c", tmp_path / "w")
    with pytest.raises(BuildFailed, match=r"^perform\.go has func Perform\(input") as failure:
        buildpack.build_directory(request)
    assert "func Perform(args []interface{}, kwargs" in str(failure.value)
    assert not (tmp_path / "a").exists()
    assert os.listdir(tmp_path / "w") == []  # the build's scratch space is gone


def test_a_build_step_is_killed_at_its_deadline():
    cancelled = threading.Event()
    started = time.monotonic()
    with deadline(cancelled, 0.3) as bound, pytest.raises(BuildFailed, match="cancelled"):
        run_logged(["sleep", "30"], lambda _line: None, what="sleep", cancelled=bound.stop)
    assert bound.expired and time.monotonic() - started < 10
    assert "did not finish within" in str(bound.failure("go build"))


def test_a_cancelled_deploy_stops_the_step_without_expiring():
    cancelled = threading.Event()
    threading.Timer(0.2, cancelled.set).start()
    with deadline(cancelled, 60) as bound, pytest.raises(BuildFailed, match="cancelled"):
        run_logged(["sleep", "30"], lambda _line: None, what="sleep", cancelled=bound.stop)
    assert not bound.expired
