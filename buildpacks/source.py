"""Finding and reading a job's manifest in a checked-out commit.

The manifest is the root `job.yaml`, or in a monorepo the one `job.yaml` whose `name` (after
`extends` is merged) is the job's; the directory holding it is the job's directory, which the
build uses as its context. The secret env files it names are read here, if the commit holds
them: their values go to the platform, never into an artifact.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildpacks.build import BuildFailed
from buildpacks.manifest import (
    ENV_NAME_RE,
    PYTHON_ALIAS,
    Manifest,
    ManifestError,
    decode_manifest,
    merge_manifests,
    parse_manifest_with_warnings,
    reserved_env,
)

MANIFEST_NAME = "job.yaml"
MAX_EXTENDS_DEPTH = 5


@dataclass(frozen=True)
class JobSource:
    """A job's manifest and the directory it describes, inside a checkout.

    `warnings`: what the manifest should change although it is accepted, one line each, naming
    the file. `secret_build_env` / `secret_runtime_env`: the values of the manifest's secret env
    files, or None when the commit does not hold the file (or the manifest names none).
    """

    manifest: Manifest
    job_dir: Path
    manifest_path: Path
    warnings: tuple[str, ...] = ()
    secret_build_env: dict[str, str] | None = field(default=None, repr=False)
    secret_runtime_env: dict[str, str] | None = field(default=None, repr=False)


def _shown(root: Path, path: Path) -> str:
    """A path for a one-line message (git allows newlines in file names)."""
    relative = path.relative_to(root).as_posix()
    return relative if relative.isprintable() else repr(relative)


def is_inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every symlink followed, stays below `root` (a loop does not)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (RuntimeError, OSError):
        return False


def _read_data(root: Path, path: Path, depth: int = 0) -> dict[str, Any]:
    relative = _shown(root, path)
    data = decode_manifest(path.read_bytes(), source=relative)
    if not isinstance(data, dict):
        raise ManifestError([f"{relative} must be a mapping of fields, not {type(data).__name__}"])
    base_ref = data.get("extends")
    if not isinstance(base_ref, str):
        return data
    if depth >= MAX_EXTENDS_DEPTH:
        raise ManifestError([f"extends: {base_ref!r} nests deeper than {MAX_EXTENDS_DEPTH} levels"])
    base_path = path.parent / base_ref
    if "\0" in base_ref or not is_inside(root, base_path):
        raise ManifestError([f"extends: {base_ref!r} is not a relative path inside the repository"])
    if not base_path.is_file():
        raise ManifestError([f"extends: {base_ref!r} does not exist in this commit"])
    base = _read_data(root, base_path, depth + 1)
    base.pop("extends", None)
    return merge_manifests(_spelled_like(base, data), data)


def _spelled_like(base: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """`extends` across Racetrack's older `python:` and `jobtype_extra`: the base's section
    takes the job's spelling, so that the two merge key by key."""
    for old, new in ((PYTHON_ALIAS, "jobtype_extra"), ("jobtype_extra", PYTHON_ALIAS)):
        if old in job and new in base and old not in base and new not in job:
            renamed = {key: value for key, value in base.items() if key != new}
            return {**renamed, old: base[new]}
    return base


def _manifest_name(root: Path, path: Path) -> str | None:
    """The job a `job.yaml` names, with `extends` merged (a job may take its name from its
    base); a file that cannot be merged is named by its own `name`, if it has one."""
    try:
        data = _read_data(root, path)
    except (ManifestError, OSError):
        try:
            data = decode_manifest(path.read_bytes())
        except (ManifestError, OSError):
            return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def require_file(root: Path, relative: str, field: str) -> Path:
    """`root/relative`, which must be a file inside `root`; BuildFailed names the field."""
    path = root / relative
    if not path.is_file() or not is_inside(root, path):
        raise BuildFailed(f"{field}: {relative!r} is not a file in the job's directory")
    return path


def read_env_file(root: Path, relative: str, field: str) -> dict[str, str]:
    """`KEY=VALUE` lines (blank lines, `#` comments and `export ` prefixes allowed)."""
    values: dict[str, str] = {}
    path = require_file(root, relative, field)
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or not ENV_NAME_RE.fullmatch(name):
            raise BuildFailed(f"{field}: line {number} of {relative!r} is not NAME=VALUE")
        if reason := reserved_env(name):
            raise BuildFailed(f"{field}: line {number} of {relative!r}: {reason}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def copy_job_source(source: Path, dest: Path, manifest: Manifest) -> list[str]:
    """Copy the job's directory for a build: without `.git`, without the manifest's secret
    env files (read by the platform, never copied into an artifact), and without symlinks that
    lead out of the job's directory (checked on the copy, which is what the job gets: a link
    that stays inside the repository but leaves the job's directory would point elsewhere
    from the artifact). Returns a warning per link left out."""
    secret_files = [
        f for f in (manifest.secret_build_env_file, manifest.secret_runtime_env_file) if f
    ]
    excluded = {(source / path).resolve() for path in secret_files}

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {n for n in names if n == ".git" or (Path(directory) / n).resolve() in excluded}

    shutil.copytree(source, dest, symlinks=True, ignore=ignore)
    return drop_escaping_symlinks(dest)


def drop_escaping_symlinks(root: Path) -> list[str]:
    """Remove the links below `root` whose target, with every link followed, is outside it (or
    a loop); checked after all links exist, so that chains resolve as the kernel would."""
    warnings: list[str] = []
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            if path.is_symlink() and not is_inside(root, path):
                link = os.readlink(path)
                path.unlink()
                shown = path.relative_to(root).as_posix()
                warnings.append(
                    f"left out symlink {shown!r} -> {link!r}: it leads out of the job's directory"
                )
    return warnings


def read_secret_env_file(job_dir: Path, relative: str, field_name: str) -> dict[str, str] | None:
    """The values of a secret env file, or None if the commit does not hold it (in Racetrack
    it stays on the user's machine). BuildFailed names the field if it cannot be read."""
    if not os.path.lexists(job_dir / relative):
        return None
    return read_env_file(job_dir, relative, field_name)


def find_manifest(root: Path, job: str) -> Path:
    """The root `job.yaml` if it names `job`, else the single `job.yaml` below the root that
    names it (after `extends`), else the root `job.yaml` (whose name is then refused)."""
    top = root / MANIFEST_NAME
    if top.is_file() and _manifest_name(root, top) == job:
        return top
    candidates = sorted(p for p in root.rglob(MANIFEST_NAME) if p.is_file() and is_inside(root, p))
    matching = [p for p in candidates if p != top and _manifest_name(root, p) == job]
    if len(matching) == 1:
        return matching[0]
    if len(matching) > 1:
        listed = ", ".join(_shown(root, p) for p in matching)
        raise ManifestError([f"several {MANIFEST_NAME} files name the job {job!r}: {listed}"])
    if top.is_file():
        return top
    found = ", ".join(_shown(root, p) for p in candidates) or "none"
    raise ManifestError([f"no {MANIFEST_NAME} with name {job!r} in this commit (found: {found})"])


def _job_dir(root: Path, path: Path, manifest: Manifest) -> tuple[Path, list[str]]:
    """The job's directory and what to say about it: `git.directory` (relative to the
    repository's root) when this commit has it; when it has not, the manifest's own directory
    (Racetrack's samples name their place in Racetrack's repository, `sample/<x>`, which a job
    pushed on its own, or a monorepo of jobs at its root, does not have). A `git.directory`
    that leads out of the repository, or names something that is not a directory, is refused."""
    if manifest.git is None or manifest.git.directory in (".", ""):
        return path.parent, []
    directory = manifest.git.directory
    job_dir = root / directory
    if not is_inside(root, job_dir):
        raise ManifestError([f"git.directory: {directory!r} leads out of the repository"])
    if job_dir.is_dir():
        return job_dir, []
    if os.path.lexists(job_dir):
        raise ManifestError([f"git.directory: {directory!r} is not a directory in this commit"])
    fallback = path.parent.relative_to(root).as_posix()
    return path.parent, [
        f"git.directory {directory!r} is not in this commit: the job is the directory of its"
        f" {MANIFEST_NAME} ({fallback + '/' if fallback != '.' else 'the repository root'})"
    ]


def load_job_source(root: Path, job: str) -> JobSource:
    """Find, read, merge (`extends`) and validate the job's manifest in a checkout, and read
    the secret env files it names if the commit holds them. ManifestError for the manifest,
    BuildFailed for a secret env file that cannot be read."""
    path = find_manifest(root, job)
    manifest, warnings = parse_manifest_with_warnings(_read_data(root, path), expected_name=job)
    job_dir, placement = _job_dir(root, path, manifest)
    secret_build_env = secret_runtime_env = None
    if manifest.secret_build_env_file:
        secret_build_env = read_secret_env_file(
            job_dir, manifest.secret_build_env_file, "secret_build_env_file"
        )
    if manifest.secret_runtime_env_file:
        secret_runtime_env = read_secret_env_file(
            job_dir, manifest.secret_runtime_env_file, "secret_runtime_env_file"
        )
    return JobSource(
        manifest=manifest,
        job_dir=job_dir,
        manifest_path=path,
        warnings=tuple(f"{_shown(root, path)}: {warning}" for warning in [*warnings, *placement]),
        secret_build_env=secret_build_env,
        secret_runtime_env=secret_runtime_env,
    )
