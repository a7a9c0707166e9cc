"""The destination registry: one line a destination, each module declaring everything about itself in
its ``DESTINATION`` (see ``transforms.sinks.base.Destination`` and CONTRIBUTING.md)."""
from __future__ import annotations

from transforms.sinks import bigquery, duckdb, files, gcs, redshift, s3, sftp, snowflake
from transforms.sinks.base import Destination

REGISTRY: dict[str, Destination] = {
    "files": files.DESTINATION,
    "duckdb": duckdb.DESTINATION,
    "bigquery": bigquery.DESTINATION,
    "s3": s3.DESTINATION,
    "gcs": gcs.DESTINATION,
    "snowflake": snowflake.DESTINATION,
    "redshift": redshift.DESTINATION,
    "sftp": sftp.DESTINATION,
}
