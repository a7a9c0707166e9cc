"""Destinations: one module per vendor, each with its config model and its ``WriteEventsTo...``
transform. A write transform takes prepared event batches and returns ``{"files": ..., "dead_letters": ...}``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transforms.sinks import bigquery as bigquery_sink
from transforms.sinks import duckdb as duckdb_sink
from transforms.sinks import files as files_sink
from transforms.sinks import gcs as gcs_sink
from transforms.sinks import redshift as redshift_sink
from transforms.sinks import s3 as s3_sink
from transforms.sinks import sftp as sftp_sink
from transforms.sinks import snowflake as snowflake_sink


@dataclass(frozen=True)
class Vendor:
    config_model: type
    write: Callable  # (Integration) -> PTransform


REGISTRY = {
    "files": Vendor(files_sink.FilesConfig, files_sink.WriteEventsToFiles),
    "duckdb": Vendor(duckdb_sink.DuckDBConfig, duckdb_sink.WriteEventsToDuckDB),
    "bigquery": Vendor(bigquery_sink.BigQueryConfig, bigquery_sink.WriteEventsToBigQuery),
    "s3": Vendor(s3_sink.S3Config, files_sink.WriteEventsToFiles),
    "gcs": Vendor(gcs_sink.GCSConfig, files_sink.WriteEventsToFiles),
    "snowflake": Vendor(snowflake_sink.SnowflakeConfig, snowflake_sink.WriteEventsToSnowflake),
    "redshift": Vendor(redshift_sink.RedshiftConfig, redshift_sink.WriteEventsToRedshift),
    "sftp": Vendor(sftp_sink.SFTPConfig, files_sink.WriteEventsToFiles),
}
