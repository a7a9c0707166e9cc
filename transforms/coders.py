"""How event batches (Arrow tables) cross a shuffle: Arrow IPC with zstd compression (level 1), or plain
(uncompressed) Arrow IPC in spill files.

Without it Beam pickles each table. Pickle keeps whole parent buffers for sliced tables and compresses
nothing, and a batch runner holds every shuffled element in memory. ``ArrowTableCoder`` is registered for
``pyarrow.Table``: give a transform ``.with_output_types(typing.Tuple[K, pyarrow.Table])`` and its shuffle
uses it.

Group tables with ``GroupTablesByKey`` rather than ``GroupByKey``: it encodes them before the shuffle and
decodes them after it, so they cross as opaque bytes. The local batch runner (FnApiRunner) decodes every
grouped value in its one controller process to group it, and holds it decoded until the next stage: with
a table coder that is a serial decode and re-encode of all the data between stages, and uncompressed
tables in the controller's memory.

Why zstd at level 1 and not LZ4: a batch runner holds every shuffled byte, and its controller copies a
grouped PCollection again when it hands it to the workers. Level 1 makes event batches about a third smaller
than LZ4 (14 MB against 20 MB per 200,000 events); on 1M events the job's peak memory fell by about 150 MiB
for the same run time (encoding costs a little more, the smaller shuffle gives it back).

Spilling (local runners): a local batch runner keeps every shuffled byte in its controller's memory, and
hands each grouped PCollection to the workers through it. ``spill_shuffles(pipeline, directory)`` makes the
``GroupTablesByKey`` transforms applied to ``pipeline`` append each encoded batch to a file in ``directory``
(one per bundle) and pass only its place through the shuffle, as a batch engine's disk-based shuffle does;
the grouping reads the batches back. ``with spill_locally(pipeline):`` around building and running it gives
a batch run on a local runner a fresh directory for this and removes it when the run ends
(``--shuffle_spill_dir`` picks where, ``--no_shuffle_spill`` turns it off). Dataflow and Flink shuffle
outside the workers' memory already, and their workers cannot see the launching machine's disk: they never
spill. On 1M events (two worker processes) spilling took the job's peak from 1500 to about 1020 MiB, and its
time from 20.6 s to 15.4-20.1 s (this machine's noise): the controller no longer holds or relays the data.

Spill files are not compressed: they are local, short-lived and read back at once, so the page cache holds
them, and compressing cost more CPU than the disk writes it saved. On the parse stage's batches (about 650
rows) LZ4 took 340 ns a row to encode and 120 to decode, plain IPC 84 and 32, for files 3.4x as large; on
1M events the job took 7.51 s instead of 7.77 (median of four alternating runs each) and its peak memory fell
from about 840 to 805 MiB. The price is disk: about 630 MB of spill files per million events at the peak.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import typing
import uuid
import weakref

import apache_beam as beam
import pyarrow as pa
from apache_beam import coders
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions


class TableForm(typing.NamedTuple):
    """How a table is compressed: ``codec`` per buffer for large tables, one ``codec`` frame over the
    whole message (marked by ``magic``) for small ones."""
    magic: bytes
    codec: pa.Codec
    options: pa.ipc.IpcWriteOptions


_ZSTD1 = pa.Codec("zstd", compression_level=1)
# Tables crossing a runner's shuffle: as small as a fast codec makes them (the runner holds or ships them).
SHUFFLE = TableForm(b"BHZ2", _ZSTD1, pa.ipc.IpcWriteOptions(compression=_ZSTD1))
_UNCOMPRESSED = pa.ipc.IpcWriteOptions(compression=None)
# Small tables (many small partitions: tenants x hours make hundreds of thousands of them) are written
# uncompressed and the whole message is compressed as one frame: per-buffer compression spends one frame per
# buffer (about 0.3 ms a table) and saves little; one frame over the message, schema included, is several
# times faster and smaller. Large tables keep per-buffer compression (no second copy of a big message).
WHOLE_MESSAGE_BELOW_ROWS = 4096


def _ipc(table: pa.Table, options) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue()


def encode_table(table: pa.Table) -> bytes:
    """``table`` as bytes ``decode_table`` reads, compressed the way ``SHUFFLE`` says."""
    if table.num_rows >= WHOLE_MESSAGE_BELOW_ROWS:
        return _ipc(table, SHUFFLE.options).to_pybytes()
    raw = _ipc(table, _UNCOMPRESSED)
    return SHUFFLE.magic + raw.size.to_bytes(8, "little") + SHUFFLE.codec.compress(raw, asbytes=True)


def spill_bytes(table: pa.Table) -> pa.Buffer:
    """``table`` as a plain Arrow IPC stream, for a spill file (``decode_table`` reads it back): see the
    module docstring for why spill files are not compressed."""
    return _ipc(table, _UNCOMPRESSED)


def decode_table(data: bytes) -> pa.Table:
    """The table ``encode_table`` or ``spill_bytes`` encoded, in any form."""
    # An IPC stream starts with 0xFFFFFFFF, so the magic of a compressed message cannot be mistaken for one.
    if bytes(data[:4]) == SHUFFLE.magic:
        size = int.from_bytes(data[4:12], "little")
        return pa.ipc.open_stream(SHUFFLE.codec.decompress(memoryview(data)[12:], decompressed_size=size)).read_all()
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


class ArrowTableCoder(coders.Coder):
    """``pyarrow.Table`` <-> Arrow IPC stream bytes (zstd)."""

    def encode(self, value: pa.Table) -> bytes:
        return encode_table(value)

    def decode(self, encoded: bytes) -> pa.Table:
        return decode_table(encoded)

    def estimate_size(self, value: pa.Table) -> int:
        # Beam sizes elements for its metrics by encoding them unless told; the buffers' size will do.
        # ``get_total_buffer_size`` sums whole buffers (a slice counts its parent's); ``nbytes`` works out the
        # bytes a slice references, which on the shuffled slices cost 1.7 s of worker time per 1M events (py-spy).
        return value.get_total_buffer_size()

    def is_deterministic(self) -> bool:
        return False  # never used as a key

    def to_type_hint(self):
        return pa.Table

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


coders.registry.register_coder(pa.Table, ArrowTableCoder)


def _to_bytes(kv):
    return kv[0], encode_table(kv[1])


def _from_bytes(kv):
    return kv[0], [decode_table(data) for data in kv[1]]


class ShuffleOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--shuffle_spill_dir", default=None,
                            help="Local batch runs: where event batches crossing a shuffle are written (a fresh "
                                 "folder per run in this directory, removed at the end; default: the system "
                                 "temp directory). About 630 MB per million events at the peak.")
        parser.add_argument("--no_shuffle_spill", action="store_true", default=False,
                            help="Local batch runs: keep shuffled event batches in the runner's memory instead.")


# The local runners, by the names --runner takes (a dotted path ends with one of them).
LOCAL_RUNNERS = ("DirectRunner", "SwitchingDirectRunner", "FnApiRunner", "BundleBasedDirectRunner")


def is_local_batch(options: PipelineOptions) -> bool:
    standard = options.view_as(StandardOptions)
    runner = standard.runner if isinstance(standard.runner, str) else type(standard.runner).__name__
    return not standard.streaming and runner.rsplit(".", 1)[-1] in LOCAL_RUNNERS


def spill_options_error(options: PipelineOptions) -> str | None:
    """Why the spill options cannot apply to this run, or None."""
    spill = options.view_as(ShuffleOptions)
    if spill.shuffle_spill_dir and not is_local_batch(options):
        return ("--shuffle_spill_dir: only local batch runs spill shuffles (a remote runner's workers cannot "
                "see this machine's disk, and Dataflow and Flink shuffle outside their memory already)")
    if spill.shuffle_spill_dir and not spill.no_shuffle_spill and not os.path.isdir(spill.shuffle_spill_dir):
        return "--shuffle_spill_dir: not an existing directory"
    return None


_SPILL_DIRS: weakref.WeakKeyDictionary[beam.Pipeline, str] = weakref.WeakKeyDictionary()


def spill_shuffles(pipeline: beam.Pipeline, directory: str) -> None:
    """Make the ``GroupTablesByKey`` transforms applied to ``pipeline`` from now on pass batches through files
    in ``directory`` (see the module docstring). Every worker must see ``directory``: local runners only."""
    _SPILL_DIRS[pipeline] = directory


@contextlib.contextmanager
def spill_locally(pipeline: beam.Pipeline):
    """Around building and running ``pipeline``: when its options make it a batch run on a local runner (and
    not ``--no_shuffle_spill``), give it a fresh spill directory (``spill_shuffles``) and remove that, with
    everything in it, when the block ends. Yields the directory, or None for any other run."""
    options = pipeline.options
    spill = options.view_as(ShuffleOptions)
    if spill.no_shuffle_spill or not is_local_batch(options):
        yield None
        return
    sweep_stale_spills(spill.shuffle_spill_dir or tempfile.gettempdir())
    directory = tempfile.mkdtemp(prefix=SPILL_PREFIX, dir=spill.shuffle_spill_dir)
    with open(os.path.join(directory, SPILL_OWNER), "w") as fh:
        fh.write(process_identity(os.getpid()) or "")
    try:
        spill_shuffles(pipeline, directory)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


SPILL_PREFIX = "beamhouse-shuffle-"
SPILL_OWNER = "_owner"  # the process that made the folder: its pid and start time (pids are reused)
STALE_SPILL_SECONDS = 86_400  # a folder without an owner file (from an older version) this old is stale


def process_identity(pid: int) -> str | None:
    """``"<pid> <start time in clock ticks>"`` of a running process, or None (no such process, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return f"{pid} {int(fields[19])}"  # field 22 of stat: starttime
    except (OSError, IndexError, ValueError):
        return None


def sweep_stale_spills(parent: str) -> int:
    """Remove spill folders under ``parent`` whose run is gone (killed runs never removed theirs: about
    630 MB a million events each). Only folders named ``beamhouse-shuffle-*`` holding an owner file whose
    process no longer runs, or, without one, untouched for a day. Returns how many."""
    removed = 0
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(SPILL_PREFIX) and e.is_dir()]
    except OSError:
        return 0
    for entry in entries:
        try:
            with open(os.path.join(entry.path, SPILL_OWNER)) as fh:
                owner = fh.read().strip()
            stale = bool(owner) and process_identity(int(owner.split()[0])) != owner
        except FileNotFoundError:
            stale = time.time() - entry.stat().st_mtime > STALE_SPILL_SECONDS
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


class _SpillFn(beam.DoFn):
    """``(key, Table)`` -> ``(key, "file:offset:length")``: the encoded table appended to this bundle's
    spill file. One file per bundle, not per batch: creating a file cost about 0.35 ms on this machine's
    disk, appending almost nothing. The file is closed when the bundle finishes, before any consumer of the
    shuffle runs. Names are unique per bundle, so a retried bundle never touches a file that another
    attempt's output refers to; the directory goes as a whole when the run ends."""

    def __init__(self, directory: str):
        self._dir = directory

    def start_bundle(self):
        self._file = None

    def process(self, kv):
        if self._file is None:
            self._name = uuid.uuid4().hex
            # No fsync: the files live only as long as the run, and a crash fails the run anyway.
            self._file = open(os.path.join(self._dir, self._name), "xb")
            self._offset = 0
        data = spill_bytes(kv[1])
        self._file.write(data)
        ref = f"{self._name}:{self._offset}:{data.size}"
        self._offset += data.size
        yield kv[0], ref

    def finish_bundle(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def teardown(self):  # a bundle that failed never reached finish_bundle
        if getattr(self, "_file", None) is not None:
            self._file.close()


class _UnspillFn(beam.DoFn):
    """``(key, ["file:offset:length"])`` -> ``(key, [Table])``."""

    def __init__(self, directory: str):
        self._dir = directory

    def process(self, kv):
        tables = []
        for ref in kv[1]:
            name, offset, length = ref.split(":")
            with open(os.path.join(self._dir, name), "rb") as fh:
                data = os.pread(fh.fileno(), int(length), int(offset))
            if len(data) != int(length):
                raise OSError(f"spill file {name} is shorter than expected (removed or truncated during the run?)")
            tables.append(decode_table(data))
        yield kv[0], tables


class GroupTablesByKey(beam.PTransform):
    """``(key, Table)`` -> ``(key, list[Table])``, as ``GroupByKey`` groups, with the tables crossing the
    shuffle as compressed IPC bytes, or as files when the pipeline spills (see the module docstring). Keys
    need a deterministic coder, as for ``GroupByKey``; windowing and triggers apply unchanged."""

    def expand(self, keyed_tables):
        directory = _SPILL_DIRS.get(keyed_tables.pipeline)
        if directory is None:
            encode, decode = beam.Map(_to_bytes), beam.Map(_from_bytes)
            crossing = bytes
        else:
            encode, decode = beam.ParDo(_SpillFn(directory)), beam.ParDo(_UnspillFn(directory))
            crossing = str
        return (keyed_tables
                | "Encode" >> encode.with_output_types(tuple[typing.Any, crossing])
                | "Group" >> beam.GroupByKey()
                | "Decode" >> decode.with_output_types(tuple[typing.Any, list[pa.Table]]))
