"""The shuffle coder for Arrow tables: exact round trips for small (one frame over the message) and large
(per buffer) tables, slices included, in the shuffle's zstd (smaller than uncompressed IPC) and the spill
files' plain IPC; grouping with and without spilling to files, and when a run spills."""
import os

import pyarrow as pa
import pytest

from transforms.coders import SHUFFLE, WHOLE_MESSAGE_BELOW_ROWS, ArrowTableCoder, decode_table, encode_table, spill_bytes


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


@pytest.mark.parametrize("rows", [0, 7, WHOLE_MESSAGE_BELOW_ROWS, 10_000])
def test_spill_form_is_plain_ipc_and_round_trips_apart_from_the_shuffle_form(rows):
    t = table(rows)
    spilled, shuffled = spill_bytes(t).to_pybytes(), encode_table(t)
    assert decode_table(spilled).equals(t) and decode_table(shuffled).equals(t)
    assert spilled == uncompressed(t)  # not compressed: a plain IPC stream any Arrow reader takes
    assert shuffled.startswith(SHUFFLE.magic) == (rows < WHOLE_MESSAGE_BELOW_ROWS)
    if rows > 2:
        part = t.slice(1, rows - 2)
        assert decode_table(spill_bytes(part)).equals(part)
        assert spill_bytes(part).size < spill_bytes(t).size  # a slice's bytes, not its parent's


def uncompressed(t: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema, options=pa.ipc.IpcWriteOptions(compression=None)) as writer:
        writer.write_table(t)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("rows", [1, 8, 100, 20_000])
def test_encodings_are_smaller_than_plain_ipc(rows):
    t = table(rows)
    encoded = ArrowTableCoder().encode(t)
    assert encoded.startswith(SHUFFLE.magic) == (rows < WHOLE_MESSAGE_BELOW_ROWS)
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


def _gbk_value_coder_urn(proto, name):
    gbk = next(t for t in proto.components.transforms.values() if t.unique_name == name)
    kv_coder = proto.components.coders[proto.components.pcollections[next(iter(gbk.inputs.values()))].coder_id]
    while kv_coder.spec.urn != "beam:coder:kv:v1":
        kv_coder = proto.components.coders[kv_coder.component_coder_ids[0]]
    return proto.components.coders[kv_coder.component_coder_ids[1]].spec.urn


def test_a_spilling_pipeline_groups_tables_through_files(tmp_path):
    """With ``spill_shuffles`` the shuffle carries file names (strings) and the tables go through files in the
    spill directory (appended to one file per bundle); the groups are the same as without it."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.coders import GroupTablesByKey, spill_shuffles

    p = TestPipeline(runner="FnApiRunner")
    spill_shuffles(p, str(tmp_path))
    sizes = [("a", 3), ("b", 5), ("a", 2), ("a", WHOLE_MESSAGE_BELOW_ROWS + 1)]
    grouped = (p
               | beam.Create(sizes)
               | beam.Map(lambda kv: (kv[0], table(kv[1])))
               | "Group" >> GroupTablesByKey())
    rows = grouped | beam.Map(lambda kv: (kv[0], sorted(t.num_rows for t in kv[1]), all(
        t.equals(table(t.num_rows)) for t in kv[1])))
    assert_that(rows, equal_to([("a", [2, 3, WHOLE_MESSAGE_BELOW_ROWS + 1], True), ("b", [5], True)]))
    assert _gbk_value_coder_urn(p.to_runner_api(), "Group/Group") == "beam:coder:string_utf8:v1"
    p.run().wait_until_finish()
    files = list(tmp_path.iterdir())
    assert 1 <= len(files) <= len(sizes)
    assert sum(f.stat().st_size for f in files) == sum(spill_bytes(table(n)).size for _, n in sizes)


def test_spill_locally_only_for_local_batch_runs_and_removed_after(tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.coders import _SPILL_DIRS, spill_locally, spill_options_error

    def pipeline(argv):  # built on the local runner: what decides is the runner the options name
        return beam.Pipeline(runner="FnApiRunner", options=PipelineOptions(argv))

    local = ["--runner=FnApiRunner", f"--shuffle_spill_dir={tmp_path}"]
    assert spill_options_error(PipelineOptions(local)) is None
    p = pipeline(local)
    with spill_locally(p) as spill:
        assert spill is not None and os.path.dirname(spill) == str(tmp_path) and _SPILL_DIRS[p] == spill
        open(os.path.join(spill, "batch"), "wb").close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError), spill_locally(pipeline(local)):  # removed when the run fails too
        raise RuntimeError("run failed")
    assert list(tmp_path.iterdir()) == []
    for argv in (["--runner=FnApiRunner", "--no_shuffle_spill"], ["--runner=FnApiRunner", "--streaming"],
                 ["--runner=DataflowRunner"], ["--runner=FlinkRunner"]):
        p = pipeline(argv)
        with spill_locally(p) as spill:
            assert spill is None and p not in _SPILL_DIRS, argv
    for runner in ("DirectRunner", "apache_beam.runners.portability.fn_api_runner.FnApiRunner"):
        with spill_locally(pipeline([f"--runner={runner}"])) as spill:
            assert spill is not None and os.path.isdir(spill)
    remote = PipelineOptions(["--runner=DataflowRunner", f"--shuffle_spill_dir={tmp_path}"])
    assert "only local batch runs" in spill_options_error(remote)
    missing = PipelineOptions(["--runner=FnApiRunner", f"--shuffle_spill_dir={tmp_path / 'nope'}"])
    assert spill_options_error(missing) == "--shuffle_spill_dir: not an existing directory"


def test_spilled_batches_share_a_bundle_file_and_a_truncated_one_is_an_error(tmp_path):
    from transforms.coders import _SpillFn, _UnspillFn

    spill = _SpillFn(str(tmp_path))
    spill.start_bundle()
    refs = [next(spill.process(("k", table(n)))) for n in (3, WHOLE_MESSAGE_BELOW_ROWS + 5, 1)]
    spill.finish_bundle()
    assert len(list(tmp_path.iterdir())) == 1 and len({ref.split(":")[0] for _, ref in refs}) == 1
    (key, tables), = _UnspillFn(str(tmp_path)).process(("k", [ref for _, ref in reversed(refs)]))
    assert key == "k" and [t.num_rows for t in tables] == [1, WHOLE_MESSAGE_BELOW_ROWS + 5, 3]
    assert all(t.equals(table(t.num_rows)) for t in tables)
    path = next(tmp_path.iterdir())
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(OSError, match="shorter than expected"):
        list(_UnspillFn(str(tmp_path)).process(("k", [refs[-1][1]])))
