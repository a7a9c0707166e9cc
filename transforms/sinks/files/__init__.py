"""Vendor ``files``: a partitioned lake of NDJSON, CSV or Parquet files on the local disk or any Beam
filesystem; also the writer behind the ``s3`` and ``gcs`` vendors.

Config (plus the common ``batch_size``, ``batch_interval_seconds``, ``consent``, ``properties``)::

    {"path": "out/lake", "file_format": "parquet", "compression": "snappy",
     "partition_by": "year={yyyy}/month={MM}/day={dd}/hour={HH}", "partition_time": "timestamp",
     "file_name": "events-{epoch}-{id}"}

Events are grouped by route (object stores: bucket, prefix and key) and partition; where the layout or
the route separates tenants (``{tenant_id}`` in ``partition_by``, a tenant's own route or key) a file holds
one tenant, so its usage is exact and it carries that tenant's key. Elsewhere files mix tenants (fewer,
larger files) and a file's bytes are attributed to its tenants in proportion to their events. Each group's
events, sorted by partition time then ``event_id``, are cut into files of at most ``batch_size`` events
named by ``file_name`` (default ``events-<epoch>-<batch id>``: epoch = the file's earliest event time in
seconds, the id derived from the partition and the file's event ids). Files are published with the
protocol in ``transforms.commit``; then one delivery report per route under ``_reports/``.

Modules: ``config`` (the settings), ``keying`` (partition keys and write groups), ``writing`` (files,
ledger, reports), ``completion`` (markers and Statsig's day-finish step).
"""
from __future__ import annotations

import typing
import uuid

import apache_beam as beam
import pyarrow as pa

from transforms import coders
from transforms.deadletter import DEAD_LETTERS
from transforms.sinks.base import Destination, WriteResult
from transforms.sinks.files.completion import _CompletePartitionsFn
from transforms.sinks.files.config import FileOutputConfig, FilesConfig, Quota
from transforms.sinks.files.keying import _KeyByPartitionFn
from transforms.sinks.files.writing import _WritePartitionFn, _WriteReportFn

__all__ = ["DESTINATION", "FileOutputConfig", "FilesConfig", "Quota", "WriteEventsToFiles", "ndjson_archive",
           "relocate_path"]


class WriteEventsToFiles(beam.PTransform):
    """Prepared event batches -> published files and one delivery report per route (written last)."""

    def __init__(self, integration, vendor: str | None = None):
        super().__init__()
        self._integration = integration
        self._vendor = vendor or integration.vendor

    def expand(self, tables):
        integ = self._integration
        keyed = tables | "KeyByPartition" >> beam.ParDo(
            _KeyByPartitionFn(integ.integration_id, integ.config)).with_output_types(
            tuple[typing.Any, pa.Table]).with_outputs(DEAD_LETTERS, main="rows")
        written = (keyed.rows
                   | "GroupByPartition" >> coders.GroupTablesByKey()
                   | "WritePartitionFiles" >> beam.ParDo(
                       _WritePartitionFn(integ.integration_id, integ.config, uuid.uuid4().hex)).with_outputs(
                       DEAD_LETTERS, main="files"))
        reports = (written.files
                   | "KeyByRoute" >> beam.Map(lambda f: (f["route"], f))
                   | "CollectFiles" >> beam.GroupByKey()
                   | "WriteReport" >> beam.ParDo(_WriteReportFn(integ.integration_id, self._vendor, integ.config)))
        dead = (keyed[DEAD_LETTERS], written[DEAD_LETTERS]) | "FlattenSinkDeadLetters" >> beam.Flatten()
        completed = None
        if integ.config.completes_partitions():
            # After the files (the grouping waits for every file of the run, or of the streaming batch).
            completed = (written.files
                         | "KeyForCompletion" >> beam.Map(lambda f: (f["route"], f))
                         | "CollectForCompletion" >> beam.GroupByKey()
                         | "CompletePartitions" >> beam.ParDo(_CompletePartitionsFn(integ.integration_id, integ.config)))
        return WriteResult(dead, delivered=written.files, reports=reports, completed=completed)


def relocate_path(config, output: str):
    """``regenerate --output`` for a path-rooted export (files, sFTP): the same settings under ``output``."""
    config = config.model_copy()
    config.path = output
    return config


def ndjson_archive(config) -> str | None:
    """The archive ``regenerate`` reads back: a files integration writing NDJSON."""
    return config.path if config.file_format == "json" else None


DESTINATION = Destination(FilesConfig, WriteEventsToFiles, relocate=relocate_path, archive=ndjson_archive)
