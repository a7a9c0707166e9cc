"""Vendor ``files``: a partitioned lake of NDJSON, CSV or Parquet files on the local disk or any Beam
filesystem; also the writer behind the ``s3`` and ``gcs`` vendors.

Config (plus the common ``batch_size``, ``batch_interval_seconds``, ``consent``, ``properties``)::

    {"path": "out/lake", "file_format": "parquet", "compression": "snappy",
     "partition_by": "year={yyyy}/month={MM}/day={dd}/hour={HH}", "partition_time": "timestamp",
     "file_name": "events-{epoch}-{id}"}

Events are grouped by route (object stores: bucket, prefix and key) and partition; where the layout or
the route separates tenants (``{tenant_id}`` in ``partition_by``, a tenant's own route or key) a file holds
one tenant, so its usage is exact and it carries that tenant's key. Elsewhere files mix tenants (fewer,
larger files) and a file's bytes are attributed to its tenants in proportion to their events. Each group's
events, sorted by partition time then ``event_id``, are cut into files of at most ``batch_size`` events
named by ``file_name`` (default ``events-<epoch>-<batch id>``: epoch = the file's earliest event time in
seconds, the id derived from the partition and the file's event ids). Files are published with the
protocol in ``transforms.commit``; then one delivery report per route under ``_reports/``.
"""
from __future__ import annotations

import typing
import uuid
import zlib
from typing import Literal

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from transforms import coders, commit, deadletter, formats, ledger, partitioning
from transforms.integrations import BaseDestinationConfig
from transforms.profiles import hackle as hackle_profile
from transforms.profiles import statsig as statsig_profile
from transforms.profiles.warehouse import to_warehouse
from transforms.routes import Route, UnknownTenant
from transforms.secrets import SecretField
from transforms.sinks.base import Destination
from transforms.storage import storage_for

DEAD_LETTERS = "dead_letters"
NO_TENANT = "(none)"  # how events without a tenant appear in usage metrics


class Quota(BaseModel):
    """Per-tenant daily byte quota: ``{"daily_bytes": 10000000000, "tenants": {"acme": 5e10},
    "action": "warn"}``. Bytes written for a tenant in one UTC day of delivery (a batch run is one
    day) are compared with its limit; ``warn`` logs and reports it in the summary, ``fail`` also makes the
    run exit with status 1 once delivery is done (no data is dropped for a quota)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    daily_bytes: int | None = Field(None, ge=1)
    """Bytes a tenant may have written per UTC day of delivery, unless `tenants` names its own limit."""
    tenants: dict[str, int] = Field(default_factory=dict)
    """Per-tenant limits: tenant id -> bytes per day."""
    action: Literal["warn", "fail"] = "warn"
    """`warn` logs and reports an exceeded quota; `fail` also exits 1 after delivery (nothing is dropped)."""

    def limit(self, tenant: str) -> int | None:
        return self.tenants.get(tenant, self.daily_bytes)


class HackleSettings(BaseModel):
    """``profile: hackle`` options (see ``transforms.profiles.hackle``)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    metric_property: str = Field("revenue", min_length=1, max_length=256)
    """The property whose numeric value becomes `metric_value`."""
    identifier_paths: dict[str, str] = Field(default_factory=dict)
    """Extra identifiers: name -> dotted path in `context`/`properties`/`traits`."""

    @field_validator("identifier_paths")
    @classmethod
    def _paths(cls, value):
        for name, path in value.items():
            if path.split(".")[0] not in ("context", "properties", "traits"):
                raise ValueError(f"identifier {name!r}: path must start with context, properties or traits")
        return value


class StatsigMetric(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    name: str = Field(min_length=1, max_length=127)
    """The metric's name in Statsig."""
    event: str = Field(min_length=1)
    """The event (`event` column) it is computed from."""
    aggregate: Literal["count", "sum", "ratio"] = "count"
    """Per unit and day: count of events, sum of `property`, or their ratio."""
    property: str | None = None
    """The property summed (needed by `sum` and `ratio`)."""
    id_type: Literal["user_id", "stable_id"] = "user_id"
    """The unit: the user id, or the stable id (`anonymous_id`)."""

    @model_validator(mode="after")
    def _property(self):
        if self.aggregate != "count" and not self.property:
            raise ValueError(f"metric {self.name!r}: aggregate {self.aggregate} needs 'property'")
        return self


class StatsigSettings(BaseModel):
    """``profile: statsig`` options (see ``transforms.profiles.statsig``)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    timezone: str = "America/Los_Angeles"
    """Time zone of Statsig's days (IANA name)."""
    allowed_lateness_seconds: float = Field(3_600, ge=0, le=30 * 86_400)
    """A day is finished once data received this long after its end was delivered."""
    value_property: str = "value"
    """The property that becomes `event_value`."""
    metrics: list[StatsigMetric] = Field(default_factory=list)
    """Metrics computed per unit from each finished day's events."""
    signal: Literal["dataset", "mark_data_ready"] = "dataset"
    """How a finished day is signalled: a `finished_date` file, or Statsig's mark_data_ready call."""
    api_key: SecretField | None = None
    """Statsig server secret for `mark_data_ready` (a reference such as `env:STATSIG_KEY`)."""
    mark_data_ready_url: str = "https://api.statsig.com/v1/mark_data_ready"
    """The mark_data_ready endpoint."""
    mark_data_ready_types: list[Literal["metrics", "events"]] = Field(default_factory=lambda: ["metrics"])
    """The `type`s signalled, one call each."""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _signal(self):
        if self.signal == "mark_data_ready" and self.api_key is None:
            raise ValueError("signal mark_data_ready needs api_key (a server secret, e.g. env:STATSIG_KEY)")
        return self


class FileOutputConfig(BaseDestinationConfig):
    """What every file-writing vendor accepts: format, compression, layout and naming."""

    profile: Literal["warehouse", "hackle", "statsig"] = "warehouse"
    """Output row shape: `warehouse` (the 13 canonical columns), or an importer's: `hackle`, `statsig`
    (docs/events.md, Output profiles)."""
    hackle: HackleSettings = Field(default_factory=HackleSettings)
    """Settings of the `hackle` profile."""
    statsig: StatsigSettings = Field(default_factory=StatsigSettings)
    """Settings of the `statsig` profile."""
    partition_timezone: str = "UTC"
    """IANA time zone whose clock the layout's days and hours follow (e.g. `Asia/Seoul`); `UTC` by default."""
    file_format: Literal["json", "parquet", "csv"] = "json"
    """`json` (NDJSON), `parquet` or `csv`."""
    compression: Literal["gzip", "snappy", "zstd", "none"] | None = None
    """`gzip`, `zstd`, `none`; `snappy` for Parquet only."""
    partition_by: str = partitioning.DEFAULT_TEMPLATE
    """Template; time `{yyyy} {MM} {dd} {HH} {mm} {ss} {date}`, minute ranges `{min15}` (`00-15` … `45-60`) and
    `{min30}` (`00-30`, `30-60`), fields `{tenant_id} {app_id} {type} {event} {dialect}`, in any order."""
    partition_time: Literal["timestamp", "received_at"] = "timestamp"
    """`timestamp` (event time) or `received_at`, in UTC."""
    file_prefix: str = Field("events", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    """File names are `<prefix>-<epoch>-<batch id>.<ext>`."""
    file_name: str | None = None
    """Name template without extension: `{yyyy} {MM} {dd} {HH} {mm} {ss} {epoch}` (the file's earliest event),
    `{id}` (the batch id) and `{n}` (the file's number in its partition, in one generation); e.g. seed 003's
    `data_{yyyy}_{MM}_{dd}_{HH}_{mm}_{ss}`."""
    csv_separator: str = Field(",", min_length=1, max_length=1)
    """One character."""
    quota: Quota | None = None
    """`{"daily_bytes": N, "tenants": {"acme": N}, "action": "warn"}`: per-tenant bytes written per UTC day of
    delivery (a batch run is one day); `warn` logs and reports, `fail` also exits 1 after delivery. Nothing is
    dropped for a quota."""
    schedule_minutes: Literal[15, 30, 60] | None = Field(
        None, description="scheduled export (seed 002): in streaming, deliver every N minutes all that arrived")
    completion_marker: str | None = Field(
        None, pattern=r"^_[A-Za-z0-9_.-]{1,63}$",
        description="write this file (e.g. _SUCCESS) into each time partition once it is complete")
    completion_lateness_seconds: float = Field(
        3600, ge=0, description="a partition is complete when delivered data was received this long after its end")

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data):
        # Importer profiles fix the format and the daily layout their importer reads.
        if isinstance(data, dict) and data.get("profile") in ("hackle", "statsig"):
            profile = data["profile"]
            if data.get("file_format", "parquet") != "parquet":
                raise ValueError(f"profile {profile} writes Parquet (leave file_format out or set parquet)")
            data = {**data, "file_format": "parquet"}
            if profile == "statsig":
                if "partition_by" in data or "partition_timezone" in data:
                    raise ValueError("profile statsig has a fixed layout (events/, metrics/, signals/ by day "
                                     "in statsig.timezone); leave partition_by and partition_timezone out")
                tz = (data.get("statsig") or {}).get("timezone", "America/Los_Angeles")
                data.update(partition_by="events/{date}", partition_timezone=tz)
            else:
                data.setdefault("partition_by", "{date}")
        return data

    @model_validator(mode="before")
    @classmethod
    def _schedule(cls, data):
        # A schedule is the batch interval; batches are then cut by time only (the size limit at its maximum).
        if isinstance(data, dict) and data.get("schedule_minutes") is not None:
            if "batch_interval_seconds" in data:
                raise ValueError("give schedule_minutes or batch_interval_seconds, not both")
            data = dict(data)
            if isinstance(data["schedule_minutes"], int):
                data["batch_interval_seconds"] = data["schedule_minutes"] * 60
            data.setdefault("batch_size", 1_000_000)
        return data

    @field_validator("partition_by")
    @classmethod
    def _template(cls, value: str) -> str:
        partitioning.parse_template(value)  # raises ValueError with the reason
        return value

    @field_validator("partition_timezone")
    @classmethod
    def _partition_tz(cls, value: str) -> str:
        return StatsigSettings._tz(value)

    @model_validator(mode="after")
    def _daily(self):
        if self.profile == "hackle":
            fields = partitioning.parse_template(self.partition_by)
            if any(code in fields.strftime for code in ("%H", "%M", "%S")) or {"_min15", "_min30"} & set(fields.fields):
                raise ValueError("profile hackle stores data by day: partition_by must not go below a day")
        return self

    @model_validator(mode="after")
    def _completion(self):
        if self.completion_marker is not None and \
                partitioning.time_span(partitioning.parse_template(self.partition_by)) is None:
            raise ValueError("completion_marker needs a time placeholder in partition_by (partitions must end)")
        return self

    def completes_partitions(self) -> bool:
        """Whether partitions are tracked until complete (a completion marker, or Statsig's day signal)."""
        return self.completion_marker is not None or self.profile == "statsig"

    def completion_lateness_us(self) -> int:
        seconds = self.statsig.allowed_lateness_seconds if self.profile == "statsig" else self.completion_lateness_seconds
        return int(seconds * 1_000_000)

    @field_validator("file_name")
    @classmethod
    def _file_name(cls, value):
        if value is not None:
            partitioning.parse_file_template(value)
        return value

    @field_validator("csv_separator")
    @classmethod
    def _separator(cls, value: str) -> str:
        if value in "\"\r\n" or value.isalnum():
            raise ValueError("separator must not be a quote, a line break, a letter or a digit")
        return value

    @model_validator(mode="after")
    def _compression(self):
        if self.compression is None:
            self.compression = formats.DEFAULT_COMPRESSION[self.file_format]
        elif self.compression not in formats.ALLOWED_COMPRESSION[self.file_format]:
            allowed = ", ".join(formats.ALLOWED_COMPRESSION[self.file_format])
            raise ValueError(f"compression {self.compression!r} does not apply to {self.file_format} (use {allowed})")
        if self.file_name is None:
            self.file_name = self.file_prefix + "-{epoch}-{id}"
        return self

    # What the writer asks of a vendor config (overridden by the object stores).
    def route_for(self, tenant: str | None, dialect: str | None) -> Route:
        return Route("", "", None, None)

    def routing_columns(self) -> tuple[str, ...]:
        """The event columns the route depends on (``_tenant_id``, ``_dialect``); none for one root."""
        return ()

    def open_storage(self, route: Route):
        raise NotImplementedError

    def key_problem(self, route: Route) -> str | None:
        """Why ``route``'s encryption key cannot be used, or None."""
        return None


class FilesConfig(FileOutputConfig):
    path: str = Field(min_length=1, description="Destination root: a local path, s3://, gs:// or another Beam filesystem")

    def destination(self) -> str:
        import os

        if "://" in self.path:  # s3://, gs://: the same place as an object-store vendor's bucket/prefix
            return self.path.rstrip("/") + "/"
        return "file://" + os.path.abspath(self.path).rstrip("/") + "/"

    def open_storage(self, route: Route):
        return storage_for(self.path)


def partition_time_seconds(column) -> pa.ChunkedArray:
    """The partition time truncated to whole seconds (Arrow's ``%S`` prints microseconds otherwise)."""
    floored = pc.floor_temporal(column, unit="second")
    return pc.cast(floored, pa.timestamp("s", tz="UTC"), safe=False)


# Seconds in the finest time unit a template prints, for UTC: every second inside one such unit prints
# the same (days and longer floor to the day, which lies inside one month and year).
_UTC_UNIT_SECONDS = {"second": 1, "minute": 60, "min15": 60, "min30": 60, "hour": 3600}


def format_partition_times(seconds, template: partitioning.Template, tz: str = "UTC") -> pa.Array:
    """``pc.strftime`` of the template's time part for each value of ``seconds`` (a ``timestamp("s", UTC)``
    column). In UTC it formats each distinct unit once and spreads the labels back (formatting is a
    microsecond a row; a batch spans few hours). Other zones format per row, in that zone (offsets and
    DST make fixed-length flooring unsafe there)."""
    if tz != "UTC":
        return pc.strftime(seconds.cast(pa.timestamp("s", tz=tz)), format=template.strftime)
    unit = _UTC_UNIT_SECONDS.get(partitioning.time_span(template), 86_400)
    values = seconds.cast(pa.int64())
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    floored = values.to_numpy(zero_copy_only=False) // unit * unit
    distinct, where = np.unique(floored, return_inverse=True)
    labels = pc.strftime(pa.array(distinct, type=pa.timestamp("s", tz="UTC")), format=template.strftime)
    return labels.take(pa.array(where.reshape(-1)))


def payload_of(row: dict) -> str:
    return orjson.dumps(row, option=orjson.OPT_NAIVE_UTC).decode()


def sink_dead_letters(iid: str, reason: str, rows: pa.Table, error: str, with_payload: bool = True):
    """Dead-letter records for ``rows`` (as tagged outputs), counted for integration ``iid``. Without
    payload the record keeps the event id and reason only (used when writing the event anywhere would
    break a guarantee, e.g. its tenant's encryption key is unusable)."""
    deadletter.count(reason, iid, rows.num_rows)
    for row in to_warehouse(rows).to_pylist():
        payload = payload_of(row) if with_payload else None
        err = error if with_payload else f"{error}; payload withheld, re-deliver by event_id from the input"
        yield beam.pvalue.TaggedOutput(DEAD_LETTERS, deadletter.make_record(
            reason, "sink", err, payload, row["source_id"], integration_id=iid, event_id=row["event_id"]))


def tenant_counts(rows: pa.Table) -> dict[str, int]:
    """Events per tenant in ``rows`` (events without a tenant under ``NO_TENANT``)."""
    counts = pc.value_counts(rows["_tenant_id"]).to_pylist()
    return {NO_TENANT if c["values"] is None else c["values"]: c["counts"] for c in counts}


def apportion(events_by_tenant: dict[str, int], size: int) -> dict[str, tuple[int, int]]:
    """``{tenant: (events, bytes)}``: a file's bytes shared in proportion to events, summing exactly to
    ``size`` (the remainder goes to the tenants with the largest fractions, ties by name)."""
    total = sum(events_by_tenant.values())
    exact = {t: size * n / total for t, n in events_by_tenant.items()}
    out = {t: int(v) for t, v in exact.items()}
    rest = size - sum(out.values())
    for t in sorted(exact, key=lambda t: (out[t] - exact[t], t))[:rest]:
        out[t] += 1
    return {t: (events_by_tenant[t], out[t]) for t in events_by_tenant}


# Partitions are grouped into this many write groups per route for the shuffle. Keying by partition
# instead sent one piece per (dedup shard, partition) across it: with many small partitions (500 tenants x
# 72 hours) that was over half a million tiny elements per million events, and time and memory grew with the
# number of partitions. Writers still get every event of a partition together (a partition is in one group).
WRITE_GROUPS = 64
_PARTITION_COL, _TENANT_COL = "__partition", "__file_tenant"


def write_group(partition: str, tenant: str | None) -> int:
    """The write group of a partition (and file tenant): stable across processes and runs."""
    return zlib.crc32(f"{partition}\x00{tenant}".encode("utf-8", "surrogatepass")) % WRITE_GROUPS


class _KeyByPartitionFn(beam.DoFn):
    """Split an event batch by route and write group: ``((route, group), rows)``, each row carrying its
    partition path and file tenant (None: files may mix tenants) in two extra columns. Rows without a route
    (``unknown_tenant``) or whose partition cannot be built (a missing or oversize tenant/app value) become
    dead letters."""

    def __init__(self, integration_id: str, config: FileOutputConfig):
        self._iid = integration_id
        self._config = config

    def setup(self):
        self._template = partitioning.parse_template(self._config.partition_by)
        self._routes: dict[tuple, tuple | Exception] = {}
        self._tenant_in_path = "_tenant_id" in self._template.fields
        self._routing_columns = self._config.routing_columns()

    def _route(self, tenant, dialect):
        """``(route key, tenant scoped)`` or the ``UnknownTenant`` error, cached."""
        key = (tenant, dialect)
        if key not in self._routes:
            try:
                route = self._config.route_for(tenant, dialect)
                self._routes[key] = (route.key(), route.tenant is not None)
            except UnknownTenant as exc:
                self._routes[key] = exc
        return self._routes[key]

    def process(self, table):
        fields = list(self._template.fields)
        seconds = partition_time_seconds(table[self._config.partition_time])
        # days and hours as a clock in the partition time zone shows them
        tz = self._config.partition_timezone
        columns = {"_pkey": format_partition_times(seconds, self._template, tz)}
        for name in fields:
            if name in ("_min15", "_min30"):  # minutes as that zone's clock shows them (offsets like +05:45)
                width = 15 if name == "_min15" else 30
                labels = pa.array(partitioning.minute_range_labels(width))
                local = seconds if tz == "UTC" else seconds.cast(pa.timestamp("s", tz=tz))
                columns[name] = labels.take(pc.divide(pc.minute(local), width))
            else:
                columns[name] = table[name]
        # Group only by what decides the path and the route: splitting by more (e.g. by tenant when
        # neither the layout nor the routing needs it) multiplies small groups through the shuffle.
        for name in self._routing_columns:
            columns.setdefault(name, table[name])
        columns["_row"] = pa.array(np.arange(table.num_rows, dtype=np.int64))
        keys = pa.table(columns)
        group_cols = [c for c in columns if c != "_row"]
        # Each group's row indices, gathered by Arrow. The pieces of each (route, write group) are then
        # laid end to end and all rows reordered that way with one gather, so each output is a zero-copy
        # slice (a gather per group, or per output, is slow on a many-chunk table: each concatenates it).
        groups = keys.group_by(group_cols).aggregate([("_row", "list")])
        lists = groups["_row_list"].combine_chunks()
        offsets = lists.offsets.to_numpy()
        rows = lists.flatten().to_numpy()
        pieces: dict[tuple, list] = {}  # (route, write group) -> [(start, length, partition, file tenant)]
        for i, group in enumerate(groups.drop_columns(["_row_list"]).to_pylist()):
            start, length = int(offsets[i]), int(offsets[i + 1] - offsets[i])
            tenant = group.get("_tenant_id")
            resolved = self._route(tenant, group.get("_dialect"))
            if isinstance(resolved, UnknownTenant):
                dead = table.take(rows[start:start + length])
                yield from sink_dead_letters(self._iid, "unknown_tenant", dead, str(resolved))
                continue
            route, scoped = resolved
            try:
                partition = partitioning.render_partition(self._template, group["_pkey"], group)
            except partitioning.InvalidPartitionValue as exc:
                dead = table.take(rows[start:start + length])
                yield from sink_dead_letters(self._iid, "invalid_partition_value", dead, str(exc))
                continue
            file_tenant = (NO_TENANT if tenant is None else tenant) if scoped or self._tenant_in_path else None
            pieces.setdefault((route, write_group(partition, file_tenant)), []).append(
                (start, length, partition, file_tenant))
        if not pieces:
            return
        runs = [(start, length) for parts in pieces.values() for start, length, _, _ in parts]
        starts = np.array([start for start, _ in runs], dtype=np.int64)
        lengths = np.array([length for _, length in runs], dtype=np.int64)
        before = np.cumsum(lengths) - lengths  # where each run starts in the reordered rows
        ordered = table.take(rows[np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - before, lengths)])
        at = 0
        for key, parts in pieces.items():
            size = sum(length for _, length, _, _ in parts)
            yield key, _with_destinations(ordered.slice(at, size), parts)
            at += size


def _with_destinations(rows: pa.Table, parts: list) -> pa.Table:
    """``rows`` (the runs of ``parts``, ``(start, length, partition, file tenant)``, end to end) with the
    partition and file tenant of each row as dictionary columns (a few distinct values each)."""
    lengths = np.array([length for _, length, _, _ in parts], dtype=np.int64)
    which = pa.array(np.repeat(np.arange(len(parts), dtype=np.int32), lengths))
    partitions = pa.DictionaryArray.from_arrays(which, pa.array([p for _, _, p, _ in parts], type=pa.string()))
    tenants = pa.DictionaryArray.from_arrays(which, pa.array([t for _, _, _, t in parts], type=pa.string()))
    return rows.append_column(_PARTITION_COL, partitions).append_column(_TENANT_COL, tenants)


def split_destinations(rows: pa.Table, time_col: str):
    """``(partition, file tenant, events)`` for each destination in a write group's rows (see
    ``_with_destinations``), the events sorted by ``time_col`` then ``event_id``: one grouping and one sort
    for the whole write group, then zero-copy slices."""
    keys = pa.table({"p": rows[_PARTITION_COL].cast(pa.string()), "t": rows[_TENANT_COL].cast(pa.string()),
                     "_row": np.arange(rows.num_rows, dtype=np.int64)})
    rows = rows.drop_columns([_PARTITION_COL, _TENANT_COL])
    groups = keys.group_by(["p", "t"], use_threads=False).aggregate([("_row", "list")])
    lists = groups["_row_list"].combine_chunks()
    lengths = np.diff(lists.offsets.to_numpy())
    group_of = np.empty(rows.num_rows, dtype=np.int64)
    group_of[lists.flatten().to_numpy()] = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    order = pc.sort_indices(pa.table({"g": group_of, "time": rows[time_col], "id": rows["event_id"]}),
                            sort_keys=[("g", "ascending"), ("time", "ascending"), ("id", "ascending")])
    ordered = rows.take(order)
    start = 0
    for partition, tenant, length in zip(groups["p"].to_pylist(), groups["t"].to_pylist(), lengths.tolist()):
        yield partition, tenant, ordered.slice(start, length)
        start += length


class _WritePartitionFn(beam.DoFn):
    """All events of one (route, write group) -> per partition and file tenant (None: mixed), files of at
    most ``batch_size`` events."""

    def __init__(self, integration_id: str, config: FileOutputConfig, run_id: str):
        self._iid = integration_id
        self._config = config
        self._run_id = run_id  # the same in every worker: pickled with the DoFn

    def setup(self):
        c = self._config
        self._storages: dict[str, object] = {}
        self._key_problems: dict[str, str | None] = {}
        self._ext = formats.extension(c.file_format, c.compression)
        self._names = partitioning.parse_file_template(c.file_name)
        self._options = {"separator": c.csv_separator} if c.file_format == "csv" else {}
        self._delivered = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.delivered")
        self._files = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.files")
        self._present = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.files_already_present")
        self._already = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.already_delivered")
        self._differs = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.files_differ")
        self._adopted = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.files_adopted")
        self._concurrent = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.files_of_concurrent_run")
        self._ledger_unavailable = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.ledger_unavailable")
        self._ledgers: dict[str, ledger.Ledger] = {}
        self._template = partitioning.parse_template(c.partition_by)
        self._pending_known: set[tuple[int, str]] = set()  # (storage, partition) with a pending marker

    def _storage(self, route_key: str):
        if route_key not in self._storages:
            route = Route.from_key(route_key)
            self._key_problems[route_key] = self._config.key_problem(route)
            self._storages[route_key] = self._config.open_storage(route)
        return self._storages[route_key], self._key_problems[route_key]

    def process(self, element):
        (route_key, _), slices = element
        slices = list(slices)
        if not slices:  # an empty streaming pane
            return
        grouped = pa.concat_tables(slices)
        for partition, tenant, rows in split_destinations(grouped, self._config.partition_time):
            yield from self._write_partition(route_key, partition, tenant, rows)

    def _write_partition(self, route_key: str, partition: str, tenant: str | None, rows: pa.Table):
        storage, problem = self._storage(route_key)
        if problem is not None:  # fail closed: never unencrypted, never under another key
            yield from sink_dead_letters(self._iid, "encryption_key_unusable", rows, problem, with_payload=False)
            return
        rows = yield from self._subtract_delivered(route_key, storage, partition, rows)
        if self._config.completes_partitions():
            rows = yield from self._completion_check(storage, partition, rows)
        if self._config.profile == "statsig":
            rows = yield from self._statsig_checks(rows)
        if rows.num_rows == 0:
            return
        for number, start in enumerate(range(0, rows.num_rows, self._config.batch_size), 1):
            chunk = rows.slice(start, self._config.batch_size)
            try:
                record = self._write(storage, self._ledgers[route_key], partition, tenant, chunk, number)
            except commit.KeyUnusable as exc:
                yield from sink_dead_letters(self._iid, "encryption_key_unusable", chunk, str(exc), with_payload=False)
                continue
            yield {**record, "route": route_key}

    def _subtract_delivered(self, route_key: str, storage, partition: str, rows):
        """Drop the events the partition already holds (``transforms.ledger``: a re-run over grown input),
        counted as delivered; yields the files of a stopped run that no report lists, for this run's report.
        Returns the rows still to write."""
        if route_key not in self._ledgers:
            self._ledgers[route_key] = ledger.Ledger(storage, self._run_id)
        book = self._ledgers[route_key]
        held, adopt = book.delivered(partition)
        if book.unavailable:
            self._ledger_unavailable.inc()
        for record in adopt:
            self._adopted.inc()
            yield {**record, "status": "adopted", "route": route_key}
        if not len(held):
            return rows
        known = pc.is_in(rows["event_id"], value_set=held)
        already = pc.sum(known).as_py() or 0
        if not already:
            return rows
        self._delivered.inc(already)
        self._already.inc(already)
        return rows.filter(pc.invert(known))

    def _completion_check(self, storage, partition: str, rows):
        """Events of a partition already marked complete are dead letters: readers that trust the marker (or
        Statsig, which never re-reads a finished day) would never see them. Returns the rows to write."""
        if storage.lookup(complete_name(partition)) is None:
            return rows
        if self._config.profile == "statsig":
            day = partition.rsplit("/", 1)[-1]
            reason, error = "day_already_finished", f"{day} was already signalled as finished to Statsig"
        else:
            reason, error = "partition_complete", f"{partition} was already marked complete"
        yield from sink_dead_letters(self._iid, reason, rows, error)
        return rows.slice(0, 0)

    def _statsig_checks(self, rows):
        """Dead-letter the events Statsig's contract cannot hold. Returns the rest."""
        _, rejected = statsig_profile.to_events(to_warehouse(rows), self._config.statsig.value_property)
        if not rejected:
            return rows
        for index, reason in rejected:
            yield from sink_dead_letters(self._iid, "profile_rejected", rows.slice(index, 1), reason)
        keep = np.ones(rows.num_rows, dtype=bool)
        keep[[i for i, _ in rejected]] = False
        return rows.filter(pa.array(keep))

    def _profile_table(self, rows: pa.Table) -> pa.Table:
        c = self._config
        table = to_warehouse(rows)
        if c.profile == "hackle":
            table, collisions = hackle_profile.to_hackle(table, c.hackle.metric_property, c.hackle.identifier_paths)
            if collisions:
                Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.map_key_collisions").inc(collisions)
        elif c.profile == "statsig":
            table, _ = statsig_profile.to_events(table, c.statsig.value_property)
        return table

    def _write(self, storage, book: ledger.Ledger, partition: str, tenant: str, rows, number: int = 1):
        c = self._config
        batch = partitioning.batch_id(self._iid, partition, rows["event_id"].cast(pa.binary()).to_pylist())
        first_us = pc.min(rows[c.partition_time]).value

        def name_for(collision: int) -> str:
            name = partitioning.render_file_name(self._names, first_us, batch, self._ext, collision, number)
            return f"{partition}/{name}"

        data = formats.encode(c.file_format, self._profile_table(rows), c.compression, **self._options)
        record = commit.publish_batch(storage, name_for, data, rows.num_rows, batch=batch,
                                      content_addressed=self._names.content_addressed, partition=partition)
        record["batch"] = batch
        if tenant is not None:
            record["tenant"] = tenant
        if not book.record(partition, batch, {k: v for k, v in record.items() if k != "status"}, rows["event_id"]):
            record["status"] = "another_run"  # a concurrent run's file, listed in that run's report
        if c.completes_partitions():
            # The partition has data: remember it and its end (in the destination, so a later run completes
            # it) and how far the delivered data reaches (the watermark completeness is judged by).
            if (id(storage), partition) not in self._pending_known:
                end_us = partitioning.partition_end_us(self._template, first_us, c.partition_timezone)
                storage.put_if_absent(pending_name(partition),
                                      orjson.dumps({"partition": partition, "end_us": end_us}), {})
                self._pending_known.add((id(storage), partition))
            record["max_received_at_us"] = pc.max(rows["received_at"]).value
        self._delivered.inc(rows.num_rows)
        self._files.inc()
        if record["status"] == "another_run":
            self._concurrent.inc()
        if record["status"] == "already_present":
            self._present.inc()
            if record.get("differs"):
                self._differs.inc()
        written = record["status"] == "published"
        shares = {tenant: rows.num_rows} if tenant is not None else tenant_counts(rows)
        for name, (events, size) in apportion(shares, record.get("bytes", 0)).items():
            usage = f"{self._iid}.tenant.{name}."
            Metrics.counter(deadletter.NAMESPACE, usage + "events").inc(events)
            Metrics.counter(deadletter.NAMESPACE, usage + "files").inc()
            Metrics.counter(deadletter.NAMESPACE, usage + "bytes").inc(size)
            if written:
                Metrics.counter(deadletter.NAMESPACE, usage + "bytes_written").inc(size)
        return record


def pending_name(partition: str) -> str:
    """The marker that ``partition`` has data and is not complete yet (holds the partition and its end)."""
    return f"_pending/{ledger.partition_token(partition)}"


def complete_name(partition: str) -> str:
    """The marker that ``partition`` was completed (written after its completion marker or signal)."""
    return f"_complete/{ledger.partition_token(partition)}"


class _CompletePartitionsFn(beam.DoFn):
    """``(route, file records)`` -> each partition of the route that is now complete, in the order the
    partitions end, stopping at the first that is not: its completion marker, written after its files
    (``completion_marker``), and for Statsig the day's metrics and ``finished_date`` signal (or the
    mark-data-ready call). Yields one record per completed partition.

    Complete means: the watermark - the latest ``received_at`` of the delivered events, per run in batch,
    per batch in streaming - has passed the partition's end plus the lateness. Events for a partition
    already completed are dead letters (``partition_complete``). The check is made when a batch's partition
    is written, so on a runner writing several batches at once, a batch held back for longer than the
    lateness could still publish after the marker (the README says so)."""

    def __init__(self, integration_id: str, config: FileOutputConfig):
        self._iid, self._config = integration_id, config

    def setup(self):
        self._completed = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.partitions_completed")

    def process(self, element):
        route_key, files = element
        watermarks = [f["max_received_at_us"] for f in files if "max_received_at_us" in f]
        if not watermarks:
            return
        watermark = max(watermarks)
        storage = self._config.open_storage(Route.from_key(route_key))
        lateness = self._config.completion_lateness_us()
        for end_us, partition, name in sorted(self._pending(storage)):
            if watermark < end_us + lateness:
                break
            if storage.lookup(complete_name(partition)) is None:
                yield self._complete(storage, partition, end_us)
            storage.remove(name)

    @staticmethod
    def _pending(storage):
        for name in storage.list_names("_pending"):
            try:
                info = orjson.loads(storage.read(name))
            except Exception:  # removed meanwhile by another worker completing it
                if storage.lookup(name) is None:
                    continue
                raise
            yield info["end_us"], info["partition"], name

    def _complete(self, storage, partition: str, end_us: int) -> dict:
        from transforms.timestamps import format_us

        c = self._config
        out = {"partition": partition, "end": format_us(end_us)}
        if c.completion_marker is not None:
            names = [n.rsplit("/", 1)[-1] for n in storage.list_names(partition)]
            files = [n for n in names if not n.startswith(("_", "."))]
            body = orjson.dumps({"partition": partition, "end": out["end"], "files": files},
                                option=orjson.OPT_INDENT_2)
            # An earlier attempt's marker stands (it listed the same files: none were accepted since).
            storage.put_if_absent(f"{partition}/{c.completion_marker}", body, {})
            out.update(marker=f"{partition}/{c.completion_marker}", files=len(files))
        if c.profile == "statsig":
            out.update(self._finish_statsig_day(storage, partition, end_us))
        storage.put_if_absent(complete_name(partition), partition.encode(), {})
        self._completed.inc()
        return out

    def _finish_statsig_day(self, storage, partition: str, end_us: int) -> dict:
        import hashlib
        import io

        import pyarrow.parquet as pq

        settings, day = self._config.statsig, partition.rsplit("/", 1)[-1]
        names = [n for n in storage.list_names(partition) if n.endswith(".parquet")]
        events = pa.concat_tables([pq.read_table(io.BytesIO(storage.read(n))) for n in names]) if names \
            else statsig_profile.EVENTS_SCHEMA.empty_table()
        out = {"day": day, "event_files": len(names), "events": events.num_rows}
        if settings.metrics:
            table = statsig_profile.compute_metrics(events, day, settings.metrics)
            data = formats.encode("parquet", table, self._config.compression)
            name = f"metrics/{day}/metrics-{hashlib.sha256(data).hexdigest()[:16]}.parquet"
            out["metrics"] = commit.publish_bytes(storage, name, data, table.num_rows)
        if settings.signal == "dataset":
            table = pa.table({"finished_date": [day]}, schema=statsig_profile.SIGNALS_SCHEMA)
            data = formats.encode("parquet", table, self._config.compression)
            out["signal"] = commit.publish_bytes(storage, f"signals/{day}/finished_date-{day}.parquet", data, 1)
        else:
            out["signal"] = mark_data_ready(settings, day, end_us)
        return out


def mark_data_ready(settings, day: str, end_us: int) -> dict:
    """Statsig's mark_data_ready call for everything up to ``end_us``, the end of ``day`` in its time zone; raises
    ``commit.PublishError`` (without the key) when Statsig does not accept it, so the day stays unsignalled."""
    import urllib.error
    import urllib.request

    from transforms.secrets import redact

    end_s = end_us // 1_000_000
    for kind in settings.mark_data_ready_types:
        request = urllib.request.Request(
            settings.mark_data_ready_url, method="POST", data=orjson.dumps({"timestamp": end_s, "type": kind}),
            headers={"statsig-api-key": settings.api_key.get(), "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise commit.PublishError(redact(f"mark_data_ready for {day} ({kind}) failed: {exc}")) from None
    return {"mark_data_ready": end_s, "types": list(settings.mark_data_ready_types)}


class _WriteReportFn(beam.DoFn):
    """One delivery report per route: the files of this generation under that route's root."""

    def __init__(self, integration_id: str, vendor: str, config: FileOutputConfig):
        self._iid, self._vendor, self._config = integration_id, vendor, config

    def process(self, element):
        from transforms.timestamps import format_us

        route_key, files = element
        storage = self._config.open_storage(Route.from_key(route_key))
        # One entry a path: a stopped run's file can be adopted by two workers meeting its partition.
        entries = list({f["path"]: {k: v for k, v in f.items() if k not in ("route", "max_received_at_us")}
                        for f in files if f["status"] != "another_run"}.values())
        report = commit.write_report(storage, self._iid, self._vendor, entries,
                                     created_at=format_us(deadletter.now_us()))
        if report is not None:
            Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.reports").inc()
            book = ledger.Ledger(storage)
            for entry in entries:  # after the report: its files no longer need adopting
                if "batch" in entry:
                    book.mark_reported(entry["partition"], entry["batch"])
            yield {**report, "route": route_key}


class WriteEventsToFiles(beam.PTransform):
    """Prepared event batches -> published files and one delivery report per route (written last)."""

    def __init__(self, integration, vendor: str | None = None):
        super().__init__()
        self._integration = integration
        self._vendor = vendor or integration.vendor

    def expand(self, tables):
        integ = self._integration
        keyed = tables | "KeyByPartition" >> beam.ParDo(
            _KeyByPartitionFn(integ.integration_id, integ.config)).with_output_types(
            tuple[typing.Any, pa.Table]).with_outputs(DEAD_LETTERS, main="rows")
        written = (keyed.rows
                   | "GroupByPartition" >> coders.GroupTablesByKey()
                   | "WritePartitionFiles" >> beam.ParDo(
                       _WritePartitionFn(integ.integration_id, integ.config, uuid.uuid4().hex)).with_outputs(
                       DEAD_LETTERS, main="files"))
        reports = (written.files
                   | "KeyByRoute" >> beam.Map(lambda f: (f["route"], f))
                   | "CollectFiles" >> beam.GroupByKey()
                   | "WriteReport" >> beam.ParDo(_WriteReportFn(integ.integration_id, self._vendor, integ.config)))
        dead = (keyed[DEAD_LETTERS], written[DEAD_LETTERS]) | "FlattenSinkDeadLetters" >> beam.Flatten()
        out = {"files": written.files, "reports": reports, "dead_letters": dead}
        if integ.config.completes_partitions():
            # After the files (the grouping waits for every file of the run, or of the streaming batch).
            out["completed"] = (written.files
                                | "KeyForCompletion" >> beam.Map(lambda f: (f["route"], f))
                                | "CollectForCompletion" >> beam.GroupByKey()
                                | "CompletePartitions" >> beam.ParDo(
                                    _CompletePartitionsFn(integ.integration_id, integ.config)))
        return out


def relocate_path(config, output: str):
    """``regenerate --output`` for a path-rooted export (files, sFTP): the same settings under ``output``."""
    config = config.model_copy()
    config.path = output
    return config


def ndjson_archive(config) -> str | None:
    """The archive ``regenerate`` reads back: a files integration writing NDJSON."""
    return config.path if config.file_format == "json" else None


DESTINATION = Destination(FilesConfig, WriteEventsToFiles, relocate=relocate_path, archive=ndjson_archive)
