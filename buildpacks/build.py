"""What a buildpack receives and what it hands back."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from buildpacks.failures import Cause, plain, shorten
from buildpacks.manifest import Manifest

if TYPE_CHECKING:
    from buildpacks.docker_build import ImageBuilder

Progress = Callable[[str], None]
SECRET_MASK = "********"
NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device", as tools print it


class BuildFailed(Exception):
    """The build could not produce an artifact; the message says why in one line."""


@dataclass(frozen=True)
class IsolatedStep:
    """A build step's argv wrapped in the platform's sandbox, and the descriptors it needs."""

    argv: tuple[str, ...]
    pass_fds: tuple[int, ...] = ()
    close: Callable[[], None] = lambda: None


class BuildIsolation(Protocol):
    """Runs the build steps that execute the job's own code (`pip install` runs a package's
    setup.py) out of the platform's reach: the step sees the system, the given directories and
    nothing else of the machine, as the job family's user."""

    @property
    def owner(self) -> tuple[int, int]:
        """The uid and gid that must own the step's writable directories."""
        ...

    def wrap(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        read_only: Sequence[Path] = (),
        writable: Sequence[Path] = (),
    ) -> IsolatedStep: ...


@dataclass(frozen=True)
class BuildRequest:
    job: str
    version: str
    release: int
    commit: str
    manifest: Manifest
    source_dir: Path  # the job's directory inside a checkout of `commit`
    progress: Progress
    # set when the deploy is cancelled: build steps stop their processes and fail
    cancelled: threading.Event = field(default_factory=threading.Event)
    # the build's secret environment: `secret_build_env_file` values overridden by the job's
    # build config (`config:set --build`); given to the dependency install step only, never
    # written into an artifact, never shown (build output is masked)
    build_secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    # the sandbox for steps that run the job's code; None: they run as the platform's user
    # (docker builds run them in build containers instead)
    isolation: BuildIsolation | None = None


class SecretMask:
    """Replaces secret values in build output before anyone sees it."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        values = sorted({v for v in secrets.values() if len(v) >= 3}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, line: str) -> str:
        return self._pattern.sub(SECRET_MASK, line) if self._pattern else line


@dataclass(frozen=True)
class Probe:
    """How a runtime knows an instance is ready.

    `wrapper`: Racetrack's wrapper contract (`/live` reports a failed start, `/ready` turns 200);
    `http`: GET `path` answers 2xx; `tcp`: the port accepts connections.
    """

    kind: str = "wrapper"
    path: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Probe:
        return cls(kind=record["kind"], path=record.get("path"))


@dataclass(frozen=True)
class Routing:
    """What the router does for this artifact beyond passing paths through.

    docker-proxy jobs: a call to `/api/v1/<path>` reaches the server as `/<path>`, and the
    platform answers `/live`, `/ready` and `/health` itself.
    """

    strip_prefix: str | None = None
    platform_probes: bool = False

    def to_record(self) -> dict[str, Any]:
        return {"strip_prefix": self.strip_prefix, "platform_probes": self.platform_probes}

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Routing:
        record = record or {}
        return cls(record.get("strip_prefix"), bool(record.get("platform_probes")))


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
    probe: Probe = Probe()
    routing: Routing = Routing()

    kind = "directory"

    @property
    def fixed_port(self) -> int | None:
        return None  # a process listens on the $PORT it is given

    @property
    def where(self) -> str:
        return str(self.path)

    def to_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "command": list(self.command),
            "cwd": self.cwd,
            "env": dict(self.env),
            "probe": self.probe.to_record(),
            "routing": self.routing.to_record(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DirectoryArtifact:
        return cls(
            path=Path(record["path"]),
            command=tuple(record["command"]),
            cwd=record["cwd"],
            env=dict(record["env"]),
            probe=Probe.from_record(record.get("probe") or {"kind": "wrapper"}),
            routing=Routing.from_record(record.get("routing")),
        )

    def expand(self, value: str) -> str:
        return value.replace("{artifact}", str(self.path))


@dataclass(frozen=True)
class ImageArtifact:
    """A Docker image under a tag that is never reused (the docker runtime's artifact).

    `port` is the port the server listens on inside the container; None means it listens on
    `$PORT`, which the runtime chooses.
    """

    image: str
    image_id: str
    env: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    probe: Probe = Probe()
    routing: Routing = Routing()

    kind = "image"

    @property
    def fixed_port(self) -> int | None:
        """The port the server must listen on, when its image fixes one."""
        return self.port

    @property
    def where(self) -> str:
        return self.image

    def to_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "image": self.image,
            "image_id": self.image_id,
            "env": dict(self.env),
            "port": self.port,
            "probe": self.probe.to_record(),
            "routing": self.routing.to_record(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ImageArtifact:
        return cls(
            image=record["image"],
            image_id=record["image_id"],
            env=dict(record["env"]),
            port=record.get("port"),
            probe=Probe.from_record(record["probe"]),
            routing=Routing.from_record(record.get("routing")),
        )


Artifact = DirectoryArtifact | ImageArtifact


def artifact_from_record(record: Mapping[str, Any]) -> Artifact:
    if record["kind"] == ImageArtifact.kind:
        return ImageArtifact.from_record(record)
    return DirectoryArtifact.from_record(record)


class Buildpack(Protocol):
    jobtype: str

    def build_directory(self, request: BuildRequest) -> DirectoryArtifact:
        """An immutable directory for the local runtime (blocking); BuildFailed if impossible."""
        ...

    def build_image(self, request: BuildRequest, builder: ImageBuilder) -> ImageArtifact:
        """An image under a new tag for the docker runtime (blocking)."""
        ...


@contextmanager
def no_space_means(what: str) -> Iterator[None]:
    """A full disk while `what` fails the build saying so, not as an internal error."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) or _copy_ran_out_of_space(exc):
            raise BuildFailed(f"no space left on device while {what}") from None
        raise


def _copy_ran_out_of_space(exc: OSError) -> bool:
    """shutil.copytree gathers its failures into one shutil.Error, errno unset."""
    failures = exc.args[0] if isinstance(exc, shutil.Error) and exc.args else []
    return isinstance(failures, list) and any(NO_SPACE in str(failure) for failure in failures)


def run_logged(
    argv: Sequence[str],
    progress: Progress,
    *,
    what: str,
    cancelled: threading.Event | None = None,
    **kwargs: Any,
) -> None:
    """Run a build step (never through a shell), streaming its output as progress lines;
    killed, and failing, when `cancelled` is set."""
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
        if cancelled is not None:
            threading.Thread(target=_kill_when, args=(cancelled, process), daemon=True).start()
        tail: list[str] = []
        found = Cause()
        for line in process.stdout:
            line = plain(line.rstrip("\n"))
            progress(f"  {line}")
            tail = [*tail[-4:], line]
            found.feed(line)
        status = process.wait()
    if cancelled is not None and cancelled.is_set():
        raise BuildFailed(f"{what} was cancelled")
    if status != 0:
        if any(NO_SPACE in line for line in tail):
            raise BuildFailed(f"no space left on device while running {what}")
        why = found.reason() or next((line for line in reversed(tail) if line.strip()), "")
        raise BuildFailed(
            shorten(f"{what} failed with exit status {status}" + (f": {why}" if why else ""))
        )


def _kill_when(cancelled: threading.Event, process: subprocess.Popen[str]) -> None:
    while process.poll() is None:
        if cancelled.wait(0.2):
            process.kill()
            return
