"""The python3 buildpack's local target: an immutable directory per release.

Layout of `<artifacts>/<job>/<version>-r<release>-<commit12>/`:
  src/        the job's directory at that commit, precompiled
  wrapper/    racetrack_job_wrapper, copied so the release never changes when the platform does
  venv ->     a dependency venv shared by every release with the same requirements
  artifact.json

The dependency venv plays the part of Docker's cached dependency layer: it is keyed by the
interpreter and the requirements file's content, built once, never modified afterwards, so a
code-only change skips `pip install` entirely.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from buildpacks.build import (
    BuildFailed,
    BuildRequest,
    DirectoryArtifact,
    Progress,
    SecretMask,
    run_logged,
)
from buildpacks.manifest import Python3Extra
from buildpacks.python3.common import WRAPPER_PACKAGE, check_source, copy_wrapper, wrapper_env
from buildpacks.source import copy_job_source

COMPLETE_MARKER = ".racetrack-complete"


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
        dest.mkdir(parents=True)
        progress("Copying the job's source")
        copy_job_source(request.source_dir, dest / "src", request.manifest)  # no secret env files
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
        (dest / "artifact.json").write_text(json.dumps(artifact.to_record(), indent=2) + "\n")
        make_read_only(dest)
        progress(f"Built {dest.name}")
        return artifact

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
        source, cancelled = request.source_dir, request.cancelled
        progress = _masked(request.progress, request.build_secrets)
        build_env = pip_environment(request)
        fingerprint = hashlib.sha256()
        fingerprint.update(sys.version.encode())
        fingerprint.update(os.path.realpath(sys.executable).encode())
        fingerprint.update(requirements.read_bytes() if requirements else b"")
        fingerprint.update(b"check" if extra.check_requirements else b"")
        if build_env and requirements:  # what pip installs may depend on it (`${VAR}` lines)
            fingerprint.update(json.dumps(sorted(build_env.items())).encode())
        venv = self._cache_root / f"venv-{fingerprint.hexdigest()[:24]}"
        self._cache_root.mkdir(parents=True, exist_ok=True)
        with _file_lock(venv.with_suffix(".lock")):
            if (venv / COMPLETE_MARKER).exists():
                progress("Dependencies unchanged: reusing the cached environment")
                return venv
            if venv.exists():
                remove_tree(venv)
            progress("Creating the job's virtual environment")
            run_logged(
                [sys.executable, "-m", "venv", "--without-pip", str(venv)],
                progress,
                what="creating the virtual environment",
                cancelled=cancelled,
            )
            if requirements is not None:
                pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
                progress(f"Installing {requirements.relative_to(source)}")
                run_logged(
                    [
                        *pip,
                        "install",
                        "--no-input",
                        "--disable-pip-version-check",
                        "--progress-bar",
                        "off",
                        "-r",
                        str(requirements),
                    ],
                    progress,
                    what="pip install",
                    cancelled=cancelled,
                    cwd=source,
                    env={**os.environ, **build_env},
                )
                if extra.check_requirements:
                    run_logged([*pip, "check"], progress, what="pip check", cancelled=cancelled)
            (venv / COMPLETE_MARKER).touch()
            make_read_only(venv)
        return venv

    def _precompile(self, dest: Path, progress: Progress) -> None:
        """Write bytecode now, so that nothing is ever written into the artifact at run time."""
        try:
            run_logged(
                [
                    str(dest / "venv" / "bin" / "python"),
                    "-m",
                    "compileall",
                    "-q",
                    str(dest / "src"),
                    str(dest / "wrapper"),
                ],
                progress,
                what="compiling",
            )
        except BuildFailed:
            progress("Warning: some Python files do not compile (see above)")


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
