"""The event batch that flows between stages: an Arrow table of canonical columns plus internal ones.

Columns: the first 11 canonical columns (``source_id``/``integration_id`` are stamped per integration),
then ``_tenant_id``, ``_app_id`` (for layouts and routing), ``_dialect`` (the input's data type:
segment, snowplow, cloudevents, otel) and one boolean ``_consent.<purpose>`` per purpose any
integration requires. Internal columns start with ``_`` and never reach a destination.
"""
from __future__ import annotations

import pyarrow as pa

from transforms.profiles.warehouse import SCHEMA

# The profile's columns up to ``traits``; ids are stamped per integration. event_id is nullable here
# only because Arrow batches are built before the schema is applied; the parser never emits a null id.
CANONICAL_FIELDS = [pa.field(f.name, f.type) for f in SCHEMA][:11]


def consent_column(purpose: str) -> str:
    return f"_consent.{purpose}"


def batch_schema(purposes) -> pa.Schema:
    fields = list(CANONICAL_FIELDS)
    fields += [pa.field("_tenant_id", pa.string()), pa.field("_app_id", pa.string()),
               pa.field("_dialect", pa.string())]
    fields += [pa.field(consent_column(p), pa.bool_()) for p in purposes]
    return pa.schema(fields)
