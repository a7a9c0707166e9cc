"""How event batches (Arrow tables) cross a shuffle: Arrow IPC with LZ4-compressed buffers.

Without it Beam pickles each table. Pickle keeps whole parent buffers for sliced tables and compresses
nothing, and a batch runner holds every shuffled element in memory, so this coder is what keeps the job's
peak memory near a quarter of the input size. ``ArrowTableCoder`` is registered for ``pyarrow.Table``:
give a transform ``.with_output_types(typing.Tuple[K, pyarrow.Table])`` and its shuffle uses it.
"""
from __future__ import annotations

import pyarrow as pa
from apache_beam import coders

_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
_UNCOMPRESSED = pa.ipc.IpcWriteOptions(compression=None)
# Below this many rows LZ4 saves nothing (the buffers are tiny) and costs ~20x the encoding time, one frame
# per buffer: many small partitions (tenants x hours) make hundreds of thousands of such tables.
COMPRESS_FROM_ROWS = 256


def encode_table(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    options = _OPTIONS if table.num_rows >= COMPRESS_FROM_ROWS else _UNCOMPRESSED
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


class ArrowTableCoder(coders.Coder):
    """``pyarrow.Table`` <-> Arrow IPC stream bytes (LZ4)."""

    def encode(self, value: pa.Table) -> bytes:
        return encode_table(value)

    def decode(self, encoded: bytes) -> pa.Table:
        return decode_table(encoded)

    def estimate_size(self, value: pa.Table) -> int:
        # Beam sizes elements for its metrics by encoding them unless told; the in-memory size will do.
        return value.nbytes

    def is_deterministic(self) -> bool:
        return False  # never used as a key

    def to_type_hint(self):
        return pa.Table

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


coders.registry.register_coder(pa.Table, ArrowTableCoder)
