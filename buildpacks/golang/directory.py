"""The golang buildpack's local target: the job compiled natively with the machine's Go.

Layout of `<artifacts>/<job>/<version>-r<release>-<commit12>/`:
  bin/job-server  the binary (the job and the generated server, statically linked)
  swagger_ui/     the assets of /docs
  src/            the job's directory at that commit: the binary's working directory
  artifact.json   written last: a release directory without it is incomplete

`go build` runs in the job family's build sandbox (the job's user, seeing the system, the
toolchain, the build's copy and the job's own module and build caches), with the machine's
module settings (`go env GOPROXY` …) and never another toolchain (GOTOOLCHAIN=local).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from buildpacks.build import (
    BuildFailed,
    BuildRequest,
    DirectoryArtifact,
    Probe,
    SecretMask,
    no_space_means,
    run_logged,
)
from buildpacks.golang.toolchain import NO_TOOLCHAIN, Toolchain, deadline, host_toolchain
from buildpacks.golang.tree import prepare
from buildpacks.golang.wrapper import WRAPPER_DIR, copy_swagger_ui
from buildpacks.names import safe_name
from buildpacks.source import copy_job_source

ARTIFACT_RECORD = "artifact.json"  # the python3 buildpack's name: its clean-up knows it
# what a build step gets from the platform's environment: how to reach and trust the network
PASSED_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


class GoDirectoryBuilder:
    """Builds golang release directories under `artifacts_root`; module and build caches per
    job (and build user) under `cache_root`; each build's scratch space in `work_root`, which
    the platform empties when it starts."""

    def __init__(
        self,
        artifacts_root: Path,
        cache_root: Path,
        work_root: Path,
        toolchain: Callable[[], Toolchain | None] = host_toolchain,
    ) -> None:
        self._artifacts_root = artifacts_root
        self._cache_root = cache_root / "golang"
        self._work_root = work_root
        self._toolchain = toolchain  # the machine's Go, found anew for each build

    def build(self, request: BuildRequest) -> DirectoryArtifact:
        self._work_root.mkdir(parents=True, exist_ok=True)
        with no_space_means("preparing the Go build"):
            scratch = Path(tempfile.mkdtemp(prefix="golang-", dir=self._work_root))
        scratch.chmod(0o755)  # the sandbox enters it before it drops to the build's user
        try:
            with no_space_means("copying the job's source"):
                module = prepare(request, scratch / "build")  # refuses a job it cannot serve
            toolchain = self._toolchain()
            if toolchain is None:
                raise BuildFailed(NO_TOOLCHAIN)
            request.progress(f"Compiling with {toolchain.version} ({toolchain.go})")
            binary = self._compile(request, toolchain, scratch, module.root)
            return self._write_release(request, binary)
        finally:
            _remove(scratch)

    def _cache(self, request: BuildRequest) -> Path:
        """The job's own caches: what one family's build wrote never serves another."""
        owner = request.isolation.owner if request.isolation is not None else ()
        key = hashlib.sha256(json.dumps([request.job, *owner]).encode()).hexdigest()[:16]
        cache = self._cache_root / f"{safe_name(request.job)}-{key}"
        for directory in (cache, cache / "mod", cache / "build"):
            directory.mkdir(parents=True, exist_ok=True)
        return cache

    def _compile(
        self, request: BuildRequest, toolchain: Toolchain, scratch: Path, module: Path
    ) -> Path:
        cache = self._cache(request)
        home, out = scratch / "home", scratch / "out"
        for directory in (home, home / "tmp", out):
            directory.mkdir(parents=True)
        if request.isolation is not None:
            _own(scratch, request.isolation.owner)
            _own(cache, request.isolation.owner, only_missing=True)
        env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        env.update(toolchain.settings)
        env.update(
            {
                "HOME": str(home),
                "TMPDIR": str(home / "tmp"),
                "GOENV": "off",  # the settings above, not a go env file of the build's user
                "GOPATH": str(cache / "gopath"),
                "GOMODCACHE": str(cache / "mod"),
                "GOCACHE": str(cache / "build"),
                "GOTOOLCHAIN": "local",  # never download and run another toolchain
                "GOWORK": "off",
                "CGO_ENABLED": "0",
            }
        )
        env.update(request.manifest.build_env)  # the job's wins
        env.update(request.build_secrets)  # never shown: the output is masked
        argv = [
            str(toolchain.go), "build", "-mod=mod", "-trimpath", "-buildvcs=false",
            "-ldflags=-s -w", "-o", str(out / "job-server"), f"./{WRAPPER_DIR}",
        ]  # fmt: skip
        request.progress("Building the job with go build")
        with deadline(request.cancelled) as bound:
            try:
                _run(request, argv, module, [toolchain.goroot], [scratch, cache], env, bound.stop)
            except BuildFailed as failure:
                if bound.expired:
                    raise bound.failure("go build") from None
                raise BuildFailed(SecretMask(request.build_secrets)(str(failure))) from None
        return out / "job-server"

    def _write_release(self, request: BuildRequest, binary: Path) -> DirectoryArtifact:
        dest = (
            self._artifacts_root
            / request.job
            / f"{request.version}-r{request.release}-{request.commit[:12]}"
        )
        if dest.exists():  # left by a build that died half-way with this release number
            _remove(dest)
        try:
            with no_space_means("writing the release"):
                (dest / "bin").mkdir(parents=True)
                shutil.copyfile(binary, dest / "bin" / "job-server")
                (dest / "bin" / "job-server").chmod(0o755)
                copy_swagger_ui(dest / "swagger_ui")
                for warning in copy_job_source(request.source_dir, dest / "src", request.manifest):
                    request.progress(f"Warning: {warning}")
                artifact = DirectoryArtifact(
                    path=dest,
                    command=("{artifact}/bin/job-server",),
                    cwd="{artifact}/src",
                    env={
                        # JOB_DIR also marks the platform's job processes (for its clean-up)
                        "JOB_DIR": "{artifact}/src",
                        "RACETRACK_SWAGGER_UI_DIR": "{artifact}/swagger_ui",
                    },
                    probe=Probe("http", "/ready"),
                )
                record = json.dumps(artifact.to_record(), indent=2) + "\n"
                (dest / ARTIFACT_RECORD).write_text(record)
            _read_only(dest)
        except BaseException:
            if dest.exists():  # a half-written release is never left behind
                _remove(dest)
            raise
        request.progress(f"Built {dest.name}")
        return artifact


def _run(
    request: BuildRequest,
    argv: list[str],
    cwd: Path,
    read_only: list[Path],
    writable: list[Path],
    env: dict[str, str],
    stop: threading.Event,
) -> None:
    """A build step in the request's sandbox (or, without one, as the platform's user), its
    output masked, killed when `stop` is set."""
    mask = SecretMask(request.build_secrets)

    def progress(line: str) -> None:
        request.progress(mask(line))

    if request.isolation is None:
        run_logged(argv, progress, what="go build", cancelled=stop, cwd=cwd, env=env)
        return
    visible = [path.resolve() for path in read_only]
    isolated = request.isolation.wrap(argv, cwd=cwd, read_only=visible, writable=writable)
    try:
        run_logged(
            isolated.argv,
            progress,
            what="go build",
            cancelled=stop,
            env=env,
            pass_fds=isolated.pass_fds,
            start_new_session=True,
        )
    finally:
        isolated.close()


def _own(root: Path, owner: tuple[int, int], *, only_missing: bool = False) -> None:
    """Give a tree to the build's user (links are never followed). `only_missing`: the top
    directories only, when they are not the user's yet (a cache's content is already theirs)."""
    if only_missing:
        for directory in (root, *(p for p in root.iterdir() if p.is_dir())):
            if directory.stat().st_uid != owner[0]:
                os.chown(directory, *owner, follow_symlinks=False)
        return
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.chown(Path(directory) / name, *owner, follow_symlinks=False)
    os.chown(root, *owner, follow_symlinks=False)


def _read_only(root: Path) -> None:
    for directory, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(directory) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & 0o555)
        Path(directory).chmod(0o555)


def _remove(root: Path) -> None:
    """Delete a (possibly read-only) tree."""
    for directory, _dirnames, _filenames in os.walk(root):
        if not Path(directory).is_symlink():
            Path(directory).chmod(0o755)
    shutil.rmtree(root)
