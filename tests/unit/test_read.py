"""Block reading: every line exactly once, whatever the byte ranges and block sizes; compressed files whole."""
import gzip
import io
import random

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from transforms.read import RANGES_MULTIPLE, ReadLineBlocks, _blocks, line_ranges, lines_of, read_range, timed_lines


def expected_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def test_ranges_and_blocks_cover_each_line_once():
    rng = random.Random(3)
    for _ in range(2000):
        # some lines end in \r (CRLF files): those blocks come as lists, the others as joined bytes
        cr = rng.random() < 0.2
        lines = [b"x" * rng.choice([0, 1, 2, 5, 17, 40]) + (b"\r" if cr and rng.random() < 0.5 else b"")
                 for _ in range(rng.randint(0, 30))]
        data = b"\n".join(lines) + rng.choice([b"", b"\n", b"\r\n"])
        split, block = rng.randint(1, 50), rng.randint(1, 20)
        got = [line for start, end in line_ranges(len(data), split)
               for blk in read_range(io.BytesIO(data), start, end, block) for line in lines_of(blk)]
        assert got == expected_lines(data), (data, split, block)
        assert [line for blk in _blocks(io.BytesIO(data), b"", 0, None, block)
                for line in lines_of(blk)] == expected_lines(data)


def test_a_big_file_is_cut_into_equal_ranges_a_multiple_of_four_in_number():
    size, split = 430_000_000, 16 << 20
    ranges = line_ranges(size, split)
    assert len(ranges) == 28 and len(ranges) % RANGES_MULTIPLE == 0  # 27 ranges of 16 MB would do
    assert ranges[0][0] == 0 and ranges[-1][1] == size and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert {end - start for start, end in ranges} <= {size // 28, size // 28 + 1} and size // 28 < split
    assert line_ranges(split, split) == [(0, split)] and line_ranges(0, split) == [(0, 0)]
    assert line_ranges(split + 1, split) == [(0, (split + 1) // 4), ((split + 1) // 4, (split + 1) // 2),
                                             ((split + 1) // 2, 3 * (split + 1) // 4), (3 * (split + 1) // 4, split + 1)]
    assert line_ranges(3, 1) == [(0, 1), (1, 2), (2, 3)]  # never an empty range


def test_read_line_blocks_in_a_pipeline(tmp_path):
    plain = b"".join(b'{"n":%d}\r\n' % i for i in range(500)) + b"\n" + b'{"last":1}'
    (tmp_path / "a.ndjson").write_bytes(plain)
    (tmp_path / "b.ndjson.gz").write_bytes(gzip.compress(b'{"g":1}\n{"g":2}\n'))
    want = expected_lines(plain) + [b'{"g":1}', b'{"g":2}']
    with beam.Pipeline(runner="FnApiRunner") as p:
        read = p | ReadLineBlocks([str(tmp_path / "*.ndjson*")], split_bytes=700, block_bytes=64)
        lines = read.blocks | beam.FlatMap(timed_lines)
        assert_that(lines, equal_to(want))
