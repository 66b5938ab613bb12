"""Job isolation on the local runtime: every process that runs a job's code (the job itself, and
the build steps that execute it, such as `pip install` running a package's setup.py) starts in a
bubblewrap sandbox.

What a sandboxed process sees:
- a filesystem built from nothing: the system's /usr (with the /bin, /lib… links), /etc
  read-only with a passwd and group that name only root, nobody and the job's user, a private
  /proc, a minimal /dev, and exactly the directories it is given, at their real paths: read-only
  (its release, its dependencies, the Python it runs on) or writable (its scratch space). The
  data dir, other jobs' releases, the engine socket and the platform's keys are simply absent;
- its own pid, IPC, UTS and cgroup namespaces: no other process of the machine is visible, so
  no other job's `/proc/<pid>/environ` either;
- the host's network (it listens on loopback for the router and calls it back);
- no capabilities, and no_new_privs (a setuid binary gains nothing).

As root, the platform gives each job family a uid of its own (`--job-user-base` plus the
family's number, never reused): bwrap, as root, sets up the namespaces and mounts, and `setpriv`
drops to that uid with every capability gone, so that the kernel keeps families apart even
beyond what the namespaces hide. As another user, bwrap makes an unprivileged user namespace
instead (with further user namespaces disabled inside) and the job runs as the platform's uid,
seeing only its own files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from buildpacks.build import IsolatedStep

DEFAULT_JOB_USER_BASE = 2_000_000
MAX_UID = 2**31 - 2
# Linked or bound from the host when present (merged-/usr systems have links here).
SYSTEM_TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# What setpriv keeps from root for the moment it needs to drop to the job's uid.
SETPRIV_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")
PROBE_TIMEOUT = 30.0
TMP_BYTES = 256 * 1024 * 1024  # the private /tmp, in memory; $HOME is on disk


class SandboxUnavailable(Exception):
    """This machine cannot isolate jobs; the message says why and what would fix it."""


@dataclass(frozen=True)
class SandboxedCommand:
    """An argv to run, the descriptors it must inherit, and the ones to close once it runs."""

    argv: tuple[str, ...]
    pass_fds: tuple[int, ...] = ()
    _owned_fds: tuple[int, ...] = field(default=(), repr=False)

    def close(self) -> None:
        """Close the descriptors made for the command (call once it has been spawned)."""
        for fd in self._owned_fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _real(path: Path | str) -> str:
    return os.path.realpath(path)


def python_roots() -> tuple[str, ...]:
    """Where the interpreter that runs jobs lives (a venv's python links there)."""
    roots = {_real(sys.base_prefix), _real(sys.base_exec_prefix)}
    return tuple(sorted(r for r in roots if not _is_below(r, "/usr")))


def _is_below(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _passwd(uid: int, home: str) -> bytes:
    lines = ["root:x:0:0:root:/root:/usr/sbin/nologin", "nobody:x:65534:65534::/:/usr/sbin/nologin"]
    if uid not in (0, 65534):
        lines.append(f"job:x:{uid}:{uid}:Racetrack job:{home}:/usr/sbin/nologin")
    return ("\n".join(lines) + "\n").encode()


def _group(gid: int) -> bytes:
    lines = ["root:x:0:", "nogroup:x:65534:"]
    if gid not in (0, 65534):
        lines.append(f"job:x:{gid}:")
    return ("\n".join(lines) + "\n").encode()


def _data_fd(name: str, data: bytes) -> int:
    """An anonymous file holding `data`, for bwrap's --ro-bind-data."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@dataclass(frozen=True)
class Sandbox:
    """Wraps commands in bubblewrap. `as_root`: the platform runs as root and gives each job
    family its own uid; otherwise jobs run as the platform's uid in a user namespace."""

    bwrap: str
    setpriv: str | None
    as_root: bool
    job_user_base: int = DEFAULT_JOB_USER_BASE

    @classmethod
    def detect(cls, job_user_base: int = DEFAULT_JOB_USER_BASE) -> Sandbox:
        """The sandbox this machine offers, checked by running one; SandboxUnavailable says
        why not."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed; scripts/setup-sandbox installs it"
            )
        as_root = os.geteuid() == 0
        setpriv = shutil.which("setpriv") if as_root else None
        if as_root and setpriv is None:
            raise SandboxUnavailable("setpriv (util-linux) is not installed")
        sandbox = cls(bwrap, setpriv, as_root, job_user_base)
        sandbox._probe()
        return sandbox

    def _probe(self) -> None:
        command = self.command(
            ["/bin/true"], uid=self.uid_for(0), cwd=Path("/"), hostname="racetrack-probe"
        )
        try:
            result = subprocess.run(
                command.argv,
                pass_fds=command.pass_fds,
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(f"bubblewrap does not run: {exc}") from None
        finally:
            command.close()
        if result.returncode != 0:
            reason = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
            hint = "" if self.as_root else " (unprivileged user namespaces may be disabled)"
            raise SandboxUnavailable(f"bubblewrap fails here: {reason}{hint}")

    # identities

    def uid_for(self, slot: int) -> int | None:
        """The uid of job family number `slot` (None: jobs run as the platform's uid)."""
        if not self.as_root:
            return None
        uid = self.job_user_base + slot
        if not 0 < uid <= MAX_UID:
            raise ValueError(f"--job-user-base {self.job_user_base} + {slot} is not a valid uid")
        return uid

    def owner(self, uid: int | None) -> tuple[int, int]:
        """Who must own the writable directories of a process running as `uid`."""
        if uid is None:
            return os.geteuid(), os.getegid()
        return uid, uid

    def describe(self, uid: int | None) -> str:
        if uid is None:
            return (
                "isolated by bubblewrap (own filesystem view, process and user namespaces;"
                " the platform is not root, so jobs share its uid)"
            )
        return f"isolated by bubblewrap as uid {uid} (own filesystem view and process namespace)"

    # commands

    def command(
        self,
        argv: Sequence[str],
        *,
        uid: int | None,
        cwd: Path,
        read_only: Sequence[Path] = (),
        writable: Sequence[Path] = (),
        hostname: str = "job",
        home: Path | None = None,
        info_fd: int | None = None,
    ) -> SandboxedCommand:
        """`argv` run in a fresh sandbox that sees the system, the Python runtime, and exactly
        `read_only` and `writable` (at their real paths). bwrap's own init is pid 1 of the new
        pid namespace and dies with its parent (the platform's child); when it dies the kernel
        kills everything in the namespace, whatever uid it runs as. The command runs in a
        session of its own, shared with that init: signal the group of the pid bwrap reports on
        `info_fd` (as {"child-pid": ...}) to stop it gracefully."""
        gid = uid
        passwd = _data_fd("passwd", _passwd(uid if uid is not None else os.geteuid(), str(home)))
        group = _data_fd("group", _group(gid if gid is not None else os.getegid()))
        owned = (passwd, group)
        args: list[str] = [self.bwrap]
        if self.as_root:
            args += ["--cap-drop", "ALL"]
            for cap in SETPRIV_CAPS:
                args += ["--cap-add", cap]
        else:
            args += ["--unshare-user", "--disable-userns"]
        args += [
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            hostname,
            "--die-with-parent",
            "--new-session",
        ]
        args += _system_mounts()
        args += ["--perms", "0644", "--ro-bind-data", str(passwd), "/etc/passwd"]
        args += ["--perms", "0644", "--ro-bind-data", str(group), "/etc/group"]
        binds = [(root, "--ro-bind") for root in python_roots()]
        binds += [(_real(p), "--ro-bind") for p in read_only]
        binds += [(_real(p), "--bind") for p in writable]
        args += _bind_args(binds)
        args += ["--chdir", _real(cwd)]
        if info_fd is not None:
            args += ["--info-fd", str(info_fd)]
        args.append("--")
        if self.as_root:
            assert self.setpriv is not None and uid is not None
            args += [
                self.setpriv,
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        args += list(argv)
        fds = (*owned, *((info_fd,) if info_fd is not None else ()))
        return SandboxedCommand(tuple(args), fds, owned)


def _system_mounts() -> list[str]:
    """The system, read-only: /usr, the top-level links or directories beside it, /etc; a new
    /proc and /dev; a private /tmp in memory (counted against the instance's memory) and
    /var/tmp leading to it."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in SYSTEM_TOP_LEVEL:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    args += ["--ro-bind", "/etc", "/etc"]
    resolv = Path("/etc/resolv.conf")
    if resolv.is_symlink() and resolv.exists():  # e.g. into /run, which is not there
        args += ["--ro-bind", _real(resolv), _real(resolv)]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "0755", "--dir", "/var"]
    args += ["--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    args += ["--symlink", "/tmp", "/var/tmp"]
    return args


def _bind_args(binds: list[tuple[str, str]]) -> list[str]:
    """Bind mounts at their own paths, parents first, with the missing parent directories made
    traversable (bwrap would make them 0700, which the job's uid could not pass)."""
    args: list[str] = []
    made: set[str] = {"/", "/usr", "/etc", "/proc", "/dev", "/var", "/tmp"}
    bound: list[str] = ["/usr", "/etc"]
    for path, flag in sorted(binds, key=lambda item: (item[0].count("/"), item[0])):
        parents = []
        parent = os.path.dirname(path)
        while parent not in made and not any(_is_below(parent, b) for b in bound):
            parents.append(parent)
            parent = os.path.dirname(parent)
        for directory in reversed(parents):
            args += ["--perms", "0755", "--dir", directory]
            made.add(directory)
        args += [flag, path, path]
        made.add(path)
        bound.append(path)
    return args


@dataclass(frozen=True)
class BuildSandbox:
    """`buildpacks.build.BuildIsolation` for one job family's build steps: the sandbox above,
    with the platform's own Python environment visible read-only (pip runs from it) and the
    local package directories pip is told to look in."""

    sandbox: Sandbox
    uid: int | None

    @property
    def owner(self) -> tuple[int, int]:
        return self.sandbox.owner(self.uid)

    def wrap(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        read_only: Sequence[Path] = (),
        writable: Sequence[Path] = (),
    ) -> IsolatedStep:
        visible = [Path(sys.prefix), *_pip_find_links(), *read_only]
        command = self.sandbox.command(
            argv, uid=self.uid, cwd=cwd, read_only=visible, writable=writable, hostname="build"
        )
        return IsolatedStep(command.argv, command.pass_fds, command.close)


def _pip_find_links() -> list[Path]:
    """Local directories in PIP_FIND_LINKS (a machine's wheelhouse), which pip must still see."""
    found = []
    for entry in os.environ.get("PIP_FIND_LINKS", "").split():
        path = Path(entry)
        if path.is_absolute() and path.is_dir():
            found.append(path)
    return found
