"""Drop duplicate events by ``event_id`` across the whole input (batch).

``DeduplicateEvents()`` takes ``(shard, Table)`` pairs from ``ParseEvents`` (an event's shard is a
stable function of its ``event_id``, so all copies of an event meet in one shard) and yields one
deduplicated Table per shard. Among copies it keeps the earliest ``received_at`` (the first arrival),
ties broken by the full row content, so the choice does not depend on processing order. Copies dropped
are counted as ``duplicates``.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from transforms.deadletter import NAMESPACE


def dedup_table(table: pa.Table) -> tuple[pa.Table, int]:
    """Return ``(table without duplicate event_ids, number of rows dropped)``.

    Among copies of an event the one with the earliest ``received_at`` wins; ties are broken by the other
    columns' values in schema order (a total order on content, so the winner never depends on the order
    rows arrived in). Only rows whose id occurs more than once are sorted."""
    ids = table["event_id"]
    if pc.count_distinct(ids).as_py() == table.num_rows:
        return table, 0
    counts = table.select(["event_id"]).group_by("event_id").aggregate([("event_id", "count")])
    dup_ids = counts.filter(pc.greater(counts["event_id_count"], 1))["event_id"]
    mask = pc.is_in(ids, value_set=dup_ids)
    singles = table.filter(pc.invert(mask))
    copies = table.filter(mask)
    order = ["event_id", "received_at"] + [c for c in copies.column_names if c not in ("event_id", "received_at")]
    copies = copies.take(pc.sort_indices(copies, sort_keys=[(c, "ascending", "at_end") for c in order]))
    sorted_ids = copies["event_id"].combine_chunks()
    first = np.ones(len(sorted_ids), dtype=bool)
    if len(sorted_ids) > 1:
        first[1:] = pc.not_equal(sorted_ids[1:], sorted_ids[:-1]).to_numpy(zero_copy_only=False)
    winners = copies.filter(pa.array(first))
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
