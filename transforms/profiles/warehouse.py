"""The ``warehouse`` profile: exactly the 13 columns of seed 000, in order.

``context``, ``properties`` and ``traits`` travel as JSON text (Parquet/CSV: strings holding JSON;
NDJSON: nested objects; DuckDB: JSON type). Timestamps are UTC with microsecond precision.
"""
import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")
COLUMNS = (
    "event_id", "type", "event", "anonymous_id", "user_id", "timestamp", "received_at", "sent_at",
    "context", "properties", "traits", "source_id", "integration_id",
)
JSON_COLUMNS = ("context", "properties", "traits")
TIME_COLUMNS = ("timestamp", "received_at", "sent_at")
SCHEMA = pa.schema([
    pa.field("event_id", pa.string(), nullable=False),
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
    pa.field("source_id", pa.string()),
    pa.field("integration_id", pa.string()),
])


def to_warehouse(table: pa.Table) -> pa.Table:
    """Select the profile's columns (in order) from an event batch that carries ids."""
    return table.select(list(COLUMNS)).cast(SCHEMA)
