"""Partition keying: each event's route, partition and file tenant, and the write group that carries it to
one worker (pure functions plus the keying DoFn)."""
from __future__ import annotations

import zlib

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import partitioning
from transforms.deadletter import sink_dead_letters
from transforms.routes import UnknownTenant
from transforms.sinks.files.config import FileOutputConfig

_PARTITION_COL, _TENANT_COL = "__partition", "__file_tenant"
NO_TENANT = "(none)"  # how events without a tenant appear in usage metrics


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


# Partitions are grouped into this many write groups per route for the shuffle. Keying by partition
# instead sent one piece per (dedup shard, partition) across it: with many small partitions (500 tenants x
# 72 hours) that was over half a million tiny elements per million events, and time and memory grew with the
# number of partitions. Writers still get every event of a partition together (a partition is in one group).
WRITE_GROUPS = 64


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
