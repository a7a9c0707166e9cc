"""Encoders: a warehouse-profile Arrow table -> file bytes. They never see a bucket or a path.

``encode(file_format, table, compression, **options) -> bytes`` and ``extension(file_format,
compression) -> str``. Formats: ``json`` (NDJSON), ``csv``, ``parquet``. Compression: ``gzip``,
``zstd``, ``none`` for all; ``snappy`` for Parquet only. ``options`` are the format's own (``separator``
for CSV; ``time_format``, ``nulls`` for NDJSON). Every file the sinks write or stage is encoded here.
Output is deterministic for the same input (gzip with mtime 0), so a retried batch produces the same bytes.
"""
from __future__ import annotations

import gzip

import zstandard

from transforms.formats import csv as csv_format
from transforms.formats import ndjson, parquet

DEFAULT_COMPRESSION = {"json": "gzip", "csv": "gzip", "parquet": "snappy"}
ALLOWED_COMPRESSION = {
    "json": ("gzip", "zstd", "none"),
    "csv": ("gzip", "zstd", "none"),
    "parquet": ("snappy", "gzip", "zstd", "none"),
}
_BASE_EXT = {"json": ".json", "csv": ".csv", "parquet": ".parquet"}
_STREAM_EXT = {"gzip": ".gz", "zstd": ".zst", "none": ""}


def extension(file_format: str, compression: str) -> str:
    if file_format == "parquet":
        return ".parquet"
    return _BASE_EXT[file_format] + _STREAM_EXT[compression]


def encode(file_format: str, table, compression: str, **options) -> bytes:
    if file_format == "parquet":
        return parquet.encode(table, compression)
    data = ndjson.encode(table, **options) if file_format == "json" else csv_format.encode(table, **options)
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    return data
