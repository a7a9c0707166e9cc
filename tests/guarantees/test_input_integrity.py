"""Input integrity: a damaged or truncated compressed input is never read silently in part.

Through the real entry point (``python -m pipelines.deliver``, FnApiRunner), ending with the invariants.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import zlib

import orjson
import pytest

from tests.eventgen import generate
from tests.guarantees.invariants import check_conservation, check_no_duplicate, dead_letters, deliver


def _config(root):
    return [{"source_id": "src_example", "vendor": "files", "name": "Lake",
             "config": {"path": str(root / "lake"), "file_format": "json", "compression": "none",
                        "partition_by": "{date}"}}]


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("suffix,compress", [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress),
                                             (".zst", _zstd), (".deflate", zlib.compress)])
def test_a_truncated_compressed_file_is_a_loud_dead_letter(tmp_path, suffix, compress):
    lines = generate(200, seed=5, bad=False)[0]
    whole = compress(b"\n".join(lines) + b"\n")
    cut = whole[:len(whole) * 2 // 5]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / f"cut.ndjson{suffix}").write_bytes(cut)
    (tmp_path / "in" / f"whole.ndjson{suffix}").write_bytes(compress(b"\n".join(lines[:10]) + b"\n"))
    (tmp_path / "integrations.json").write_bytes(orjson.dumps(_config(tmp_path)))
    done = deliver(f"--integrations={tmp_path / 'integrations.json'}", f"--input={tmp_path / 'in' / '*'}",
                   f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}")
    assert done.returncode == 1, done.stderr
    assert "damaged or cut short" in done.stderr
    dead = [d for d in dead_letters(tmp_path / "dead") if d["reason"] == "corrupt_input"]
    assert len(dead) == 1 and f"cut.ndjson{suffix}" in dead[0]["error"]
    # What the decompressor can still give, whole lines only, is what was read and delivered.
    readable = _readable_prefix(cut, suffix)
    complete = readable.count(b"\n")
    assert f"{complete} lines were read" in dead[0]["error"]
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    # I1: the 10 whole-file lines, the complete lines before the damage, and the damaged rest as one input
    check_conservation(summary, input_events=10 + complete + 1)
    ids = check_no_duplicate(tmp_path / "lake")
    assert summary["integrations"]["lake"]["delivered"] == len(ids) <= 10 + complete


def _readable_prefix(data: bytes, suffix: str) -> bytes:
    if suffix in (".zst", ".deflate"):  # the libraries' own one-shot decoders: all a cut stream still gives
        import zstandard

        return (zstandard.ZstdDecompressor() if suffix == ".zst" else zlib).decompressobj().decompress(data)
    opener = {".gz": gzip.GzipFile, ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile}[suffix]
    import io

    out = b""
    with opener(fileobj=io.BytesIO(data)) if suffix == ".gz" else opener(io.BytesIO(data)) as fh:
        try:
            while chunk := fh.read(1 << 16):
                out += chunk
        except (EOFError, OSError):
            pass
    return out


def test_a_corrupt_gzip_body_is_a_dead_letter_too(tmp_path):
    lines = generate(50, seed=6, bad=False)[0]
    data = bytearray(gzip.compress(b"\n".join(lines) + b"\n"))
    data[len(data) // 2] ^= 0xFF  # a flipped byte: a bad block or a CRC mismatch at the end
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.ndjson.gz").write_bytes(bytes(data))
    (tmp_path / "integrations.json").write_bytes(orjson.dumps(_config(tmp_path)))
    done = deliver(f"--integrations={tmp_path / 'integrations.json'}", f"--input={tmp_path / 'in' / '*'}",
                   f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}")
    assert done.returncode == 1, done.stderr
    assert [d["reason"] for d in dead_letters(tmp_path / "dead")].count("corrupt_input") == 1
    check_conservation(orjson.loads((tmp_path / "summary.json").read_bytes()))
    check_no_duplicate(tmp_path / "lake")
