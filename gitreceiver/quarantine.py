"""Receiving a pack without touching the repository until it is whole.

Like git's own quarantine: the pack is received into `objects/incoming-*/`, an object store of
its own that sees the repository's objects as alternates (a thin pack's bases resolve), and is
moved into `objects/pack/` only once it is complete and verified. A push that is too large, a
malformed pack, or a client that disconnects half-way leaves the repository exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dulwich.object_store import DiskObjectStore
from dulwich.repo import Repo

INCOMING_PREFIX = "incoming-"


@contextlib.contextmanager
def quarantine(repo: Repo) -> Iterator[DiskObjectStore]:
    objects = Path(repo.object_store.path)  # type: ignore[attr-defined]
    incoming = Path(tempfile.mkdtemp(prefix=INCOMING_PREFIX, dir=objects))
    try:
        (incoming / "pack").mkdir()
        (incoming / "info").mkdir()
        yield DiskObjectStore(str(incoming), alternates=[str(objects)])
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def admit(store: DiskObjectStore, repo: Repo) -> None:
    """Move the received packs into the repository: each pack before its index, so that a
    reader never finds an index without its pack. A pack with no objects in it is dropped."""
    source = Path(store.pack_dir)
    target = Path(repo.object_store.path) / "pack"  # type: ignore[attr-defined]
    for pack in sorted(source.glob("pack-*.pack")):
        if _object_count(pack) == 0:
            continue
        os.replace(pack, target / pack.name)
        for extra in sorted(source.glob(pack.stem + ".*")):
            if extra.suffix != ".idx":
                os.replace(extra, target / extra.name)
        index = pack.with_suffix(".idx")
        if index.exists():
            os.replace(index, target / index.name)


def _object_count(pack: Path) -> int:
    with pack.open("rb") as file:
        header = file.read(12)  # "PACK", version, object count (big-endian)
    return int.from_bytes(header[8:12], "big")


def remove_stale(objects: Path) -> list[Path]:
    """Quarantines left by a platform that died mid-push."""
    stale = [p for p in objects.glob(INCOMING_PREFIX + "*") if p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale
