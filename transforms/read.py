"""Read NDJSON inputs as blocks of lines, not one element per line.

``ReadLineBlocks(globs)`` -> PCollection of blocks of lines (lines without their ``\\n`` / ``\\r\\n``; empty
lines kept so they can be counted): each block is the ``bytes`` it was read as, its lines joined by ``\\n``,
or a ``list[bytes]`` of lines where they ended in ``\\r\\n`` (``lines_of`` gives the lines of either). Files
on any Beam filesystem; compressed files (``.gz``, ``.bz2``, ``.zst``, ``.deflate`` ..., by extension) are
read whole by one worker, uncompressed files are cut
into byte ranges of ``split_bytes`` that workers read in parallel. A range owns every line that *starts*
inside it, so each line is read exactly once whatever the split.

A compressed file that is damaged or cut short is never read silently in part: Beam's decompressing
reader stops at the cut as if the file ended there, so gzip, bzip2 and xz/lzma files are decompressed by
Python's own readers, which check each stream's end marker (and gzip's CRC and length). The lines before
the damage go on as usual; the file gets a ``corrupt_input`` dead letter (``DEAD_LETTERS`` output) naming
it and the number of lines read, counted as one input so the accounting still balances, and the delivery
command exits non-zero. Other compressions (deflate, zstd, snappy) are read with Beam's reader.

Why not ``ReadFromText``: it makes one Beam element per line (a Python object, a timestamp and a
window each), which cost about as much as parsing the line; the parser works on whole blocks anyway.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import zlib

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import deadletter, progress
from transforms.deadletter import DEAD_LETTERS


# Decompressing readers that raise on a missing end of stream, by Beam's name for the compression.
class _FramedReader:
    """A reader of a stream of compressed frames (zstd, zlib/deflate) that raises ``EOFError`` when the input
    ends inside a frame, as Python's gzip/bz2/lzma readers do; zstandard's own stream reader returns short
    data silently there. ``make()`` gives a fresh decompressor object (``decompress``, ``eof``,
    ``unused_data``) for each frame."""

    _CHUNK = 1 << 20

    def __init__(self, raw, make):
        self._raw, self._make = raw, make
        self._dec = None
        self._buffer = b""
        self._cut = False  # the input ended inside a frame: raised once what came before is returned

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._buffer) < size) and not self._cut:
            data = self._raw.read(self._CHUNK)
            if not data:
                self._cut = self._dec is not None and not self._dec.eof
                break
            while data:
                if self._dec is None:
                    self._dec = self._make()
                self._buffer += self._dec.decompress(data)
                data = b""
                if self._dec.eof:  # a frame ended: what follows it starts the next one
                    data, self._dec = self._dec.unused_data, None
        if self._cut and not self._buffer:
            raise EOFError("compressed stream ended before the end of its frame")
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _zstd_reader(raw):
    import zstandard

    return _FramedReader(raw, lambda: zstandard.ZstdDecompressor().decompressobj())


_CHECKED_READERS = {
    CompressionTypes.GZIP: lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    CompressionTypes.BZIP2: lambda raw: bz2.BZ2File(raw, mode="rb"),
    CompressionTypes.LZMA: lambda raw: lzma.LZMAFile(raw, mode="rb"),
    CompressionTypes.ZSTD: _zstd_reader,
    CompressionTypes.DEFLATE: lambda raw: _FramedReader(raw, zlib.decompressobj),
}
_DAMAGE = (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)

# Ranges are the unit of parallel reading: a runner hands them out in whole numbers, so a 430 MB file in
# 64 MB ranges (7) left one of two workers with 4 of them; 16 MB ranges even the load out.
DEFAULT_SPLIT_BYTES = 16 << 20
DEFAULT_BLOCK_BYTES = 4 << 20
RANGES_MULTIPLE = 4


def line_ranges(size: int, split_bytes: int) -> list[tuple[int, int]]:
    """``[start, end)`` byte ranges covering ``size`` bytes (at least one range, even for an empty file).

    A file larger than ``split_bytes`` is cut into a multiple of ``RANGES_MULTIPLE`` ranges of equal size
    (to a byte), none larger than ``split_bytes``: the local runner deals a stage's ranges out to its workers
    in turn before any is read, so 27 ranges of 16 MB left one of two workers a whole range (0.6 s) to read
    alone at the end; 28 equal ones give 2 or 4 workers the same share."""
    if size <= split_bytes:
        return [(0, size)]
    count = -(-size // split_bytes)
    count = min(count + -count % RANGES_MULTIPLE, size)  # never an empty range
    bounds = [size * i // count for i in range(count + 1)]
    return list(zip(bounds, bounds[1:]))


def read_range(fh, start: int, end: int, block_bytes: int):
    """Yield blocks (``lines_of``) of the lines starting in ``[start, end)`` of the seekable stream ``fh``.

    A range that does not start at 0 leaves the line that began before it to that line's owner: it seeks
    one byte back and skips everything up to and including the first ``\\n``."""
    fh.seek(max(start - 1, 0))
    pos, pending = max(start - 1, 0), b""
    if start > 0:
        while True:
            chunk = fh.read(block_bytes)
            if not chunk:
                return
            cut = chunk.find(b"\n")
            if cut >= 0:
                pos += cut + 1
                pending = chunk[cut + 1:]
                break
            pos += len(chunk)
        if pos >= end:
            return
    yield from _blocks(fh, pending, pos, end, block_bytes)


def _blocks(fh, pending: bytes, pos: int, end: int | None, block_bytes: int):
    """Blocks of lines from ``pending`` on (it begins at stream offset ``pos``, a line start), up to the line
    holding offset ``end - 1`` (``end=None``: to the end of the stream); see ``lines_of`` for their form.

    Each block is the complete lines of what was read, joined to the line cut at the previous read's end:
    one copy of the bytes and no object per line (splitting every block into lines, which the parser joined
    again for its block decode, cost a third of the reading time and 10,000 small objects a block)."""
    parts = [pending]  # bytes read from ``pos`` on but not yet yielded: whole lines, then a line's start
    while True:
        chunk = fh.read(block_bytes)
        if chunk:
            cut = chunk.rfind(b"\n")
            if cut < 0:
                parts.append(chunk)  # no line ends in it: keep reading
                continue
            parts.append(memoryview(chunk)[:cut])
            data, rest = b"".join(parts), chunk[cut + 1:]
        else:  # end of stream: what is left is the last line, unterminated
            data, rest = b"".join(parts), b""
            if not data:
                return
        last = end is not None and pos + len(data) + 1 >= end  # the next line would start at or after ``end``
        if last:  # lines starting before ``end`` are ours: cut at the first line break at or after ``end - 1``
            stop = data.find(b"\n", end - 1 - pos)
            if stop >= 0:
                data = data[:stop]
        yield _block(data)
        if last or not chunk:
            return
        pos += len(data) + 1
        parts = [rest]


def _block(data: bytes):
    """The block's form for the parser: ``data`` itself (lines joined by ``\\n``) unless a line ends in
    ``\\r`` (those lines are split and the ``\\r`` dropped) or it is one empty line (a list, so it counts)."""
    if not data or b"\r" in data:
        return [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")]
    return data


def timed_lines(timed) -> list[bytes]:
    """The lines of a ``(landed_us, block)`` pair as ``ReadLineBlocks`` yields them."""
    return lines_of(timed[1])


def lines_of(block) -> list[bytes]:
    """The lines of a block ``ReadLineBlocks`` yields: ``bytes`` holding the lines joined by ``\\n`` (no line
    break after the last), or a ``list`` of lines."""
    return block.split(b"\n") if isinstance(block, bytes) else block


def _compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


class _ExpandGlobFn(beam.DoFn):
    def __init__(self, split_bytes: int):
        self._split_bytes = split_bytes

    def process(self, glob: str):
        for meta in FileSystems.match([glob])[0].metadata_list:
            landed_us = int((meta.last_updated_in_seconds or 0) * 1_000_000) or None
            if _compressed(meta.path):
                yield meta.path, 0, None, landed_us
            else:
                for start, end in line_ranges(meta.size_in_bytes, self._split_bytes):
                    yield meta.path, start, end, landed_us


def _line_count(block) -> int:
    return block.count(b"\n") + 1 if isinstance(block, bytes) else len(block)


class _ReadRangeFn(beam.DoFn):
    def __init__(self, block_bytes: int):
        self._block_bytes = block_bytes

    def setup(self):
        self._input = Metrics.counter(deadletter.NAMESPACE, "input")

    def process(self, element):
        path, start, end, landed_us = element
        if end is None:
            blocks = self._read_compressed(path)
        else:
            blocks = self._read_range(path, start, end)
        for block in blocks:
            if isinstance(block, beam.pvalue.TaggedOutput):
                yield block
                continue
            count = _line_count(block)  # the bytes as read: each line with its line break
            progress.add(count, (len(block) + 1) if isinstance(block, bytes) else sum(map(len, block)) + count)
            yield landed_us, block

    def finish_bundle(self):
        progress.flush()

    def _read_range(self, path: str, start: int, end: int):
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            yield from read_range(fh, start, end, self._block_bytes)


    def _read_compressed(self, path: str):
        kind = CompressionTypes.detect_compression_type(path)
        checked = _CHECKED_READERS.get(kind)
        lines = 0
        try:
            if checked is None:
                with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as fh:
                    yield from _blocks(fh, b"", 0, None, self._block_bytes)
                return
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw, checked(raw) as fh:
                for block in _blocks(fh, b"", 0, None, self._block_bytes):
                    lines += _line_count(block)
                    yield block
        except _DAMAGE as exc:
            # The damaged rest stands as one input line, dead-lettered: the accounting balances and says so.
            self._input.inc()
            deadletter.count("corrupt_input")
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, deadletter.make_record(
                "corrupt_input", "read", f"{path}: {kind} stream damaged or cut short ({type(exc).__name__}); "
                f"{lines} lines were read before it, the rest of the file was not", b"", None))


class ReadLineBlocks(beam.PTransform):
    """Input globs -> ``{"blocks": (landed_us, block) pairs, "dead_letters": one record per damaged
    compressed file}``. ``block``: lines as ``bytes`` joined by ``\\n`` or a ``list[bytes]`` (``lines_of``);
    ``landed_us``: the file's last-modified time in microseconds (None where the filesystem has none), which
    the parser takes as the time the file's events were received when they do not say (so a re-run gives
    them the same ``received_at``, partition and file)."""

    def __init__(self, globs, split_bytes: int = DEFAULT_SPLIT_BYTES, block_bytes: int = DEFAULT_BLOCK_BYTES):
        super().__init__()
        self._globs = list(globs)
        self._split_bytes = split_bytes
        self._block_bytes = block_bytes

    def expand(self, pbegin):
        return (pbegin
                | "Globs" >> beam.Create(self._globs)
                | "Ranges" >> beam.ParDo(_ExpandGlobFn(self._split_bytes))
                # Ranges are tiny; redistributing them lets every worker read a part of a big file.
                | "Spread" >> beam.Reshuffle()
                | "ReadBlocks" >> beam.ParDo(_ReadRangeFn(self._block_bytes)).with_outputs(DEAD_LETTERS, main="blocks"))
