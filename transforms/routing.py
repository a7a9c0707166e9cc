"""Fan-out: what each integration's branch does before its sink.

``PrepareForIntegration(integration)`` = consent filter -> property selection -> stamp ``source_id`` and
``integration_id``. Each enabled integration gets its own branch from the deduplicated events.
"""
from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from transforms.consent import FilterByConsent
from transforms.selection import SelectProperties


def stamp(table: pa.Table, source_id: str, integration_id: str) -> pa.Table:
    n = table.num_rows
    table = table.append_column("source_id", pa.array([source_id] * n, type=pa.string()))
    return table.append_column("integration_id", pa.array([integration_id] * n, type=pa.string()))


class PrepareForIntegration(beam.PTransform):
    def __init__(self, integration):
        super().__init__()
        self._integration = integration

    def expand(self, tables):
        integ = self._integration
        config = integ.config
        if config.consent is not None:
            tables = tables | "FilterByConsent" >> FilterByConsent(integ.integration_id, config.consent.require)
        if config.properties is not None:
            tables = tables | "SelectProperties" >> SelectProperties(config.properties)
        source_id, integration_id = integ.source_id, integ.integration_id
        return (tables
                | "DropEmpty" >> beam.Filter(lambda t: t.num_rows > 0).with_output_types(pa.Table)
                | "StampIds" >> beam.Map(lambda t: stamp(t, source_id, integration_id)).with_output_types(pa.Table))
