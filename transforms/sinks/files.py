"""Vendor ``files``: a partitioned lake of NDJSON, CSV or Parquet files on any Beam filesystem.

Config (plus the common ``batch_size``, ``batch_interval_seconds``, ``consent``, ``properties``)::

    {"path": "out/lake", "file_format": "parquet", "compression": "snappy",
     "partition_by": "year={yyyy}/month={MM}/day={dd}/hour={HH}", "partition_time": "timestamp"}

Events are grouped by partition; each partition's events, sorted by ``event_id``, are cut into files
of at most ``batch_size`` events named ``<file_prefix>-<epoch>-<batch id>.<ext>`` (epoch = the batch's
earliest event time, in seconds; the id is derived from the partition and the batch's event ids). Files and are published with the protocol in ``transforms.commit``: one delivery report per run
under ``<path>/_reports/``, written after every file.
"""
from __future__ import annotations

from typing import Literal

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from pydantic import Field, field_validator, model_validator

from transforms import commit, deadletter, formats, partitioning
from transforms.integrations import BaseDestinationConfig
from transforms.profiles.warehouse import to_warehouse

DEAD_LETTERS = "dead_letters"


class FilesConfig(BaseDestinationConfig):
    path: str = Field(min_length=1, description="Destination root on any Beam filesystem")
    file_format: Literal["json", "parquet", "csv"] = "json"
    compression: Literal["gzip", "snappy", "zstd", "none"] | None = None
    partition_by: str = partitioning.DEFAULT_TEMPLATE
    partition_time: Literal["timestamp", "received_at"] = "timestamp"
    file_prefix: str = Field("events", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    csv_separator: str = Field(",", min_length=1, max_length=1)

    @field_validator("partition_by")
    @classmethod
    def _template(cls, value: str) -> str:
        partitioning.parse_template(value)  # raises ValueError with the reason
        return value

    @field_validator("csv_separator")
    @classmethod
    def _separator(cls, value: str) -> str:
        if value in "\"\r\n" or value.isalnum():
            raise ValueError("separator must not be a quote, a line break, a letter or a digit")
        return value

    @model_validator(mode="after")
    def _compression(self) -> "FilesConfig":
        if self.compression is None:
            self.compression = formats.DEFAULT_COMPRESSION[self.file_format]
        elif self.compression not in formats.ALLOWED_COMPRESSION[self.file_format]:
            allowed = ", ".join(formats.ALLOWED_COMPRESSION[self.file_format])
            raise ValueError(f"compression {self.compression!r} does not apply to {self.file_format} (use {allowed})")
        return self


class _KeyByPartitionFn(beam.DoFn):
    """Split an event batch by partition path: ``(partition, rows)`` pairs; rows whose partition cannot
    be built (a missing or oversize tenant/app value) become dead letters."""

    def __init__(self, integration_id: str, config: FilesConfig):
        self._iid = integration_id
        self._config = config

    def setup(self):
        self._template = partitioning.parse_template(self._config.partition_by)

    def process(self, table):
        fields = list(self._template.fields)
        time_part = pc.strftime(table[self._config.partition_time], format=self._template.strftime)
        keys = pa.table({"_pkey": time_part, **{f: table[f] for f in fields},
                         "_row": pa.array(np.arange(table.num_rows, dtype=np.int64))})
        # Each group's row indices, gathered by Arrow; the order of groups does not matter.
        groups = keys.group_by(["_pkey", *fields]).aggregate([("_row", "list")])
        indices = groups["_row_list"]
        for i, group in enumerate(groups.drop_columns(["_row_list"]).to_pylist()):
            rows = table.take(indices[i].values)
            try:
                yield partitioning.render_partition(self._template, group["_pkey"], group), rows
            except partitioning.InvalidPartitionValue as exc:
                yield from self._dead_letters(rows, str(exc))

    def _dead_letters(self, rows, error: str):
        deadletter.count("invalid_partition_value", self._iid, rows.num_rows)
        for row in to_warehouse(rows).to_pylist():
            payload = orjson.dumps(row, option=orjson.OPT_NAIVE_UTC).decode()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, deadletter.make_record(
                "invalid_partition_value", "sink", error, payload, row["source_id"],
                integration_id=self._iid, event_id=row["event_id"]))


class _WritePartitionFn(beam.DoFn):
    """All events of one partition -> files of at most ``batch_size`` events, sorted by event_id."""

    def __init__(self, integration_id: str, config: FilesConfig):
        self._iid = integration_id
        self._config = config

    def setup(self):
        c = self._config
        self._storage = commit.storage_for(c.path)
        self._ext = formats.extension(c.file_format, c.compression)
        self._options = {"separator": c.csv_separator} if c.file_format == "csv" else {}
        self._delivered = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.delivered")
        self._files = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.files")
        self._present = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.files_already_present")

    def process(self, element):
        partition, slices = element
        rows = pa.concat_tables(list(slices)).sort_by("event_id")
        for start in range(0, rows.num_rows, self._config.batch_size):
            yield self._write(partition, rows.slice(start, self._config.batch_size))

    def _write(self, partition: str, rows):
        c = self._config
        batch = partitioning.batch_id(self._iid, partition, rows["event_id"].to_pylist())
        epoch = pc.min(rows["timestamp"]).value // 1_000_000
        relative = f"{partition}/{partitioning.file_name(c.file_prefix, epoch, batch, self._ext)}"
        data = formats.encode(c.file_format, to_warehouse(rows), c.compression, **self._options)
        record = commit.publish_bytes(self._storage, relative, data, records=rows.num_rows, partition=partition)
        self._delivered.inc(rows.num_rows)
        self._files.inc()
        if record["status"] == "already_present":
            self._present.inc()
        return record


class _WriteReportFn(beam.DoFn):
    def __init__(self, integration_id: str, vendor: str, root: str):
        self._iid, self._vendor, self._root = integration_id, vendor, root

    def process(self, files):
        from transforms.timestamps import format_us

        report = commit.write_report(commit.storage_for(self._root), self._iid, self._vendor, files,
                                     created_at=format_us(deadletter.now_us()))
        if report is not None:
            Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.reports").inc()
            yield report


class WriteEventsToFiles(beam.PTransform):
    """Prepared event batches -> published files and one delivery report (written last)."""

    def __init__(self, integration, vendor: str = "files"):
        super().__init__()
        self._integration = integration
        self._vendor = vendor

    def expand(self, tables):
        integ = self._integration
        keyed = tables | "KeyByPartition" >> beam.ParDo(
            _KeyByPartitionFn(integ.integration_id, integ.config)).with_outputs(DEAD_LETTERS, main="rows")
        files = (keyed.rows
                 | "GroupByPartition" >> beam.GroupByKey()
                 | "WritePartitionFiles" >> beam.ParDo(_WritePartitionFn(integ.integration_id, integ.config)))
        reports = (files
                   | "CollectFiles" >> beam.combiners.ToList()
                   | "WriteReport" >> beam.ParDo(_WriteReportFn(integ.integration_id, self._vendor, integ.config.path)))
        return {"files": files, "reports": reports, "dead_letters": keyed[DEAD_LETTERS]}
