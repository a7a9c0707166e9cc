"""The shuffle coder for Arrow tables: exact round trips for small (one zstd frame over the message) and
large (zstd per buffer) tables, slices included, and both forms smaller than uncompressed IPC."""
import pyarrow as pa
import pytest

from transforms.coders import WHOLE_MESSAGE_BELOW_ROWS, WHOLE_MESSAGE_MAGIC, ArrowTableCoder


def table(rows: int) -> pa.Table:
    return pa.table({"event_id": [f"e{i}" for i in range(rows)],
                     "timestamp": pa.array(range(rows), pa.timestamp("us", tz="UTC")),
                     "properties": [None if i % 3 else '{"a": 1}' for i in range(rows)]})


@pytest.mark.parametrize("rows", [0, 1, 7, WHOLE_MESSAGE_BELOW_ROWS - 1, WHOLE_MESSAGE_BELOW_ROWS, 10_000])
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


@pytest.mark.parametrize("rows", [1, 8, 100, 20_000])
def test_encodings_are_smaller_than_plain_ipc(rows):
    t = table(rows)
    encoded = ArrowTableCoder().encode(t)
    assert encoded.startswith(WHOLE_MESSAGE_MAGIC) == (rows < WHOLE_MESSAGE_BELOW_ROWS)
    assert len(encoded) < len(uncompressed(t)) * 0.8


def test_group_tables_by_key_groups_tables_that_cross_the_shuffle_as_bytes():
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.coders import GroupTablesByKey

    p = TestPipeline(runner="FnApiRunner")
    grouped = (p
               | beam.Create([("a", 3), ("b", 5), ("a", 2)])
               | beam.Map(lambda kv: (kv[0], table(kv[1])))
               | "Group" >> GroupTablesByKey())
    rows = grouped | beam.Map(lambda kv: (kv[0], sorted(t.num_rows for t in kv[1]), all(
        t.equals(table(t.num_rows)) for t in kv[1])))
    assert_that(rows, equal_to([("a", [2, 3], True), ("b", [5], True)]))
    # What the runner groups is bytes (a KV coder whose value is the bytes coder), not tables.
    proto = p.to_runner_api()
    gbk = next(t for t in proto.components.transforms.values() if t.unique_name == "Group/Group")
    kv_coder = proto.components.coders[proto.components.pcollections[next(iter(gbk.inputs.values()))].coder_id]
    while kv_coder.spec.urn != "beam:coder:kv:v1":  # under the windowed-value wrapper, if any
        kv_coder = proto.components.coders[kv_coder.component_coder_ids[0]]
    assert proto.components.coders[kv_coder.component_coder_ids[1]].spec.urn == "beam:coder:bytes:v1"
    p.run().wait_until_finish()
