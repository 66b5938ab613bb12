"""Refusing a push whose pack would inflate to too much, before dulwich inflates it.

`max_input_size` bounds the compressed bytes of a push only: a 1 MB pack can hold a 1 GiB blob
of zeros (or a delta that copies a small base a million times), and dulwich keeps each object's
inflated data in memory, bounded only by the size the object declares. PackGuard reads the pack
stream as it arrives, before dulwich does, and refuses it as soon as the declared sizes exceed
the limits. It inflates each zlib stream in pieces of at most 64 KiB and throws them away, only
to find where the stream ends and to read a delta's destination size from its first bytes.

It enforces limits and nothing else: a malformed pack is dulwich's to refuse, so on data it
cannot make sense of the guard stops inspecting and stays out of the way.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

Read = Callable[[int], bytes]

OFS_DELTA = 6
REF_DELTA = 7
HASH_SIZE = 20  # SHA-1 object ids: a REF_DELTA's base and the pack's trailer
PIECE = 64 * 1024  # at most this much input, and this much output, per zlib call

_SIZE_SHIFT_CAP = 64  # payload bits past 2**64 only say "huge"; keeps the int small
_LAST_BYTE = re.compile(rb"[\x00-\x7f]")  # a varint's last byte has its top bit clear
_NOT_0X80 = re.compile(rb"[^\x80]")  # a continued byte carrying payload bits

# Where the parser is.
_HEADER, _OBJECT, _OFFSET, _SKIP, _ZLIB, _DONE, _INERT, _REFUSED = range(8)


class PackTooLarge(Exception):
    """The pack declares more than the limits allow; the message is one line for the pusher."""


@dataclass(frozen=True)
class PackLimits:
    """Bounds on what one push may inflate to (sizes in bytes)."""

    max_object_bytes: int = 100 * 1024 * 1024
    max_inflated_bytes: int = 1000 * 1024 * 1024
    max_objects: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("max_object_bytes", "max_inflated_bytes", "max_objects"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


def _figure(size: int) -> str:
    """A size for a message; bits past 2**64 are not kept while a size is read (see _Varint)."""
    return str(size) if size < 1 << _SIZE_SHIFT_CAP else f"more than {(1 << 64) - 1}"


class _Varint:
    """git's little-endian base-128 size, read as its bytes arrive (an object's size after the
    4 bits in its first byte; a delta's base and destination sizes). Its value never decreases
    as bytes are added, so a limit can be checked before the last byte."""

    __slots__ = ("done", "shift", "value")

    def __init__(self, value: int = 0, shift: int = 0) -> None:
        self.value = value
        self.shift = shift
        self.done = False

    def take(self, data: bytes | memoryview, pos: int, end: int) -> int:
        """Read bytes from data[pos:end] until the number ends; return where reading stopped."""
        while pos < end:
            if self.shift >= _SIZE_SHIFT_CAP:
                return self._take_beyond_64_bits(data, pos, end)
            byte = data[pos]
            pos += 1
            self.value |= (byte & 0x7F) << self.shift
            self.shift += 7
            if not byte & 0x80:
                self.done = True
                break
        return pos

    def _take_beyond_64_bits(self, data: bytes | memoryview, pos: int, end: int) -> int:
        """Bits past 64 only tell whether the size is astronomical: any set bit makes it at
        least 2**64 (beyond every limit). Scanned in C, so that a long run costs no Python loop
        and no ever-growing int."""
        last = _LAST_BYTE.search(data, pos, end)
        stop = last.start() if last else end
        if _NOT_0X80.search(data, pos, stop) or (last and data[stop]):
            self.value |= 1 << _SIZE_SHIFT_CAP
        if last is None:
            return end
        self.done = True
        return stop + 1


class PackGuard:
    """Follows one pack stream (feed it every byte, in order, in any chunks) and raises
    PackTooLarge as soon as it declares an object larger than `max_object_bytes`, more than
    `max_inflated_bytes` in all, or more than `max_objects` objects.

    What counts is what the objects inflate to: a whole object's declared size, and for a delta
    the size of the object it makes (the delta's own size must be within the per-object limit
    too). Data after the pack's trailer is ignored.
    """

    def __init__(self, limits: PackLimits) -> None:
        self._limits = limits
        self._state = _HEADER
        self._header = bytearray()
        self._refusal = ""
        self._left = 0  # objects still to come
        self._counted = 0
        self._skip = 0  # bytes to pass over (a REF_DELTA's base id, the trailer)
        self._after_skip = _DONE
        self._varint: _Varint | None = None  # the object header (or OFS_DELTA offset) so far
        self._type = 0
        self._declared = 0  # the current object's declared (inflated) size
        self._inflated = 0  # what it inflated to so far
        self._inflater = zlib.decompressobj()
        # For a delta, until its destination size is read: its header, and the bytes seen.
        self._delta_sizes: list[_Varint] | None = None
        self._delta_seen = 0

    @property
    def counted_bytes(self) -> int:
        """What the objects seen so far inflate to, as declared."""
        return self._counted

    @property
    def finished(self) -> bool:
        """The whole pack, trailer included, was seen and was within the limits."""
        return self._state == _DONE

    @property
    def inspecting(self) -> bool:
        """False once the pack ended, was refused, or turned out malformed (dulwich's job)."""
        return self._state < _DONE

    def wrap(self, read_all: Read, read_some: Read | None) -> tuple[Read, Read | None]:
        """dulwich's read callables (as add_thin_pack takes them), passing every byte through
        feed() before dulwich sees it."""
        feed = self.feed

        def guarded_read_all(size: int) -> bytes:
            data = read_all(size)
            feed(data)
            return data

        if read_some is None:
            return guarded_read_all, None

        def guarded_read_some(size: int) -> bytes:
            data = read_some(size)
            feed(data)
            return data

        return guarded_read_all, guarded_read_some

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the pack; raise PackTooLarge if they break a limit (and
        again on every later call, should the first be swallowed)."""
        if self._state >= _DONE:
            if self._state == _REFUSED:
                raise PackTooLarge(self._refusal)
            return
        if not data:
            return
        try:
            self._consume(memoryview(data))
        except zlib.error:
            self._state = _INERT  # dulwich meets the same error in the same stream
        except PackTooLarge as exc:
            self._state = _REFUSED
            self._refusal = str(exc)
            raise

    def _consume(self, view: memoryview) -> None:
        pos, end = 0, len(view)
        while pos < end:
            state = self._state
            if state == _ZLIB:
                pos = self._inflate(view, pos, end)
            elif state == _OBJECT:
                pos = self._object_header(view, pos, end)
            elif state == _SKIP:
                step = min(self._skip, end - pos)
                pos += step
                self._skip -= step
                if not self._skip:
                    self._state = self._after_skip
            elif state == _OFFSET:
                assert self._varint is not None
                pos = self._varint.take(view, pos, end)
                if self._varint.done:
                    self._state = _ZLIB
            elif state == _HEADER:
                pos = self._pack_header(view, pos, end)
            else:
                return

    def _pack_header(self, view: memoryview, pos: int, end: int) -> int:
        step = min(12 - len(self._header), end - pos)
        self._header += view[pos : pos + step]
        if len(self._header) < 12:
            return pos + step
        header = bytes(self._header)
        version = int.from_bytes(header[4:8], "big")
        if header[:4] != b"PACK" or version not in (2, 3):
            self._state = _INERT
            return end
        count = int.from_bytes(header[8:12], "big")
        if count > self._limits.max_objects:
            raise PackTooLarge(
                f"the pack holds {count} objects, more than the limit of {self._limits.max_objects}"
            )
        self._left = count
        self._next_object()
        return pos + step

    def _next_object(self) -> None:
        if self._left:
            self._left -= 1
            self._state = _OBJECT
            self._varint = None
        else:
            self._state, self._skip, self._after_skip = _SKIP, HASH_SIZE, _DONE

    def _object_header(self, view: memoryview, pos: int, end: int) -> int:
        varint = self._varint
        if varint is None:  # type in bits 4-6 of the first byte, the size's low 4 bits below
            byte = view[pos]
            pos += 1
            self._type = (byte >> 4) & 0x07
            varint = self._varint = _Varint(byte & 0x0F, 4)
            varint.done = not byte & 0x80
        if not varint.done:
            pos = varint.take(view, pos, end)
        delta = self._type in (OFS_DELTA, REF_DELTA)
        if varint.value > self._limits.max_object_bytes:
            what = "a delta" if delta else "an object"
            self._too_large(what, varint.value)
        if not varint.done:
            return pos
        self._declared = varint.value
        self._inflated = 0
        self._inflater = zlib.decompressobj()
        if self._type == OFS_DELTA:
            self._state, self._varint = _OFFSET, _Varint()
        elif self._type == REF_DELTA:
            self._state, self._skip, self._after_skip = _SKIP, HASH_SIZE, _ZLIB
        else:
            # Types 1-4, and what dulwich streams through like them (0, 5) until it fails.
            self._state = _ZLIB
        if delta:
            self._delta_sizes, self._delta_seen = [_Varint(), _Varint()], 0
        else:
            self._delta_sizes = None
            self._count(self._declared)
        return pos

    def _inflate(self, view: memoryview, pos: int, end: int) -> int:
        inflater = self._inflater
        while pos < end:
            stop = min(pos + PIECE, end)
            out = inflater.decompress(view[pos:stop], PIECE)
            self._inflated += len(out)
            if self._inflated > self._declared:
                # dulwich would refuse it too, but only after inflating all of it in memory
                raise PackTooLarge(
                    f"an object inflates to more than the {self._declared} bytes it declares"
                    " (a malformed or hostile pack)"
                )
            if self._delta_sizes is not None:
                self._delta_header(out)
            if inflater.eof:  # what follows the stream is the next object's
                self._next_object()
                return stop - len(inflater.unused_data)
            advanced = stop - len(inflater.unconsumed_tail)
            if advanced == pos and not out:
                self._state = _INERT  # no progress: not a stream zlib can follow
                return end
            pos = advanced
        return pos

    def _delta_header(self, out: bytes) -> None:
        """Read the delta's base and destination sizes (two varints) from its first bytes, as
        long as they lie within the delta's declared size (beyond it, dulwich refuses it)."""
        sizes = self._delta_sizes
        assert sizes is not None
        end = min(len(out), self._declared - self._delta_seen)
        self._delta_seen += len(out)
        pos = 0
        base, destination = sizes
        while pos < end:
            if not base.done:
                pos = base.take(out, pos, end)
                continue
            pos = destination.take(out, pos, end)
            if destination.value > self._limits.max_object_bytes:
                self._too_large("an object", destination.value)
            if destination.done:
                self._delta_sizes = None
                self._count(destination.value)
                return
        if self._delta_seen >= self._declared:
            self._delta_sizes = None  # too short to hold its sizes: dulwich's to refuse

    def _count(self, size: int) -> None:
        self._counted += size
        if self._counted > self._limits.max_inflated_bytes:
            raise PackTooLarge(
                f"the push inflates to more than {self._limits.max_inflated_bytes} bytes,"
                " the limit (--max-push-inflated)"
            )

    def _too_large(self, what: str, size: int) -> None:
        raise PackTooLarge(
            f"{what} of {_figure(size)} bytes (inflated) is larger than the limit of"
            f" {self._limits.max_object_bytes} bytes per object"
        )
