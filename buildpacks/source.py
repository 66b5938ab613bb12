"""Finding and reading a job's manifest in a checked-out commit.

The manifest is the root `job.yaml`, or in a monorepo the one `job.yaml` whose `name` is the
job's; the directory holding it is the job's directory, which the build uses as its context.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildpacks.build import BuildFailed
from buildpacks.manifest import (
    ENV_NAME_RE,
    Manifest,
    ManifestError,
    decode_manifest,
    merge_manifests,
    parse_manifest,
)

MANIFEST_NAME = "job.yaml"
MAX_EXTENDS_DEPTH = 5


@dataclass(frozen=True)
class JobSource:
    """A job's manifest and the directory it describes, inside a checkout."""

    manifest: Manifest
    job_dir: Path
    manifest_path: Path


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
    return merge_manifests(base, data)


def _manifest_name(path: Path) -> str | None:
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
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def copy_job_source(source: Path, dest: Path, manifest: Manifest) -> None:
    """Copy the job's directory for a build: without `.git`, and without the manifest's secret
    env files, which are read by the platform and never copied into an artifact."""
    secret_files = [
        f for f in (manifest.secret_build_env_file, manifest.secret_runtime_env_file) if f
    ]
    excluded = {(source / path).resolve() for path in secret_files}

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {n for n in names if n == ".git" or (Path(directory) / n).resolve() in excluded}

    shutil.copytree(source, dest, symlinks=True, ignore=ignore)


def find_manifest(root: Path, job: str) -> Path:
    """The root `job.yaml`, else the single `job.yaml` below the root whose name is `job`."""
    top = root / MANIFEST_NAME
    if top.is_file():
        return top
    candidates = sorted(p for p in root.rglob(MANIFEST_NAME) if p.is_file() and is_inside(root, p))
    matching = [p for p in candidates if _manifest_name(p) == job]
    if len(matching) == 1:
        return matching[0]
    found = ", ".join(_shown(root, p) for p in candidates) or "none"
    if not matching:
        message = f"no {MANIFEST_NAME} with name {job!r} in this commit (found: {found})"
        raise ManifestError([message])
    raise ManifestError([f"several {MANIFEST_NAME} files name the job {job!r}: {found}"])


def load_job_source(root: Path, job: str) -> JobSource:
    """Find, read, merge (`extends`) and validate the job's manifest in a checkout."""
    path = find_manifest(root, job)
    manifest = parse_manifest(_read_data(root, path), expected_name=job)
    job_dir = path.parent
    if manifest.git is not None and manifest.git.directory not in (".", ""):
        job_dir = root / manifest.git.directory
        if not is_inside(root, job_dir) or not job_dir.is_dir():
            raise ManifestError(
                [f"git.directory: {manifest.git.directory!r} is not a directory in this commit"]
            )
    return JobSource(manifest=manifest, job_dir=job_dir, manifest_path=path)
