"""Bare repositories and exporting a commit for a build."""

import os
import subprocess

import pytest

from gitreceiver.repos import CheckoutLimits, CheckoutTooLarge, RepoStore
from tests.harness import JobRepo


def bare_copy(store: RepoStore, work: JobRepo) -> str:
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work.path), str(store.path(work.job))], check=True
    )
    return work.git("rev-parse", "HEAD").strip()


def test_first_ensure_creates_a_bare_repo_with_head_on_main(tmp_path):
    store = RepoStore(tmp_path / "repos")
    assert not store.exists("adder")
    store.ensure("adder").close()
    assert (store.path("adder") / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert sorted(p.name for p in store.root.iterdir()) == ["adder.git"]  # no leftovers


def test_export_keeps_files_modes_and_inner_links_and_drops_escaping_ones(tmp_path):
    work = JobRepo.create(
        tmp_path / "work", "adder", {"job.yaml": "name: adder\n", "lib/a.py": "A\n"}
    )
    (work.path / "run.sh").write_text("#!/bin/sh\n")
    (work.path / "run.sh").chmod(0o755)
    os.symlink("lib/a.py", work.path / "inner")
    os.symlink("/etc/passwd", work.path / "absolute")
    os.symlink("../../outside", work.path / "lib" / "up")
    os.symlink(".", work.path / "here")
    os.symlink("here/..", work.path / "sneaky")  # lexically inside, really the parent
    os.symlink("loop-b", work.path / "loop-a")
    os.symlink("loop-a", work.path / "loop-b")
    commit = work.commit({}, "links")
    store = RepoStore(tmp_path / "repos")
    assert bare_copy(store, work) == commit

    dest = tmp_path / "out"
    warnings = store.export("adder", commit, dest)

    assert (dest / "lib" / "a.py").read_text() == "A\n"
    assert os.access(dest / "run.sh", os.X_OK)
    assert os.readlink(dest / "inner") == "lib/a.py"
    assert os.readlink(dest / "here") == "."
    for dropped in ("absolute", "lib/up", "sneaky"):
        assert not os.path.lexists(dest / dropped), dropped
    # breaking the loop once is enough: what is left of it dangles inside the tree
    loop = [name for name in ("loop-a", "loop-b") if os.path.lexists(dest / name)]
    assert len(loop) == 1 and not (dest / loop[0]).exists()
    assert "skipped symlink absolute -> /etc/passwd: it points outside the repo" in warnings
    assert "skipped symlink sneaky -> here/..: it points outside the repo" in warnings
    assert any(w.endswith("it is a symlink loop") for w in warnings)


def test_a_checkout_is_bounded_in_bytes_files_and_depth(tmp_path):
    """A commit may reference what many pushes brought: its checkout is bounded again."""
    work = JobRepo.create(tmp_path / "work", "adder", {f"f{n}.txt": "x" * 1000 for n in range(20)})
    deep = "/".join(["d"] * 12)
    commit = work.commit({f"{deep}/leaf.txt": "deep\n"}, "deep")
    store = RepoStore(tmp_path / "repos", CheckoutLimits(max_bytes=50_000))
    assert bare_copy(store, work) == commit
    assert store.export("adder", commit, tmp_path / "fits") == []

    for limits, message in (
        (CheckoutLimits(max_bytes=10_000), "the commit's files come to more than 10000 bytes"),
        (CheckoutLimits(max_files=10), "the commit holds more than 10 files"),
        (CheckoutLimits(max_depth=5), "nests deeper than 5 directories"),
    ):
        store.checkout_limits = limits
        with pytest.raises(CheckoutTooLarge, match=message):
            store.export("adder", commit, tmp_path / f"over-{limits.max_depth}-{limits.max_files}")
