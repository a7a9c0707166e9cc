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

from transforms.coders import GroupTablesByKey
from transforms.deadletter import NAMESPACE


def dedup_table(table: pa.Table) -> tuple[pa.Table, int]:
    """Return ``(table without duplicate event_ids, number of rows dropped)``.

    Among copies of an event the one with the earliest ``received_at`` wins; ties are broken by the other
    columns' values in schema order (a total order on content, so the winner never depends on the order
    rows arrived in). One hash pass finds the ids seen more than once; only those rows are sorted, and the
    table is filtered once (rows keep their order)."""
    # One contiguous copy first: a shard arrives as about a hundred pieces, and Arrow gathers from a many-chunk
    # column by concatenating it first, so the gathers below (and those after this stage) each copied it all.
    table = table.combine_chunks()
    ids = table["event_id"].chunk(0) if table.num_rows else pa.array([], pa.string())
    encoded = pc.dictionary_encode(ids)
    if len(encoded.dictionary) == table.num_rows:
        return table, 0
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    repeated = np.bincount(codes, minlength=len(encoded.dictionary))[codes] > 1
    copy_rows = np.flatnonzero(repeated)
    copies = table.take(copy_rows)
    order = ["event_id", "received_at"] + [c for c in copies.column_names if c not in ("event_id", "received_at")]
    ranked = pc.sort_indices(copies, sort_keys=[(c, "ascending", "at_end") for c in order]).to_numpy()
    sorted_codes = codes[copy_rows[ranked]]
    first = np.ones(len(ranked), dtype=bool)
    first[1:] = sorted_codes[1:] != sorted_codes[:-1]
    keep = ~repeated
    keep[copy_rows[ranked[first]]] = True
    kept = table.filter(pa.array(keep))
    return kept, table.num_rows - kept.num_rows


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
                | "GroupByShard" >> GroupTablesByKey()
                | "DropDuplicates" >> beam.ParDo(_DedupShardFn()).with_output_types(pa.Table))
