"""Parquet: the profile's Arrow schema as is (JSON columns as strings holding JSON, timestamps
``timestamp[us, UTC]``)."""
from __future__ import annotations

import io

import pyarrow.parquet as pq


def encode(table, compression: str) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=None if compression == "none" else compression)
    return buf.getvalue()
