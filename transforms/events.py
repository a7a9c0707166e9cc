"""The event batch that flows between stages: an Arrow table of canonical columns plus internal ones.

Columns: the first 11 canonical columns (``source_id``/``integration_id`` are stamped per integration),
then ``_tenant_id``, ``_app_id`` (for layouts) and one boolean ``_consent.<purpose>`` per purpose any
integration requires. Internal columns start with ``_`` and never reach a destination.
"""
from __future__ import annotations

import pyarrow as pa

from transforms.profiles.warehouse import TIMESTAMP

CANONICAL_FIELDS = [
    pa.field("event_id", pa.string()),
    pa.field("type", pa.string()),
    pa.field("event", pa.string()),
    pa.field("anonymous_id", pa.string()),
    pa.field("user_id", pa.string()),
    pa.field("timestamp", TIMESTAMP),
    pa.field("received_at", TIMESTAMP),
    pa.field("sent_at", TIMESTAMP),
    pa.field("context", pa.string()),
    pa.field("properties", pa.string()),
    pa.field("traits", pa.string()),
]


def consent_column(purpose: str) -> str:
    return f"_consent.{purpose}"


def batch_schema(purposes) -> pa.Schema:
    fields = list(CANONICAL_FIELDS)
    fields += [pa.field("_tenant_id", pa.string()), pa.field("_app_id", pa.string())]
    fields += [pa.field(consent_column(p), pa.bool_()) for p in purposes]
    return pa.schema(fields)
