"""Bare repositories, one per job, and exporting a commit's files for a build."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo

from gitreceiver.commands import JOB_NAME_RE
from gitreceiver.quarantine import remove_stale

DEFAULT_BRANCH = b"main"


class RepoStore:
    """`<root>/<job>.git`, created on the first push with HEAD pointing at main."""

    def __init__(self, root: Path, checkout_limits: CheckoutLimits | None = None) -> None:
        self.root = root
        self.checkout_limits = checkout_limits or CheckoutLimits()
        root.mkdir(parents=True, exist_ok=True)
        for repo in root.glob("*.git"):
            remove_stale(repo / "objects")

    def path(self, job: str) -> Path:
        if not JOB_NAME_RE.fullmatch(job):
            raise ValueError(f"{job!r} is not a job name")
        return self.root / f"{job}.git"

    def exists(self, job: str) -> bool:
        return (self.path(job) / "HEAD").is_file()

    def open(self, job: str) -> Repo:
        return Repo(str(self.path(job)))

    def ensure(self, job: str) -> Repo:
        """Open the job's repository, creating it first if needed. It is built in a temporary
        directory and renamed into place, so a crash never leaves a half-made repository."""
        path = self.path(job)
        if not self.exists(job):
            building = Path(tempfile.mkdtemp(prefix=f".{job}-", suffix=".git", dir=self.root))
            try:
                Repo.init_bare(str(building), default_branch=DEFAULT_BRANCH).close()
                building.rename(path)
            except OSError:
                shutil.rmtree(building, ignore_errors=True)
                if not self.exists(job):  # not merely a concurrent first push winning the race
                    raise
        return self.open(job)

    def remove_if_empty(self, job: str) -> bool:
        """Remove the job's repository if no ref points anywhere in it (a first push that
        stored nothing, e.g. refused or failed); True if it was removed."""
        path = self.path(job)
        if not self.exists(job):
            return False
        with self.open(job) as repo:
            if any(ref.startswith(b"refs/") for ref in repo.refs.allkeys()):  # HEAD aside
                return False
        shutil.rmtree(path, ignore_errors=True)
        return True

    def export(self, job: str, commit: str, dest: Path) -> list[str]:
        """Write the files of `commit` into `dest`; return warnings about what was skipped.

        Symlinks are kept only when they stay inside the tree: a link to `/etc/passwd` must not
        pull a host file into a build. Submodules (gitlinks) are not fetched.
        """
        with self.open(job) as repo:
            obj = repo[commit.encode()]
            if not isinstance(obj, Commit):
                raise ValueError(f"{commit} is not a commit")
            warnings: list[str] = []
            _export_tree(repo, obj.tree, dest, warnings, self.checkout_limits)
        _drop_escaping_symlinks(dest, warnings)
        return warnings


class CheckoutTooLarge(ValueError):
    """A commit whose files are more than a checkout may hold; the message names the limit."""


@dataclass(frozen=True)
class CheckoutLimits:
    """What one commit's checkout may come to: a commit can reference what many pushes
    brought, each within the push limits, so the checkout is bounded again."""

    max_bytes: int = 1000 * 1024 * 1024
    max_files: int = 100_000
    max_depth: int = 100


@dataclass
class _Budget:
    limits: CheckoutLimits
    bytes: int = 0
    files: int = 0

    def take(self, size: int) -> None:
        self.bytes += size
        self.files += 1
        if self.bytes > self.limits.max_bytes:
            raise CheckoutTooLarge(
                f"the commit's files come to more than {self.limits.max_bytes} bytes,"
                " the limit of a checkout (--max-push-inflated)"
            )
        if self.files > self.limits.max_files:
            raise CheckoutTooLarge(
                f"the commit holds more than {self.limits.max_files} files, the limit of a checkout"
            )


def _export_tree(
    repo: Repo, root: bytes, dest: Path, warnings: list[str], limits: CheckoutLimits
) -> None:
    """Every file of the tree `root` into `dest`, directory by directory (a loop, not
    recursion: the commit decides how deep it goes), within `limits`."""
    budget = _Budget(limits)
    pending: list[tuple[bytes, Path, str]] = [(root, dest, "")]
    while pending:
        tree_id, directory, prefix = pending.pop()
        if prefix.count("/") >= limits.max_depth:
            raise CheckoutTooLarge(
                f"{prefix.rstrip('/')!r} nests deeper than {limits.max_depth} directories"
            )
        tree = repo[tree_id]
        assert isinstance(tree, Tree)
        directory.mkdir(parents=True, exist_ok=True)
        for entry in tree.iteritems():
            name = entry.path.decode("utf-8", "surrogateescape")
            if name in ("", ".", "..", ".git") or "/" in name or "\0" in name:
                warnings.append(f"skipped {prefix}{name!r}: not a safe file name")
                continue
            relative = prefix + name
            target = directory / name
            mode = entry.mode
            if stat.S_ISDIR(mode):
                budget.take(0)
                pending.append((entry.sha, target, relative + "/"))
            elif mode == 0o160000:
                warnings.append(f"skipped submodule {relative}: submodules are not fetched")
            else:
                blob = repo[entry.sha]
                assert isinstance(blob, Blob)
                budget.take(blob.raw_length())
                if stat.S_ISLNK(mode):
                    os.symlink(blob.data.decode("utf-8", "surrogateescape"), target)
                else:
                    target.write_bytes(blob.data)
                    target.chmod(0o755 if mode & 0o111 else 0o644)


def _drop_escaping_symlinks(root: Path, warnings: list[str]) -> None:
    """Remove links whose real target is outside `root` (checked after all links exist, so
    that chains such as `d -> .` and `x -> d/..` are resolved as the kernel would)."""
    real_root = root.resolve()
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            if not path.is_symlink():
                continue
            try:
                inside = path.resolve().is_relative_to(real_root)
                why = "it points outside the repo"
            except (RuntimeError, OSError):  # a loop: a -> b -> a
                inside, why = False, "it is a symlink loop"
            if not inside:
                link = os.readlink(path)
                path.unlink()
                warnings.append(f"skipped symlink {path.relative_to(root)} -> {link}: {why}")
