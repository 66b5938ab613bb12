"""`resources` for local instances, for real.

Where the machine allows it (root, and the controllers mounted), every instance gets a cgroup of
its own: on cgroup v2 one directory with memory.max, cpu.max and pids.max; on cgroup v1 one
directory in each of the memory, cpu and pids hierarchies. The instance's first process joins it
before it runs anything, so nothing it starts escapes. A cgroup also counts its processes, which
bounds a fork bomb. Elsewhere memory_max becomes an address-space limit (setrlimit), which counts
reserved as well as used memory, and cpu_max cannot be applied; the push says which applies.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from buildpacks.manifest import Resources
from controller.runtimes.resources import cpu_cores, memory_bytes

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
# processes and threads one instance may hold (a threaded server answering 500 calls at once
# needs 500); a fork bomb stops here
MAX_TASKS = 1024
GROUP_DIR = "racetrack"


@dataclass(frozen=True)
class Limits:
    memory_max: int | None = None  # bytes
    cpu_max: float | None = None  # cores
    tasks_max: int = MAX_TASKS

    @classmethod
    def of(cls, resources: Resources | None) -> Limits:
        if resources is None:
            return cls()
        return cls(
            memory_max=memory_bytes(resources.memory_max) if resources.memory_max else None,
            cpu_max=cpu_cores(resources.cpu_max) if resources.cpu_max else None,
        )

    def describe(self) -> str:
        parts = []
        if self.memory_max is not None:
            parts.append(f"memory_max {self.memory_max} bytes")
        if self.cpu_max is not None:
            parts.append(f"cpu_max {self.cpu_max:g} cores")
        parts.append(f"at most {self.tasks_max} processes and threads")
        return ", ".join(parts)


@dataclass
class AppliedLimits:
    """What one instance runs under: the cgroup.procs files its first process joins and the
    rlimits it sets (both in the child, before exec), and how to tell an OOM kill."""

    description: str
    procs_files: tuple[str, ...] = ()
    rlimits: tuple[tuple[int, int], ...] = ()
    directories: tuple[Path, ...] = ()
    _oom_counter: Callable[[], int] | None = field(default=None, repr=False)
    _oom_before: int = 0

    def join(self) -> None:
        """In the child between fork and exec: as little as possible, no allocation-heavy work."""
        pid = str(os.getpid()).encode()
        for procs in self.procs_files:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        for limit, value in self.rlimits:
            resource.setrlimit(limit, (value, value))

    def out_of_memory(self) -> bool:
        """Whether the kernel killed a process of the instance for exceeding memory_max."""
        if self._oom_counter is None:
            return False
        try:
            return self._oom_counter() > self._oom_before
        except OSError:
            return False

    def try_remove(self) -> bool:
        """Remove the instance's cgroups; False while the kernel still frees their last tasks
        (which it does asynchronously after they die): try again shortly."""
        gone = True
        for directory in self.directories:
            gone = _try_rmdir(directory) and gone
        return gone


def _try_rmdir(directory: Path) -> bool:
    try:
        directory.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        _kill_members(directory)
        return False
    return True


def _kill_members(directory: Path) -> None:
    with contextlib.suppress(OSError):
        for line in (directory / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(line), signal.SIGKILL)


class Limiter(Protocol):
    kind: str

    def apply(self, name: str, limits: Limits) -> AppliedLimits: ...

    def remove_strays(self, keep: set[str]) -> list[str]:
        """Remove cgroups of this platform's instances whose names are not in `keep`."""
        ...


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _oom_kills(events: Path, key: str) -> Callable[[], int]:
    def count() -> int:
        for line in events.read_text().splitlines():
            name, _, number = line.partition(" ")
            if name == key:
                return int(number)
        return 0

    return count


class CgroupV2:
    kind = "cgroup v2"

    def __init__(self, base: Path) -> None:
        self._base = base

    @classmethod
    def detect(cls, scope: str) -> CgroupV2 | None:
        controllers = CGROUP_ROOT / "cgroup.controllers"
        if os.geteuid() != 0 or not controllers.exists():
            return None
        if not {"memory", "cpu", "pids"} <= set(controllers.read_text().split()):
            return None
        try:
            _enable(CGROUP_ROOT)
            top = CGROUP_ROOT / GROUP_DIR
            top.mkdir(exist_ok=True)
            _enable(top)
            base = top / scope
            base.mkdir(exist_ok=True)
            _enable(base)
        except OSError:
            return None
        return cls(base)

    def apply(self, name: str, limits: Limits) -> AppliedLimits:
        group = self._base / name
        _reuse(group)
        if limits.memory_max is not None:
            _write(group / "memory.max", str(limits.memory_max))
            with contextlib.suppress(OSError):  # no swap accounting: nothing to limit
                _write(group / "memory.swap.max", "0")
        if limits.cpu_max is not None:
            _write(group / "cpu.max", f"{int(limits.cpu_max * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        _write(group / "pids.max", str(limits.tasks_max))
        counter = _oom_kills(group / "memory.events", "oom_kill")
        return AppliedLimits(
            f"{limits.describe()} (cgroup v2)",
            procs_files=(str(group / "cgroup.procs"),),
            directories=(group,),
            _oom_counter=counter,
            _oom_before=counter(),
        )

    def remove_strays(self, keep: set[str]) -> list[str]:
        return _remove_strays([self._base], keep)


def _enable(group: Path) -> None:
    _write(group / "cgroup.subtree_control", "+memory +cpu +pids")


class CgroupV1:
    kind = "cgroup v1"

    def __init__(self, bases: dict[str, Path]) -> None:
        self._bases = bases  # controller → this platform's directory in its hierarchy

    @classmethod
    def detect(cls, scope: str) -> CgroupV1 | None:
        if os.geteuid() != 0:
            return None
        own = _own_v1_groups()
        bases: dict[str, Path] = {}
        for controller in ("memory", "cpu", "pids"):
            mount = CGROUP_ROOT / controller
            if not (mount / "cgroup.procs").exists() or controller not in own:
                return None
            # below the platform's own group: jobs stay accounted where the platform is
            base = mount / own[controller].lstrip("/") / GROUP_DIR / scope
            try:
                base.mkdir(parents=True, exist_ok=True)
            except OSError:
                return None
            bases[controller] = base
        return cls(bases)

    def apply(self, name: str, limits: Limits) -> AppliedLimits:
        groups = {controller: base / name for controller, base in self._bases.items()}
        for group in groups.values():
            _reuse(group)
        memory, cpu, pids = groups["memory"], groups["cpu"], groups["pids"]
        if limits.memory_max is not None:
            _write(memory / "memory.limit_in_bytes", str(limits.memory_max))
            with contextlib.suppress(OSError):  # without swap accounting there is no memsw
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_max))
        if limits.cpu_max is not None:
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(int(limits.cpu_max * CPU_PERIOD_US)))
        _write(pids / "pids.max", str(limits.tasks_max))
        counter = _oom_kills(memory / "memory.oom_control", "oom_kill")
        return AppliedLimits(
            f"{limits.describe()} (cgroup v1)",
            procs_files=tuple(str(g / "cgroup.procs") for g in groups.values()),
            directories=tuple(groups.values()),
            _oom_counter=counter,
            _oom_before=counter(),
        )

    def remove_strays(self, keep: set[str]) -> list[str]:
        return _remove_strays(list(self._bases.values()), keep)


def _own_v1_groups() -> dict[str, str]:
    groups: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _number, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller:
                groups[controller] = path
    return groups


def _reuse(group: Path) -> None:
    """A group of this name left by an instance that died with the platform: its processes
    are killed and the group made anew (it is created empty)."""
    if group.exists() and not _try_rmdir(group):
        raise OSError(errno.EBUSY, f"{group} still holds processes of an earlier instance")
    group.mkdir()


def _remove_strays(bases: list[Path], keep: set[str]) -> list[str]:
    """Groups left by instances that died with the platform; a group still being emptied is
    left for the next start."""
    removed: set[str] = set()
    for base in bases:
        for group in base.iterdir() if base.is_dir() else ():
            if group.is_dir() and group.name not in keep and _try_rmdir(group):
                removed.add(group.name)
    return sorted(removed)


class RlimitOnly:
    kind = "setrlimit"

    def apply(self, name: str, limits: Limits) -> AppliedLimits:
        rlimits: list[tuple[int, int]] = []
        notes = []
        if limits.memory_max is not None:
            rlimits.append((resource.RLIMIT_AS, limits.memory_max))
            notes.append(
                f"memory_max {limits.memory_max} bytes as an address-space limit (setrlimit: no"
                " cgroup here, so reserved memory counts too)"
            )
        if limits.cpu_max is not None:
            notes.append("cpu_max not applied (it needs a cgroup, which is not available here)")
        return AppliedLimits("; ".join(notes) or "no limits", rlimits=tuple(rlimits))

    def remove_strays(self, keep: set[str]) -> list[str]:
        return []


def detect_limiter(scope: str) -> Limiter:
    """The best this machine offers; `scope` keeps several platforms' groups apart."""
    return CgroupV2.detect(scope) or CgroupV1.detect(scope) or RlimitOnly()
