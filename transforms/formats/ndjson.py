"""NDJSON: one object per line; JSON columns nested as objects; null fields omitted (seed 002);
timestamps as ISO 8601 UTC with microseconds (``2026-01-29T14:30:00.000000Z``).

Options (``formats.encode("json", table, compression, **options)``), for loaders whose reader wants
otherwise: ``time_format`` (an Arrow ``strftime`` format; ``%S`` includes the microseconds) and
``nulls=True`` (null fields written as ``null``)."""
from __future__ import annotations

import orjson
import pyarrow.compute as pc

from transforms.profiles.warehouse import JSON_COLUMNS, TIME_COLUMNS

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # Arrow's %S includes the microsecond fraction for us timestamps


def column_values(table, name, time_format: str = ISO_FORMAT):
    """A column as Python values, timestamps already formatted (ISO 8601 UTC unless ``time_format``)."""
    column = table[name]
    if name in TIME_COLUMNS:
        column = pc.strftime(column, format=time_format)
    return column.to_pylist()


def encode(table, time_format: str = ISO_FORMAT, nulls: bool = False) -> bytes:
    names = table.column_names
    columns = [column_values(table, n, time_format) for n in names]
    is_json = [n in JSON_COLUMNS for n in names]
    fragment = orjson.Fragment
    dumps = orjson.dumps
    lines = []
    for values in zip(*columns):
        row = {}
        for name, value, nested in zip(names, values, is_json):
            if value is not None:
                row[name] = fragment(value) if nested else value
            elif nulls:
                row[name] = None
        lines.append(dumps(row))
    lines.append(b"")
    return b"\n".join(lines)
