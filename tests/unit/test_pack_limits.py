"""PackGuard against real packs (git's and hand-made hostile ones), and in front of dulwich."""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import os
import random
import struct
import subprocess
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from hashlib import sha1
from pathlib import Path

import pytest
from dulwich.object_format import SHA1
from dulwich.object_store import DiskObjectStore
from dulwich.pack import PackStreamReader, pack_object_header
from dulwich.protocol import ReceivableProtocol
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitreceiver.pack_limits import (
    OFS_DELTA,
    REF_DELTA,
    PackGuard,
    PackLimits,
    PackTooLarge,
)

MiB = 1024 * 1024
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


def git(repo: Path, *args: str, stdin: bytes = b"") -> bytes:
    return subprocess.run(
        ["git", "-C", str(repo), *args], input=stdin, env=GIT_ENV, check=True, capture_output=True
    ).stdout


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").decode().strip()


def pack_of(repo: Path, revs: str, *options: str) -> bytes:
    """What `git push` would send for `revs` (lines for pack-objects --revs)."""
    return git(repo, "pack-objects", "--stdout", "-q", "--revs", *options, stdin=revs.encode())


def object_sizes(repo: Path) -> int:
    out = git(repo, "cat-file", "--batch-all-objects", "--batch-check=%(objectsize)")
    return sum(int(line) for line in out.split())


def pack_types(data: bytes) -> list[int]:
    reader = PackStreamReader(sha1, io.BytesIO(data).read)
    return [unpacked.pack_type_num for unpacked in reader.read_objects()]


def varint(size: int) -> bytes:
    """A delta header's size: little-endian base 128."""
    out = bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        out.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(out)


def entry(type_num: int, body: bytes, base: int | bytes | None = None, size: int = -1) -> bytes:
    """One pack entry, declaring `size` (default: the body's true size)."""
    header = pack_object_header(type_num, base, len(body) if size < 0 else size, SHA1)
    return bytes(header) + zlib.compress(body)


@functools.cache
def zeros_entry(size: int, declared: int) -> bytes:
    """A blob entry of `size` zeros, compressed without ever holding them all."""
    compressor = zlib.compressobj(9)
    piece = bytes(MiB)
    body = b"".join(compressor.compress(piece) for _ in range(size // MiB))
    return bytes(pack_object_header(3, None, declared, SHA1)) + body + compressor.flush()


def make_pack(*entries: bytes, count: int = -1) -> bytes:
    data = struct.pack(">4sLL", b"PACK", 2, len(entries) if count < 0 else count)
    data += b"".join(entries)
    return data + sha1(data).digest()


def chunks(data: bytes, sizes: Callable[[], int]) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        step = sizes()
        yield data[pos : pos + step]
        pos += step


def feed_all(guard: PackGuard, data: bytes, sizes: Callable[[], int] = lambda: 65536) -> None:
    for chunk in chunks(data, sizes):
        guard.feed(chunk)


def refusal(limits: PackLimits, data: bytes, sizes: Callable[[], int] = lambda: 65536) -> str:
    guard = PackGuard(limits)
    with pytest.raises(PackTooLarge) as caught:
        feed_all(guard, data, sizes)
    return str(caught.value)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of small text files edited over many commits: a pack full of deltas."""
    repo = tmp_path_factory.mktemp("history")
    git(repo, "init", "-q")
    rng = random.Random(7)
    words = [f"word{n}" for n in range(500)]
    files = {f"src/m{n}.py": [rng.choice(words) for _ in range(400)] for n in range(12)}
    for number in range(25):
        for name, lines in files.items():
            if rng.random() < 0.5:
                lines.insert(rng.randrange(len(lines)), rng.choice(words))
                lines[rng.randrange(len(lines))] = rng.choice(words)
            (repo / name).parent.mkdir(exist_ok=True)
            (repo / name).write_text("\n".join(lines) + "\n")
        commit_all(repo, f"change {number}")
    return repo


@pytest.fixture(scope="module")
def history_pack(history: Path) -> bytes:
    return pack_of(history, "HEAD\n", "--delta-base-offset")


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A repository whose second commit changes one line of a 6 MiB file."""
    repo = tmp_path_factory.mktemp("big")
    git(repo, "init", "-q")
    lines = [f"line {n:07d} of a large generated file\n" for n in range(6 * MiB // 36)]
    (repo / "big.txt").write_text("".join(lines))
    first = commit_all(repo, "big")
    lines[len(lines) // 2] = "a changed line\n"
    (repo / "big.txt").write_text("".join(lines))
    return repo, first, commit_all(repo, "one line changed")


@pytest.fixture(scope="module")
def zeros_pack(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """git's pack of one commit holding a blob of 64 MiB of zeros (about 64 KiB compressed)."""
    repo = tmp_path_factory.mktemp("zeros")
    git(repo, "init", "-q")
    with (repo / "zeros.bin").open("wb") as file:
        file.truncate(64 * MiB)
    commit_all(repo, "zeros")
    return pack_of(repo, "HEAD\n")


def test_a_normal_pack_with_deltas_passes_in_any_chunks(history: Path, history_pack: bytes):
    types = pack_types(history_pack)
    assert types.count(OFS_DELTA) > 50, "the pack holds deltas"
    rng = random.Random(1)
    for sizes in (lambda: 1, lambda: rng.randint(1, 40), lambda: rng.randint(1, 5000), lambda: MiB):
        guard = PackGuard(PackLimits())
        feed_all(guard, history_pack, sizes)
        assert guard.finished
        # Deltas count as the objects they make: the total is every object's true size.
        assert guard.counted_bytes == object_sizes(history)


def test_ref_deltas_and_thin_packs_count_what_they_make(history: Path):
    ref_pack = pack_of(history, "HEAD\n")
    assert REF_DELTA in pack_types(ref_pack)
    guard = PackGuard(PackLimits())
    feed_all(guard, ref_pack, lambda: 777)
    assert guard.finished and guard.counted_bytes == object_sizes(history)

    thin = pack_of(history, "HEAD\n^HEAD~3\n", "--thin")
    guard = PackGuard(PackLimits())
    feed_all(guard, thin, lambda: 3)
    assert guard.finished and 0 < guard.counted_bytes < object_sizes(history)


def test_data_after_the_trailer_is_ignored(history_pack: bytes):
    guard = PackGuard(PackLimits())
    guard.feed(history_pack + zeros_entry(64 * MiB, 64 * MiB))
    guard.feed(b"more")
    assert guard.finished


def test_a_zero_blob_bomb_is_refused_by_its_header_before_anything_is_inflated(zeros_pack: bytes):
    assert len(zeros_pack) < MiB
    tracemalloc.start()
    try:
        message = refusal(PackLimits(max_object_bytes=16 * MiB), zeros_pack)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == (
        "an object of 67108864 bytes (inflated) is larger than the limit of 16777216 bytes"
        " per object"
    )
    assert peak < MiB


def test_inflating_a_bomb_within_the_limits_holds_little_memory(zeros_pack: bytes):
    guard = PackGuard(PackLimits(max_object_bytes=64 * MiB))
    tracemalloc.start()
    try:
        feed_all(guard, zeros_pack)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert guard.finished and guard.counted_bytes > 64 * MiB
    assert peak < 2 * MiB, f"the guard held {peak} bytes while inflating 64 MiB"


def test_a_lying_header_is_refused_before_it_is_inflated_whole(tmp_path: Path):
    """A blob that says 10 bytes and inflates to 64 MiB: refused as soon as it passes its
    declared size (dulwich would inflate one more unbounded piece before it noticed)."""
    data = make_pack(zeros_entry(64 * MiB, declared=10), entry(3, b"next"))
    guard = PackGuard(PackLimits(max_object_bytes=100, max_inflated_bytes=100))
    tracemalloc.start()
    try:
        with pytest.raises(PackTooLarge, match="inflates to more than the 10 bytes it declares"):
            feed_all(guard, data, lambda: 4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * MiB
    with pytest.raises(PackTooLarge, match="inflates to more than the 10 bytes it declares"):
        receive(tmp_path / "store", data, PackGuard(PackLimits()))


def test_the_total_counts_across_many_blobs(tmp_path: Path):
    git(tmp_path, "init", "-q")
    for n in range(20):
        (tmp_path / f"blob{n}").write_bytes(bytes(MiB) + b"blob %d" % n)
    commit_all(tmp_path, "twenty blobs of 1 MiB, most of them deltas")
    data = pack_of(tmp_path, "HEAD\n")
    assert pack_types(data).count(REF_DELTA) > 10
    limits = PackLimits(max_object_bytes=2 * MiB, max_inflated_bytes=10 * MiB)
    assert refusal(limits, data) == (
        "the push inflates to more than 10485760 bytes, the limit (--max-push-inflated)"
    )
    guard = PackGuard(PackLimits(max_object_bytes=2 * MiB, max_inflated_bytes=21 * MiB))
    feed_all(guard, data)
    assert guard.finished and guard.counted_bytes == object_sizes(tmp_path)


def test_a_delta_counts_its_destination_not_its_own_size(big_file: tuple[Path, str, str]):
    repo, first, second = big_file
    thin = pack_of(repo, f"{second}\n^{first}\n", "--thin")
    assert len(thin) < 10_000 and REF_DELTA in pack_types(thin), "a small delta to the old file"
    size = int(git(repo, "cat-file", "-s", f"{second}:big.txt"))
    message = refusal(PackLimits(max_object_bytes=4 * MiB), thin, lambda: 1)
    assert message == (
        f"an object of {size} bytes (inflated) is larger than the limit of 4194304 bytes per object"
    )
    message = refusal(PackLimits(max_inflated_bytes=size), thin)
    assert message.startswith("the push inflates to more than")
    guard = PackGuard(PackLimits(max_object_bytes=size, max_inflated_bytes=size + 1000))
    feed_all(guard, thin)
    assert guard.finished


def delta_bomb(destination: int) -> bytes:
    """A 64 KiB blob and a ~destination/4096-byte delta copying it into `destination` bytes."""
    base = random.Random(3).randbytes(65536)
    # 0x80 alone copies 0x10000 bytes from offset 0 of the base.
    delta = varint(len(base)) + varint(destination) + b"\x80" * (destination // 65536)
    first = entry(3, base)
    return make_pack(first, entry(OFS_DELTA, delta, base=len(first)))


DELTA_BOMB = delta_bomb(1 << 30)


def test_a_delta_bomb_is_refused_by_its_destination_size():
    data = DELTA_BOMB
    assert len(data) < 100_000
    assert refusal(PackLimits(), data) == (
        "an object of 1073741824 bytes (inflated) is larger than the limit of 104857600 bytes"
        " per object"
    )
    big_delta = make_pack(entry(REF_DELTA, b"\0" * 2000, base=b"\1" * 20))
    assert refusal(PackLimits(max_object_bytes=1000), big_delta).startswith(
        "a delta of 2000 bytes (inflated) is larger"
    )


def test_sizes_past_64_bits_are_refused_without_huge_numbers():
    huge = b"\x90" + b"\x80" * 10 + b"\x01"  # a commit header declaring 2**74 bytes
    message = refusal(PackLimits(), make_pack(huge + zlib.compress(b"")))
    assert message.startswith("an object of more than 18446744073709551615 bytes")
    padded = b"\x90" + b"\x80" * 100_000 + b"\x00"  # a commit of 0 bytes, at length
    guard = PackGuard(PackLimits())
    feed_all(guard, make_pack(padded + zlib.compress(b""), entry(1, b"x" * 5)))
    assert guard.finished and guard.counted_bytes == 5


def test_long_sizes_in_a_delta_cost_no_python_loop_per_byte():
    """A delta's base size of a million bytes (astronomical, not the guard's business), then
    its destination size, long but small: read quickly, and the destination counted."""
    destination = b"\xe4\x80" + b"\x80" * 100_000 + b"\x00"  # 100, at length
    delta = b"\xff" * MiB + b"\x01" + destination + b"\x80"
    guard = PackGuard(PackLimits(max_object_bytes=2 * MiB))
    started = time.perf_counter()
    feed_all(guard, make_pack(entry(REF_DELTA, delta, base=b"\1" * 20)), lambda: 1000)
    assert time.perf_counter() - started < 1
    assert guard.finished and guard.counted_bytes == 100


def test_a_delta_whose_sizes_run_past_its_declared_size_is_refused():
    """Sizes past the delta's declared size are not part of it: the delta lies about itself."""
    for declared, split in itertools.product((0, 1, 5), (1, 1000)):
        delta = entry(REF_DELTA, varint(10) + varint(1 << 40), base=b"\1" * 20, size=declared)
        guard = PackGuard(PackLimits())
        with pytest.raises(PackTooLarge, match=f"more than the {declared} bytes it declares"):
            feed_all(guard, make_pack(delta, entry(3, b"blob")), lambda: split)  # noqa: B023


def test_the_object_count_is_refused_from_the_header(history_pack: bytes):
    assert refusal(PackLimits(), make_pack(count=2_000_000)[:12], lambda: 1) == (
        "the pack holds 2000000 objects, more than the limit of 1000000"
    )
    count = int.from_bytes(history_pack[8:12], "big")
    assert refusal(PackLimits(max_objects=count - 1), history_pack).startswith(
        f"the pack holds {count} objects"
    )
    guard = PackGuard(PackLimits(max_objects=count))
    guard.feed(history_pack)
    assert guard.finished


def test_a_refusal_repeats_and_a_garbage_stream_makes_the_guard_inert():
    guard = PackGuard(PackLimits(max_objects=1))
    with pytest.raises(PackTooLarge):
        guard.feed(make_pack(count=2))
    with pytest.raises(PackTooLarge, match="holds 2 objects"):
        guard.feed(b"anything")
    for garbage in (b"PACK\0\0\0\4" + b"\0" * 100, b"JUNK" * 100, make_pack(b"\x31garbage" * 9)):
        guard = PackGuard(PackLimits(max_object_bytes=1))
        guard.feed(garbage)
        assert not guard.inspecting and not guard.finished
        guard.feed(zeros_entry(64 * MiB, 64 * MiB))


LIMITS = PackLimits(max_object_bytes=50_000, max_inflated_bytes=2 * MiB, max_objects=10_000)


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=2000),
        st.binary(max_size=2000).map(lambda tail: b"PACK\0\0\0\2\0\0\0\5" + tail),
    ),
    split=st.integers(1, 64),
)
def test_random_bytes_raise_nothing_but_pack_too_large(data: bytes, split: int):
    guard = PackGuard(LIMITS)
    with contextlib.suppress(PackTooLarge):
        feed_all(guard, data, lambda: split)


@FUZZ
@given(cut=st.integers(0, 1 << 20), flips=st.lists(st.tuples(st.integers(0), st.integers(0, 255))))
def test_truncated_and_mutated_packs_raise_nothing_but_pack_too_large(
    history_pack: bytes, cut: int, flips: list[tuple[int, int]]
):
    data = bytearray(history_pack[: cut % (len(history_pack) + 1)])
    for where, value in flips:
        if data:
            data[where % len(data)] = value
    guard = PackGuard(LIMITS)
    with contextlib.suppress(PackTooLarge):
        feed_all(
            guard, bytes(data), random.Random(cut).choice([lambda: 1, lambda: 97, lambda: 8192])
        )
    if not flips and cut < len(history_pack):
        assert not guard.finished


@FUZZ
@given(sizes=st.lists(st.integers(1, 3000), min_size=1))
def test_the_verdict_does_not_depend_on_the_chunking(history_pack: bytes, sizes: list[int]):
    def verdict(data: bytes, limits: PackLimits, split: list[int]) -> tuple[bool, int, str]:
        guard = PackGuard(limits)
        steps = iter(split * (len(data) // sum(split) + 1))
        try:
            feed_all(guard, data, lambda: next(steps))
        except PackTooLarge as exc:
            return guard.finished, guard.counted_bytes, str(exc)
        return guard.finished, guard.counted_bytes, ""

    for data, limits in (
        (history_pack, LIMITS),
        (history_pack, PackLimits(max_inflated_bytes=100_000)),
        (DELTA_BOMB, PackLimits()),
    ):
        assert verdict(data, limits, sizes) == verdict(data, limits, [len(data)])


def test_wrapped_reads_hand_dulwich_the_same_bytes(history_pack: bytes):
    guard = PackGuard(PackLimits())
    source = io.BytesIO(history_pack)
    read_all, read_some = guard.wrap(source.read, lambda n: source.read(min(n, 5)))
    assert read_some is not None
    assert read_all(12) + read_some(100) + read_all(len(history_pack)) == history_pack
    assert guard.finished
    assert guard.wrap(source.read, None)[1] is None


def receive(
    path: Path, data: bytes, guard: PackGuard | None, alternates: tuple[str, ...] = ()
) -> set[tuple[bytes, bytes]]:
    """add_thin_pack as git_service calls it, from a protocol over the pack's bytes arriving in
    uneven pieces; the objects stored (id, raw contents)."""
    DiskObjectStore.init(path)
    store = DiskObjectStore(str(path), alternates=list(alternates))
    source = io.BytesIO(data)
    rng = random.Random(len(data))
    proto = ReceivableProtocol(lambda n: source.read(min(n, rng.randint(1, 70_000))), len)
    read_all, read_some = proto.read, proto.recv
    if guard is not None:
        read_all, read_some = guard.wrap(read_all, read_some)
    pack = store.add_thin_pack(read_all, read_some, max_input_size=100 * MiB)
    pack.check()
    return {(sha, store[sha].as_raw_string()) for sha in pack}


def test_dulwich_stores_the_same_objects_through_the_guard(
    tmp_path: Path, history_pack: bytes, big_file: tuple[Path, str, str]
):
    plain = receive(tmp_path / "plain", history_pack, None)
    guard = PackGuard(PackLimits())
    assert receive(tmp_path / "guarded", history_pack, guard) == plain
    assert guard.finished and len(plain) == int.from_bytes(history_pack[8:12], "big")

    repo, first, second = big_file
    thin = pack_of(repo, f"{second}\n^{first}\n", "--thin")
    objects = (str(repo / ".git" / "objects"),)
    plain = receive(tmp_path / "thin-plain", thin, None, objects)
    guard = PackGuard(PackLimits())
    assert receive(tmp_path / "thin-guarded", thin, guard, objects) == plain
    assert guard.finished


def test_a_bomb_raises_out_of_add_thin_pack(
    tmp_path: Path, zeros_pack: bytes, big_file: tuple[Path, str, str]
):
    limits = PackLimits(max_object_bytes=16 * MiB)
    with pytest.raises(PackTooLarge, match="67108864 bytes"):
        receive(tmp_path / "zeros", zeros_pack, PackGuard(limits))
    with pytest.raises(PackTooLarge, match="1073741824 bytes"):
        receive(tmp_path / "delta", DELTA_BOMB, PackGuard(limits))
    repo, first, second = big_file
    thin = pack_of(repo, f"{second}\n^{first}\n", "--thin")
    objects = (str(repo / ".git" / "objects"),)
    with pytest.raises(PackTooLarge, match="limit of 4194304 bytes per object"):
        receive(tmp_path / "thin", thin, PackGuard(PackLimits(max_object_bytes=4 * MiB)), objects)
