"""Per-integration consent filtering.

An integration with ``"consent": {"require": ["analytics", "marketing"]}`` receives an event only if
``context.consent.analytics`` and ``context.consent.marketing`` are both JSON ``true``. Missing, null,
``"true"``, ``"false"``, 1, 0 or a malformed consent object all mean no consent. Dropped events are
counted as ``<integration_id>.consent_dropped`` and stored nowhere. Without a ``consent`` key nothing is
filtered. (The flags are extracted once while parsing, into ``_consent.<purpose>`` columns.)
"""
from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from transforms.deadletter import NAMESPACE
from transforms.events import consent_column


def consent_mask(table: pa.Table, purposes) -> pa.ChunkedArray:
    mask = None
    for purpose in purposes:
        flags = pc.fill_null(table[consent_column(purpose)], False)
        mask = flags if mask is None else pc.and_(mask, flags)
    return mask


class _FilterByConsentFn(beam.DoFn):
    def __init__(self, integration_id: str, purposes):
        self._integration_id = integration_id
        self._purposes = tuple(purposes)

    def setup(self):
        self._dropped = Metrics.counter(NAMESPACE, f"{self._integration_id}.consent_dropped")

    def process(self, table):
        kept = table.filter(consent_mask(table, self._purposes))
        self._dropped.inc(table.num_rows - kept.num_rows)
        yield kept


class FilterByConsent(beam.PTransform):
    """Keep events that granted every required purpose; count the rest."""

    def __init__(self, integration_id: str, purposes):
        super().__init__()
        self._fn = _FilterByConsentFn(integration_id, purposes)

    def expand(self, tables):
        return tables | beam.ParDo(self._fn).with_output_types(pa.Table)
