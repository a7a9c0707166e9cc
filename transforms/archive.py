"""Reading back the raw archive a ``files`` destination wrote as NDJSON (for history regeneration).

Only files listed in the archive's delivery reports are read: a file no report lists is incomplete
(seed 002). Each line is a warehouse row (the 13 columns, JSON columns nested, nulls omitted); it becomes a
row of the pipeline's event batch again: canonical columns, ``_tenant_id``/``_app_id`` from the same
dotted paths the delivery used, ``_dialect`` and one ``_consent.<purpose>`` flag per purpose.

Use::

    files = reported_files("out/archive")                     # complete files, any Beam filesystem
    table = rows_to_batch(lines, purposes, "context.tenant_id", "context.app_id")
"""
from __future__ import annotations

import gzip

import orjson
import pyarrow as pa

from transforms import commit
from transforms.events import batch_schema, consent_column
from transforms.profiles.warehouse import JSON_COLUMNS, TIME_COLUMNS
from transforms.timestamps import parse_timestamp_us


def reported_files(root: str) -> list[str]:
    """Every data file the delivery reports under ``root/_reports/`` list (full paths, sorted, unique)."""
    from apache_beam.io.filesystems import FileSystems

    pattern = root.rstrip("/") + f"/{commit.REPORT_DIR}/*.report"
    paths: set[str] = set()
    for meta in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(meta.path, compression_type="uncompressed") as fh:
            report = orjson.loads(fh.read())
        paths.update(root.rstrip("/") + "/" + f["path"] for f in report.get("files", []))
    return sorted(paths)


def read_lines(path: str) -> list[bytes]:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type="uncompressed") as fh:
        data = fh.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return [line for line in data.splitlines() if line.strip()]


def _leaf(obj, path: tuple[str, ...]):
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def rows_to_batch(lines: list[bytes], purposes, tenant_field: str, app_field: str) -> pa.Table:
    """Archive NDJSON lines -> an event batch (see ``transforms.events``). Raises ValueError on a line that
    is not an archive row (the caller dead-letters it)."""
    schema = batch_schema(purposes)
    columns: dict[str, list] = {f.name: [] for f in schema}
    tenant_path, app_path = tuple(tenant_field.split(".")), tuple(app_field.split("."))
    consent = {consent_column(p): p for p in purposes}
    for line in lines:
        row = orjson.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("event_id"), str):
            raise ValueError("not an archive row (no event_id)")
        nested = {c: row.get(c) for c in JSON_COLUMNS}
        for field in schema:
            name = field.name
            if name in TIME_COLUMNS:
                value = row.get(name)
                columns[name].append(None if value is None else parse_timestamp_us(value))
            elif name in JSON_COLUMNS:
                value = nested[name]
                columns[name].append(None if value is None else orjson.dumps(value).decode())
            elif name == "_tenant_id" or name == "_app_id":
                path = tenant_path if name == "_tenant_id" else app_path
                value = _leaf(nested.get(path[0]), path[1:]) if path[0] in nested else row.get(path[0])
                columns[name].append(value if isinstance(value, str) else None)
            elif name == "_dialect":
                columns[name].append("segment")  # the archive row does not record it; Segment is the input today
            elif name in consent:
                columns[name].append(_leaf(nested.get("context"), ("consent", consent[name])) is True)
            else:
                value = row.get(name)
                columns[name].append(value if isinstance(value, str) else None)
    arrays = []
    for field in schema:
        if field.name in TIME_COLUMNS:
            arrays.append(pa.array(columns[field.name], pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(columns[field.name], field.type))
    return pa.Table.from_arrays(arrays, schema=schema)

