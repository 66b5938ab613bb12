"""The machine's Go toolchain, its module settings, and the bound on a build's time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from buildpacks.build import BuildFailed

# where Go lives when it is not on PATH: the upstream tarball's place, and Debian's golang-go
GO_CANDIDATES = (Path("/usr/local/go/bin/go"), Path("/usr/lib/go/bin/go"))
# how a build reaches modules: the machine's Go settings, passed on to every build
MODULE_SETTINGS = ("GOPROXY", "GONOPROXY", "GOPRIVATE", "GOSUMDB", "GONOSUMDB", "GOINSECURE")
GO_ENV_TIMEOUT = 30.0
GO_BUILD_TIMEOUT = 15 * 60.0  # seconds a Go build (module downloads included) may take
NO_TOOLCHAIN = (
    "jobtype golang on the local runtime compiles with this machine's Go, and there is none"
    " (no go on PATH, /usr/local/go/bin/go or /usr/lib/go/bin/go): install Debian's golang-go"
    " with scripts/setup-go (as root), or serve with --runtime docker"
)


@dataclass(frozen=True)
class Toolchain:
    go: Path
    goroot: Path
    version: str
    settings: Mapping[str, str] = field(default_factory=dict)  # MODULE_SETTINGS and GOFLAGS


def find_go(
    search_path: str | None = None, candidates: tuple[Path, ...] = GO_CANDIDATES
) -> Path | None:
    """`go` on `search_path` ($PATH by default), else the first of `candidates` there is."""
    on_path = shutil.which("go", path=search_path)
    if on_path:
        return Path(on_path)
    return next((path for path in candidates if os.access(path, os.X_OK)), None)


def host_toolchain() -> Toolchain | None:
    """The machine's Go and how it is configured (`go env`), or None without one."""
    go = find_go()
    if go is None:
        return None
    names = ["GOROOT", "GOVERSION", "GOFLAGS", *MODULE_SETTINGS]
    try:
        done = subprocess.run(
            [str(go), "env", "-json", *names],
            capture_output=True,
            text=True,
            timeout=GO_ENV_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        values = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        values = None
    if not isinstance(values, dict):
        raise BuildFailed(f"{go} env does not answer: the machine's Go toolchain is broken")
    settings = {
        name: str(values[name])
        for name in ("GOFLAGS", *MODULE_SETTINGS)
        if isinstance(values.get(name), str) and values[name]
    }
    return Toolchain(
        go=go,
        goroot=Path(str(values.get("GOROOT") or go.resolve().parent.parent)),
        version=str(values.get("GOVERSION") or "go"),
        settings=settings,
    )


def module_settings() -> dict[str, str]:
    """How builds reach modules: what the machine's Go is configured with, or without a Go
    here, the platform's own environment (for image builds, which bring their own Go)."""
    try:
        toolchain = host_toolchain()
    except BuildFailed:
        toolchain = None
    if toolchain is not None:
        return dict(toolchain.settings)
    return {
        name: os.environ[name] for name in ("GOFLAGS", *MODULE_SETTINGS) if os.environ.get(name)
    }


@dataclass
class Deadline:
    """Set (`stop`) when the deploy is cancelled or the time is up; `expired` says which."""

    seconds: float
    stop: threading.Event = field(default_factory=threading.Event)
    expired: bool = False

    def failure(self, what: str) -> BuildFailed:
        minutes = self.seconds / 60
        return BuildFailed(
            f"{what} did not finish within {minutes:.0f} minutes (its output is in builds:log)"
        )


@contextmanager
def deadline(cancelled: threading.Event, seconds: float = GO_BUILD_TIMEOUT) -> Iterator[Deadline]:
    """A cancel event for build steps that also fires after `seconds`."""
    bound = Deadline(seconds)
    done = threading.Event()

    def watch() -> None:
        end = time.monotonic() + seconds
        while not done.is_set():
            remaining = end - time.monotonic()
            if remaining <= 0:
                bound.expired = True
                bound.stop.set()
                return
            if cancelled.wait(min(remaining, 0.5)):
                bound.stop.set()
                return

    watcher = threading.Thread(target=watch, name="go-build-deadline", daemon=True)
    watcher.start()
    try:
        yield bound
    finally:
        done.set()
