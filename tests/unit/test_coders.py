"""The shuffle coder for Arrow tables: exact round trips for small (uncompressed) and large (LZ4) tables,
slices included, and small tables encoded without LZ4 frames."""
import pyarrow as pa
import pytest

from transforms.coders import COMPRESS_FROM_ROWS, ArrowTableCoder


def table(rows: int) -> pa.Table:
    return pa.table({"event_id": [f"e{i}" for i in range(rows)],
                     "timestamp": pa.array(range(rows), pa.timestamp("us", tz="UTC")),
                     "properties": [None if i % 3 else '{"a": 1}' for i in range(rows)]})


@pytest.mark.parametrize("rows", [0, 1, COMPRESS_FROM_ROWS - 1, COMPRESS_FROM_ROWS, 5000])
def test_round_trip(rows):
    coder = ArrowTableCoder()
    t = table(rows)
    assert coder.decode(coder.encode(t)).equals(t)
    if rows > 2:
        part = t.slice(1, rows - 2)
        assert coder.decode(coder.encode(part)).equals(part)


def uncompressed(t: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema, options=pa.ipc.IpcWriteOptions(compression=None)) as writer:
        writer.write_table(t)
    return sink.getvalue().to_pybytes()


def test_small_tables_skip_lz4_large_ones_use_it():
    coder = ArrowTableCoder()
    small = table(COMPRESS_FROM_ROWS - 1)
    assert coder.encode(small) == uncompressed(small)
    big = table(20_000)
    assert len(coder.encode(big)) < len(uncompressed(big)) * 0.8
