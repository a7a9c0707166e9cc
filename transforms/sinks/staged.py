"""What the staged-load warehouses (Snowflake, Redshift) share: deterministic batch files, staged then
loaded, with rows the warehouse rejects isolated and dead-lettered.

Flow per integration::

    event batches -> warehouse rows keyed by UTC day of ``timestamp`` -> GroupByKey
      -> per day: sort by (timestamp, event_id) -> files of at most ``batch_size`` rows
      -> loader.stage(files) -> loader.load(files) -> per-file outcome

A file's name is derived from the integration, the day and its event ids, so a retried or re-run batch
produces the same name and the same bytes (gzip without a timestamp): stages and load histories
recognise it. A vendor supplies a ``Loader`` (the protocol below) and a function opening one,
``open_loader(integration_id, config) -> Loader``, called once per worker.

A refused file of several rows is split in halves and the halves staged and loaded again, down to
single rows, so the rows the warehouse accepts land and each refused row becomes a ``sink_rejected``
dead letter carrying the warehouse's own message (at most about 2·log2(n) extra loads per bad row).
"""
from __future__ import annotations

import hashlib
import typing
from dataclasses import dataclass, field

import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from transforms import coders, deadletter, formats
from transforms.deadletter import DEAD_LETTERS
from transforms.profiles.warehouse import TIME_COLUMNS, to_warehouse
from transforms.sinks.base import WriteResult


@dataclass
class BatchFile:
    """One staged file: ``name`` is relative to the stage root (``<day>/<integration>-<id>.<ext>``)."""

    name: str
    data: bytes
    rows: pa.Table
    event_ids: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class LoadOutcome:
    """What happened to one file: ``loaded`` rows inserted, ``present`` rows the table already had (a
    file the warehouse says it loaded before counts its rows here), or ``error`` (the file was refused)."""

    loaded: int = 0
    present: int = 0
    error: str | None = None


@typing.runtime_checkable
class Loader(typing.Protocol):
    """A staged warehouse's loader: what a vendor module implements (``RedshiftLoader``, ``SnowflakeLoader``).
    Infrastructure errors (connection, permissions, missing table) raise, so the bundle fails and is retried
    and nothing is reported as delivered; refused data never raises."""

    def check_target(self) -> list[str]:
        """Start-up check (preflight): problems with the target table, each a sentence; [] when fine."""

    def prepare(self, rows: pa.Table) -> tuple[pa.Table, int]:
        """Drop rows the table already holds (optional work: return ``(rows, 0)``); returns the rows left and
        how many were dropped."""

    def stage(self, files: list[BatchFile]) -> None:
        """Upload the files to the stage; idempotent by name."""

    def load(self, files: list[BatchFile]) -> dict[str, LoadOutcome]:
        """Load staged files; each file's outcome, with ``error`` set (the warehouse's message) for a refused
        file."""

    def close(self) -> None:
        """Release connections; called at worker teardown."""


def batch_name(integration_id: str, day: str, event_ids: typing.Sequence[str], extension: str) -> str:
    """``<day>/<integration>-<24 hex>.<ext>``: the same events always give the same name. Pure."""
    digest = hashlib.sha256("\x00".join([integration_id, day, *event_ids]).encode()).hexdigest()[:24]
    return f"{day}/{integration_id}-{digest}{extension}"


# 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC: read by Redshift's TIMEFORMAT 'auto' and Snowflake's TIMESTAMP_NTZ alike
# (no 'T', no zone suffix to be interpreted differently).
WAREHOUSE_TIME = "%Y-%m-%d %H:%M:%S"


def ndjson_gzip(rows: pa.Table) -> bytes:
    """The warehouse rows as gzip NDJSON (``formats``): JSON columns as nested JSON, times as UTC text, nulls
    kept. Deterministic bytes (gzip header without a timestamp). Pure."""
    return formats.encode("json", to_warehouse(rows), "gzip", time_format=WAREHOUSE_TIME, nulls=True)


def parquet_bytes(rows: pa.Table) -> bytes:
    """The warehouse rows as Parquet (snappy); JSON columns are strings holding JSON, times are UTC
    microseconds without a zone (TIMESTAMP_NTZ). Pure."""
    table = to_warehouse(rows)
    for name in TIME_COLUMNS:
        idx = table.schema.get_field_index(name)
        table = table.set_column(idx, name, table[name].cast(pa.timestamp("us")))
    return formats.encode("parquet", table, "snappy")


ENCODERS = {"json": (ndjson_gzip, ".json.gz"), "parquet": (parquet_bytes, ".parquet")}


def make_file(integration_id: str, day: str, rows: pa.Table, file_format: str) -> BatchFile:
    encode, extension = ENCODERS[file_format]
    ids = rows["event_id"].to_pylist()
    return BatchFile(batch_name(integration_id, day, ids, extension), encode(rows), rows, ids)


def split_batches(rows: pa.Table, batch_size: int) -> list[pa.Table]:
    """Rows sorted by (timestamp, event_id) and cut into batches of at most ``batch_size``. Pure."""
    rows = rows.sort_by([("timestamp", "ascending"), ("event_id", "ascending")])
    return [rows.slice(start, batch_size) for start in range(0, rows.num_rows, batch_size)]


def load_isolating_rejects(loader: Loader, integration_id: str, day: str, batches: list[pa.Table], file_format: str):
    """Stage and load ``batches``; refused files are halved until the refused rows are alone.
    Returns ``(loaded, present, rejected)`` with ``rejected`` a list of ``(row dict, message)``."""
    loaded = present = 0
    rejected: list[tuple[dict, str]] = []
    pending = [b for b in batches if b.num_rows]
    while pending:
        files = [make_file(integration_id, day, rows, file_format) for rows in pending]
        loader.stage(files)
        outcomes = loader.load(files)
        pending = []
        for f in files:
            outcome = outcomes[f.name]
            if outcome.error is None:
                loaded += outcome.loaded
                present += outcome.present
            elif f.rows.num_rows == 1:
                rejected.append((f.rows.to_pylist()[0], outcome.error))
            else:
                half = f.rows.num_rows // 2
                pending += [f.rows.slice(0, half), f.rows.slice(half)]
    return loaded, present, rejected


class _KeyByDayFn(beam.DoFn):
    """Warehouse rows of a batch, split by the UTC day of ``timestamp``: ``(day, rows)``."""

    def process(self, table):
        days = pc.strftime(table["timestamp"], format="%Y-%m-%d")
        for day in pc.unique(days).to_pylist():
            yield day, table.filter(pc.equal(days, day))


class _LoadDayFn(beam.DoFn):
    """All rows of one day -> batch files staged and loaded by the vendor's loader."""

    def __init__(self, integration_id: str, config, open_loader: typing.Callable[..., Loader], file_format: str):
        self._iid = integration_id
        self._config = config
        self._open_loader = open_loader
        self._format = file_format

    def setup(self):
        self._loader = None
        ns = deadletter.NAMESPACE
        self._delivered = Metrics.counter(ns, f"{self._iid}.delivered")
        self._inserted = Metrics.counter(ns, f"{self._iid}.rows_inserted")
        self._present = Metrics.counter(ns, f"{self._iid}.rows_already_present")
        self._files = Metrics.counter(ns, f"{self._iid}.files")

    def process(self, element):
        day, slices = element
        slices = list(slices)
        if not slices:  # an empty streaming pane
            return
        rows = pa.concat_tables(slices)
        if self._loader is None:
            self._loader = self._open_loader(self._iid, self._config)
        rows, already = self._loader.prepare(rows)
        batches = split_batches(rows, self._config.batch_size) if rows.num_rows else []
        loaded, present, rejected = load_isolating_rejects(self._loader, self._iid, day, batches, self._format)
        present += already
        self._delivered.inc(loaded + present)
        self._inserted.inc(loaded)
        self._present.inc(present)
        self._files.inc(len(batches))
        for row, message in rejected:
            deadletter.count("sink_rejected", self._iid)
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, deadletter.make_record(
                "sink_rejected", "sink", message, orjson.dumps(row, option=orjson.OPT_NAIVE_UTC).decode(),
                row.get("source_id"), integration_id=self._iid, event_id=row["event_id"]))
        yield {"day": day, "rows": loaded + present, "inserted": loaded, "already_present": present,
               "rejected": len(rejected)}

    def teardown(self):
        if getattr(self, "_loader", None) is not None:
            self._loader.close()


class WriteStagedLoads(beam.PTransform):
    """Prepared event batches -> staged files loaded by ``open_loader(integration_id, config)``.
    Returns ``{"files", "reports", "dead_letters"}`` (``files`` carries per-day load counts)."""

    def __init__(self, integration, open_loader: typing.Callable[..., Loader], file_format: str):
        super().__init__()
        self._integration = integration
        self._open_loader = open_loader
        self._format = file_format

    def expand(self, tables):
        integ = self._integration
        loads = (tables
                 | "ToWarehouseRows" >> beam.Map(to_warehouse).with_output_types(pa.Table)
                 | "KeyByDay" >> beam.ParDo(_KeyByDayFn()).with_output_types(tuple[str, pa.Table])
                 | "GroupByDay" >> coders.GroupTablesByKey()
                 | "StageAndLoad" >> beam.ParDo(_LoadDayFn(integ.integration_id, integ.config, self._open_loader,
                                                           self._format)).with_outputs(DEAD_LETTERS, main="loads"))
        return WriteResult(loads[DEAD_LETTERS], delivered=loads.loads)
