"""Instance logs: rotation by size, tails read from the end, following across rotations."""

import asyncio

from controller.runtimes.log_files import LogSettings, RotatingLog, follow_lines, tail_lines


def lines(count: int, start: int = 0) -> bytes:
    return b"".join(b"line %06d\n" % n for n in range(start, start + count))  # 12 bytes each


def test_a_log_rotates_at_its_size_and_keeps_so_many_files(tmp_path):
    path = tmp_path / "job.log"
    log = RotatingLog(path, LogSettings(max_bytes=1200, keep=3))
    for n in range(0, 1000, 10):
        log.write(lines(10, n))
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["job.log", "job.log.1", "job.log.2"]
    assert all(p.stat().st_size <= 1200 for p in tmp_path.iterdir())
    for p in tmp_path.iterdir():
        assert p.read_bytes().endswith(b"\n"), "files are cut at line ends"
    newest = path.read_bytes().splitlines()
    assert newest[-1] == b"line 000999"


def test_the_tail_spans_rotated_files_and_stops_where_it_has_enough(tmp_path):
    path = tmp_path / "job.log"
    log = RotatingLog(path, LogSettings(max_bytes=120, keep=3))  # ten lines a file
    log.write(lines(25))
    log.write(b"unfinished")
    log.close()
    found, position = tail_lines(path, 8, keep=3)
    assert found == [b"line %06d" % n for n in range(18, 25)] + [b"unfinished"]
    assert position.offset == path.stat().st_size
    everything, _ = tail_lines(path, 1000, keep=3)
    assert everything[0] == b"line 000000"  # the oldest kept file begins here
    assert tail_lines(tmp_path / "none.log", 5)[0] == []
    assert tail_lines(path, 0)[0] == []


def test_one_line_longer_than_a_file_is_split_not_lost(tmp_path):
    path = tmp_path / "job.log"
    log = RotatingLog(path, LogSettings(max_bytes=100, keep=5))
    log.write(b"x" * 250 + b"\n")
    log.close()
    sizes = sorted(p.stat().st_size for p in tmp_path.iterdir())
    assert sum(sizes) == 251 and max(sizes) <= 100


def test_following_goes_on_across_a_rotation(tmp_path):
    path = tmp_path / "job.log"
    log = RotatingLog(path, LogSettings(max_bytes=120, keep=2))
    log.write(lines(5))
    _, position = tail_lines(path, 5, keep=2)

    async def follow() -> list[bytes]:
        seen: list[bytes] = []
        follower = follow_lines(path, position, keep=2)
        log.write(lines(12, 5))  # passes the size: rotates once
        async for line in follower:
            seen.append(line)
            if len(seen) == 12:
                break
        await follower.aclose()
        return seen

    seen = asyncio.run(asyncio.wait_for(follow(), 30))
    log.close()
    assert seen == [b"line %06d" % n for n in range(5, 17)]
