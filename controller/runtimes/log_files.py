"""Instance logs on disk: written by the platform from the instance's output pipe, rotated by
size, and read from the end.

A chatty job cannot fill the disk (`<name>.log` plus `keep - 1` rotated files, each at most
`max_bytes`), and reading its last lines never reads the whole file: `tail_lines` seeks back
from the end block by block, and is meant to run in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_KEEP = 3
BLOCK = 64 * 1024
FOLLOW_INTERVAL = 0.2


@dataclass(frozen=True)
class LogSettings:
    max_bytes: int = DEFAULT_MAX_BYTES
    keep: int = DEFAULT_KEEP  # files in all: the current one and keep - 1 rotated ones


def rotated(path: Path, number: int) -> Path:
    return path if number == 0 else path.with_name(f"{path.name}.{number}")


class RotatingLog:
    """Appends to `path`; once it would pass `max_bytes`, `path` becomes `path.1` (and so on,
    up to `keep` files) and a new `path` begins, at a line boundary where there is one."""

    def __init__(self, path: Path, settings: LogSettings | None = None) -> None:
        self.path = path
        self._settings = settings or LogSettings()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, data: bytes) -> None:
        limit = self._settings.max_bytes
        while data:
            room = limit - self._size
            if len(data) <= room:
                self._append(data)
                return
            if self._size > 0:
                # finish the current line in this file when it fits, then begin the next one
                cut = data.rfind(b"\n", 0, max(room, 0)) + 1
                if cut:
                    self._append(data[:cut])
                    data = data[cut:]
                self._rotate()
                continue
            self._append(data[:limit])  # one line longer than a whole file: split it
            data = data[limit:]

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        keep = max(self._settings.keep, 1)
        oldest = rotated(self.path, keep - 1)
        if keep == 1:
            oldest.unlink(missing_ok=True)
        for number in range(keep - 1, 0, -1):
            source = rotated(self.path, number - 1)
            if source.exists():
                os.replace(source, rotated(self.path, number))
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True)
class Position:
    """Where a reader of the current file stopped: its inode (a rotation changes it) and
    offset."""

    inode: int
    offset: int


def tail_lines(path: Path, count: int, keep: int = DEFAULT_KEEP) -> tuple[list[bytes], Position]:
    """The last `count` lines of the log (across its rotated files), and the position at the
    end of the current file. Reads backwards by blocks, only as far as needed. Blocking: run
    it in a thread."""
    blocks: list[bytes] = []  # newest first
    newlines = 0
    position = Position(0, 0)
    for number in range(max(keep, 1)):
        try:
            handle = rotated(path, number).open("rb")
        except FileNotFoundError:
            continue
        with handle:
            stat = os.fstat(handle.fileno())
            if number == 0:
                position = Position(stat.st_ino, stat.st_size)
            end = stat.st_size
            while end > 0 and newlines <= count:
                start = max(0, end - BLOCK)
                handle.seek(start)
                block = handle.read(end - start)
                blocks.append(block)
                newlines += block.count(b"\n")
                end = start
        if newlines > count:
            break
    lines = b"".join(reversed(blocks)).split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the log ends with a newline: there is no empty last line
    return (lines[-count:] if count > 0 else []), position


async def follow_lines(
    path: Path, position: Position, keep: int = DEFAULT_KEEP
) -> AsyncIterator[bytes]:
    """New lines of the log from `position` on, as they are written, across rotations (the
    rest of a file that was rotated away is read before its successor); runs until
    cancelled. Reads happen in a worker thread."""
    handle: BinaryIO | None = None
    pending = b""
    try:
        handle = await asyncio.to_thread(_open_at, path, position, keep)
        while True:
            if handle is None:
                await asyncio.sleep(FOLLOW_INTERVAL)  # no log yet
                handle = await asyncio.to_thread(_open_at, path, Position(0, 0), keep)
                continue
            chunk = await asyncio.to_thread(handle.read, BLOCK)
            if chunk:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line
                continue
            newer = await asyncio.to_thread(_successor, path, handle, keep)
            if newer is not None:
                handle.close()  # this file is complete: go on with the one written after it
                handle = newer
                continue
            # a file has no change notification to wait on: look again shortly
            await asyncio.sleep(FOLLOW_INTERVAL)
    finally:
        if handle is not None:
            handle.close()


def _index_of(path: Path, inode: int, keep: int) -> int | None:
    """Which of the log's files (0: the current one) has this inode now, if any."""
    for number in range(max(keep, 1)):
        try:
            if rotated(path, number).stat().st_ino == inode:
                return number
        except FileNotFoundError:
            continue
    return None


def _open_at(path: Path, position: Position, keep: int) -> BinaryIO | None:
    """The file a reader stopped in, at its offset (wherever rotation moved it); if it is
    gone, the oldest file there is, from its start."""
    number = _index_of(path, position.inode, keep) if position.inode else None
    if number is not None:
        handle = rotated(path, number).open("rb")
        handle.seek(position.offset)
        return handle
    for older in range(max(keep, 1) - 1, -1, -1):
        try:
            return rotated(path, older).open("rb")
        except FileNotFoundError:
            continue
    return None


def _successor(path: Path, handle: BinaryIO, keep: int) -> BinaryIO | None:
    """The file written after the one `handle` read to its end, if there is one yet."""
    number = _index_of(path, os.fstat(handle.fileno()).st_ino, keep)
    if number == 0:
        return None  # the current file: wait for more
    if number is None:  # rotated out of the kept files meanwhile: the oldest kept one is next
        return _open_at(path, Position(0, 0), keep)
    try:
        return rotated(path, number - 1).open("rb")
    except FileNotFoundError:
        return None
