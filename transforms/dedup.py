"""Drop duplicate events by ``event_id`` across the whole input (batch).

``DeduplicateEvents()`` takes ``(shard, Table)`` pairs from ``ParseEvents`` (an event's shard is a
stable function of its ``event_id``, so all copies of an event meet in one shard) and yields one
deduplicated Table per shard. Among copies it keeps the earliest ``received_at`` (the first arrival),
ties broken by the full row content, so the choice does not depend on processing order. Copies dropped
are counted as ``duplicates``.
"""
from __future__ import annotations

import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from transforms.deadletter import NAMESPACE


def _choice_key(row: dict):
    return (row["received_at"], orjson.dumps(row, option=orjson.OPT_SORT_KEYS))


def dedup_table(table: pa.Table) -> tuple[pa.Table, int]:
    """Return ``(table without duplicate event_ids, number of rows dropped)``."""
    ids = table["event_id"]
    if pc.count_distinct(ids).as_py() == table.num_rows:
        return table, 0
    counts = table.select(["event_id"]).group_by("event_id").aggregate([("event_id", "count")])
    dup_ids = counts.filter(pc.greater(counts["event_id_count"], 1))["event_id"]
    mask = pc.is_in(ids, value_set=dup_ids)
    singles = table.filter(pc.invert(mask))
    best: dict[str, dict] = {}
    for row in table.filter(mask).to_pylist():
        current = best.get(row["event_id"])
        if current is None or _choice_key(row) < _choice_key(current):
            best[row["event_id"]] = row
    winners = pa.Table.from_pylist(list(best.values()), schema=table.schema)
    return pa.concat_tables([singles, winners]), table.num_rows - singles.num_rows - winners.num_rows


class _DedupShardFn(beam.DoFn):
    def setup(self):
        self._duplicates = Metrics.counter(NAMESPACE, "duplicates")
        self._unique = Metrics.counter(NAMESPACE, "unique")

    def process(self, element):
        _, tables = element
        table = pa.concat_tables(list(tables))
        unique, dropped = dedup_table(table)
        self._duplicates.inc(dropped)
        self._unique.inc(unique.num_rows)
        yield unique


class DeduplicateEvents(beam.PTransform):
    """``(shard, Table)`` -> deduplicated ``Table`` per shard."""

    def expand(self, keyed_tables):
        return (keyed_tables
                | "GroupByShard" >> beam.GroupByKey()
                | "DropDuplicates" >> beam.ParDo(_DedupShardFn()))
