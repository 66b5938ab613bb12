"""What a buildpack receives and what it hands back."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from buildpacks.manifest import Manifest

Progress = Callable[[str], None]


class BuildFailed(Exception):
    """The build could not produce an artifact; the message says why in one line."""


@dataclass(frozen=True)
class BuildRequest:
    job: str
    version: str
    release: int
    commit: str
    manifest: Manifest
    source_dir: Path  # the job's directory inside a checkout of `commit`
    progress: Progress


@dataclass(frozen=True)
class DirectoryArtifact:
    """An immutable directory that runs as a process (the local runtime's artifact).

    `command`, `cwd` and `env` values may contain `{artifact}`, the directory's path, so that the
    record stays valid if the data dir moves.
    """

    path: Path
    command: tuple[str, ...]
    cwd: str = "{artifact}"
    env: Mapping[str, str] = field(default_factory=dict)

    kind = "directory"

    def to_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "command": list(self.command),
            "cwd": self.cwd,
            "env": dict(self.env),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DirectoryArtifact:
        return cls(
            path=Path(record["path"]),
            command=tuple(record["command"]),
            cwd=record["cwd"],
            env=dict(record["env"]),
        )

    def expand(self, value: str) -> str:
        return value.replace("{artifact}", str(self.path))


class Buildpack(Protocol):
    jobtype: str

    def build_directory(self, request: BuildRequest) -> DirectoryArtifact:
        """Build an immutable directory artifact for the local runtime (blocking)."""
        ...


def run_logged(argv: Sequence[str], progress: Progress, *, what: str, **kwargs: Any) -> None:
    """Run a build step (never through a shell), streaming its output as progress lines."""
    with subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        **kwargs,
    ) as process:
        assert process.stdout is not None
        tail: list[str] = []
        for line in process.stdout:
            line = line.rstrip("\n")
            progress(f"  {line}")
            tail = [*tail[-4:], line]
        status = process.wait()
    if status != 0:
        last = next((line for line in reversed(tail) if line.strip()), "")
        raise BuildFailed(
            f"{what} failed with exit status {status}" + (f": {last}" if last else "")
        )
