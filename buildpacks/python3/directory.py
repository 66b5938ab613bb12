"""The python3 buildpack's local target: an immutable directory per release.

Layout of `<artifacts>/<job>/<version>-r<release>-<commit12>/`:
  src/        the job's directory at that commit, precompiled
  wrapper/    racetrack_job_wrapper, copied so the release never changes when the platform does
  venv ->     a dependency venv shared by the job's releases with the same requirements
  artifact.json

The dependency venv plays the part of Docker's cached dependency layer: it is keyed by the
interpreter, the job (and its build user), the requirements file's content and, when that
installs or includes files of the job's tree, their content; built once, never modified
afterwards, so a code-only change skips `pip install` entirely. It is never shared between jobs:
a build runs its packages' code, and what that wrote must not serve another job.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from buildpacks.build import (
    BuildFailed,
    BuildRequest,
    DirectoryArtifact,
    Progress,
    SecretMask,
    no_space_means,
    run_logged,
)
from buildpacks.manifest import Python3Extra
from buildpacks.python3.common import WRAPPER_PACKAGE, check_source, copy_wrapper, wrapper_env
from buildpacks.python3.companions import installed_in, missing_companions
from buildpacks.source import copy_job_source

COMPLETE_MARKER = ".racetrack-complete"
ARTIFACT_RECORD = "artifact.json"  # written last: a release directory without it is incomplete


class DirectoryBuilder:
    """Builds python3 release directories under `artifacts_root`, venvs under `cache_root`."""

    def __init__(self, artifacts_root: Path, cache_root: Path) -> None:
        self._artifacts_root = artifacts_root
        self._cache_root = cache_root / "python3"

    def build(self, request: BuildRequest) -> DirectoryArtifact:
        extra = request.manifest.python3
        progress = request.progress
        requirements = check_source(request.source_dir, extra, progress)
        self._warn_python_version(extra, progress)

        with _failures_masked(request.build_secrets):
            venv = self._dependency_venv(request, requirements, extra)
        dest = (
            self._artifacts_root
            / request.job
            / (f"{request.version}-r{request.release}-{request.commit[:12]}")
        )
        if dest.exists():  # left by a build that died half-way with this release number
            remove_tree(dest)
        try:
            artifact = self._write_release(request, dest, venv, extra)
        except BaseException:
            if dest.exists():  # a half-written release is never left behind
                remove_tree(dest)
            raise
        progress(f"Built {dest.name}")
        return artifact

    def _write_release(
        self, request: BuildRequest, dest: Path, venv: Path, extra: Python3Extra
    ) -> DirectoryArtifact:
        progress = request.progress
        with no_space_means("copying the job's source"):
            dest.mkdir(parents=True)
            progress("Copying the job's source")
            for warning in copy_job_source(request.source_dir, dest / "src", request.manifest):
                progress(f"Warning: {warning}")
            copy_wrapper(dest / "wrapper")
            (dest / "venv").symlink_to(os.path.relpath(venv, dest))
        self._precompile(dest, progress)
        artifact = DirectoryArtifact(
            path=dest,
            command=("{artifact}/venv/bin/python", "-m", WRAPPER_PACKAGE.name),
            cwd="{artifact}/src",
            env={
                **wrapper_env(extra, job_dir="{artifact}/src", wrapper_dir="{artifact}/wrapper"),
                "PYTHONNOUSERSITE": "1",
            },
        )
        with no_space_means("writing the release"):
            (dest / ARTIFACT_RECORD).write_text(json.dumps(artifact.to_record(), indent=2) + "\n")
        make_read_only(dest)
        return artifact

    def remove_incomplete(self) -> list[Path]:
        """After a restart: release directories without their record and venvs without their
        marker were being written when the platform stopped (or ran out of disk): remove them."""
        removed: list[Path] = []
        for job in self._artifacts_root.iterdir() if self._artifacts_root.is_dir() else ():
            for release in job.iterdir() if job.is_dir() else ():
                if release.is_dir() and not (release / ARTIFACT_RECORD).exists():
                    remove_tree(release)
                    removed.append(release)
        for entry in self._cache_root.iterdir() if self._cache_root.is_dir() else ():
            if entry.is_dir() and not (entry / COMPLETE_MARKER).exists():
                remove_tree(entry)
                removed.append(entry)
        return removed

    def _warn_python_version(self, extra: Python3Extra, progress: Progress) -> None:
        running = f"{sys.version_info.major}.{sys.version_info.minor}"
        wanted = extra.python_version
        if wanted and not (wanted == running or wanted.startswith(running + ".")):
            progress(
                f"Warning: jobtype_extra.python_version is {wanted}; "
                f"the local runtime runs Python {running}"
            )

    def _dependency_venv(
        self, request: BuildRequest, requirements: Path | None, extra: Python3Extra
    ) -> Path:
        build_env = pip_environment(request)
        fingerprint = hashlib.sha256()
        fingerprint.update(sys.version.encode())
        fingerprint.update(os.path.realpath(sys.executable).encode())
        # a job family's environments are its own: what one family's build wrote (its
        # packages' setup.py ran) never serves another family, even with the same requirements
        owner = request.isolation.owner if request.isolation is not None else ()
        fingerprint.update(json.dumps([request.job, *owner]).encode())
        text = requirements.read_bytes() if requirements else b""
        fingerprint.update(text)
        if _names_local_files(text):  # `./pkg`, `-r more.txt`: their content matters too
            fingerprint.update(_tree_digest(request.source_dir))
        fingerprint.update(b"check" if extra.check_requirements else b"")
        if build_env and requirements:  # what pip installs may depend on it (`${VAR}` lines)
            fingerprint.update(json.dumps(sorted(build_env.items())).encode())
        venv = self._cache_root / f"venv-{fingerprint.hexdigest()[:24]}"
        self._cache_root.mkdir(parents=True, exist_ok=True)
        with _file_lock(venv.with_suffix(".lock")):
            if (venv / COMPLETE_MARKER).exists():
                request.progress("Dependencies unchanged: reusing the cached environment")
                return venv
            if venv.exists():
                remove_tree(venv)
            with no_space_means("creating the job's virtual environment"):
                scratch = Path(tempfile.mkdtemp(prefix=f"{venv.name}-", dir=self._cache_root))
            try:
                with no_space_means("creating the job's virtual environment"):
                    self._install(request, venv, scratch, requirements, extra, build_env)
            except BaseException:
                if venv.exists():
                    remove_tree(venv)  # a half-made venv is never reused
                raise
            finally:
                remove_tree(scratch)
            _own_by_platform(venv)  # what the job's user wrote is the platform's, read-only
            (venv / COMPLETE_MARKER).touch()
            make_read_only(venv)
        return venv

    def _install(
        self,
        request: BuildRequest,
        venv: Path,
        scratch: Path,
        requirements: Path | None,
        extra: Python3Extra,
        build_env: Mapping[str, str],
    ) -> None:
        """Create the venv and install the requirements into it: in the sandbox, as the job's
        user, seeing the job's source, the venv and a scratch $HOME (pip and setup.py run the
        job's dependencies' code)."""
        source = request.source_dir
        progress = _masked(request.progress, request.build_secrets)
        home = scratch / "home"
        for directory in (venv, home, home / "tmp"):
            directory.mkdir(parents=True)
            if request.isolation is not None:
                os.chown(directory, *request.isolation.owner)
        env = {**_build_environment(home), **build_env}

        def step(argv: list[str], what: str, *, cwd: Path = source) -> None:
            run_isolated(
                request,
                argv,
                what=what,
                progress=progress,
                cwd=cwd,
                read_only=[source],
                writable=[venv, home],
                env=env,
            )

        request.progress("Creating the job's virtual environment")
        step([sys.executable, "-m", "venv", "--without-pip", str(venv)], "creating the venv")
        if requirements is None:
            return
        pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
        request.progress(f"Installing {requirements.relative_to(source)}")
        step(
            [
                *pip,
                "install",
                "--no-input",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                "-r",
                str(requirements),
            ],
            "pip install",
        )
        companions = missing_companions(installed_in(venv))
        if companions:
            request.progress(f"Installing {', '.join(companions)}, as Racetrack's runner has it")
            step([*pip, "install", "--no-input", "--no-cache-dir", "--disable-pip-version-check",
                  "--progress-bar", "off", *companions], "pip install")  # fmt: skip
        if extra.check_requirements:
            step([*pip, "check"], "pip check")

    def _precompile(self, dest: Path, progress: Progress) -> None:
        """Write bytecode now, so that nothing is ever written into the artifact at run time.
        The platform's own interpreter compiles (the same Python the job runs on): the job's
        venv would run its packages' .pth files, which is the job's code, outside the sandbox."""
        try:
            compile_all = [sys.executable, "-I", "-m", "compileall", "-q"]
            targets = [str(dest / "src"), str(dest / "wrapper")]
            run_logged([*compile_all, *targets], progress, what="compiling")
        except BuildFailed:
            progress("Warning: some Python files do not compile (see above)")


# what a build step gets from the platform's environment: where to find packages and how to
# trust them, never the platform's own secrets
BUILD_ENV_PREFIXES = ("PIP_",)
BUILD_ENV_NAMES = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


def _build_environment(home: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name in BUILD_ENV_NAMES or name.startswith(BUILD_ENV_PREFIXES)
    }
    env.update({"HOME": str(home), "TMPDIR": str(home / "tmp"), "PYTHONNOUSERSITE": "1"})
    return env


def run_isolated(
    request: BuildRequest,
    argv: list[str],
    *,
    what: str,
    progress: Progress,
    cwd: Path,
    read_only: list[Path],
    writable: list[Path],
    env: Mapping[str, str],
) -> None:
    """A build step in the request's sandbox (or, without one, as the platform's user)."""
    if request.isolation is None:
        run_logged(argv, progress, what=what, cancelled=request.cancelled, cwd=cwd, env=env)
        return
    isolated = request.isolation.wrap(argv, cwd=cwd, read_only=read_only, writable=writable)
    try:
        run_logged(
            isolated.argv,
            progress,
            what=what,
            cancelled=request.cancelled,
            env=env,
            pass_fds=isolated.pass_fds,
            start_new_session=True,
        )
    finally:
        isolated.close()


def _own_by_platform(root: Path) -> None:
    """Give a tree the build's sandbox wrote back to the platform's user (links included,
    never followed)."""
    uid, gid = os.geteuid(), os.getegid()
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.chown(Path(directory) / name, uid, gid, follow_symlinks=False)
    os.chown(root, uid, gid, follow_symlinks=False)


LOCAL_REQUIREMENT = re.compile(
    rb"^\s*(\.|/|~|file:|-e\b|--editable\b|-r\b|--requirement\b|-c\b|--constraint\b)|@\s*file:",
    re.MULTILINE,
)


def _names_local_files(requirements: bytes) -> bool:
    """Whether a requirements file installs from, or includes, files of the job's own tree."""
    return LOCAL_REQUIREMENT.search(requirements) is not None


def _tree_digest(root: Path) -> bytes:
    """The paths, modes and contents of every file below `root`, as one digest."""
    digest = hashlib.sha256()
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(directory) / name
            digest.update(str(path.relative_to(root)).encode("utf-8", "surrogateescape") + b"\0")
            if path.is_symlink():
                digest.update(b"link:" + os.readlink(path).encode("utf-8", "surrogateescape"))
            else:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.digest()


def pip_environment(request: BuildRequest) -> dict[str, str]:
    """What `pip install` gets on top of the platform's environment: `build_env`, then the
    secret build values (the secret env file's, then the build config), which win."""
    return {**request.manifest.build_env, **request.build_secrets}


def _masked(progress: Progress, secrets: Mapping[str, str]) -> Progress:
    """Build output with the secret build values replaced (pip echoes what it installs)."""
    mask = SecretMask(secrets)
    return lambda line: progress(mask(line))


@contextmanager
def _failures_masked(secrets: Mapping[str, str]) -> Iterator[None]:
    """A failed step's reason quotes its last output line: masked like the output."""
    mask = SecretMask(secrets)
    try:
        yield
    except BuildFailed as exc:
        raise BuildFailed(mask(str(exc))) from None


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def make_read_only(root: Path) -> None:
    """Drop write permission everywhere below `root` (symlinks are left alone)."""
    for directory, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(directory) / name
            if not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        Path(directory).chmod(0o555)


def remove_tree(root: Path) -> None:
    """Delete a (possibly read-only) tree."""
    for directory, _dirnames, _filenames in os.walk(root):
        if not Path(directory).is_symlink():
            Path(directory).chmod(0o755)
    shutil.rmtree(root)
