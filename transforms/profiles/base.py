"""The output-profile protocol of the file destinations (``files``, ``s3``, ``gcs``, ``sftp``): the row shape
and layout an importer reads. A profile is one module declaring a ``Profile`` subclass (its settings, the
layout it fixes, the rows it cannot hold, its row shape, what finishing a partition means for it), plus one
line in ``transforms.profiles.registry``. Nothing outside the profile's module switches on its name.

The files sink calls, per integration ``config`` (a ``FileOutputConfig``):

- ``defaults(data)`` before validation: fix the format and layout the importer reads (``ValueError`` for a
  setting that contradicts them);
- ``check(config)`` after validation (``ValueError``);
- ``rejected(table, config)`` on warehouse rows before writing: ``[(row index, reason)]`` for rows the
  importer's contract cannot hold (dead letters ``profile_rejected``);
- ``shape(table, config) -> (table, map key collisions)``: the rows as the importer's columns, then encoded
  by ``formats``;
- ``completes_partitions(config)``, ``completion_lateness_seconds(config)``, ``after_completion(partition)``
  and ``finish_partition(storage, partition, end_us, config)``: partition completion (markers, signals).
"""
from __future__ import annotations

import pyarrow as pa


class Profile:
    """The ``warehouse`` profile (the canonical 13 columns, any format and layout); the base of the others."""

    name = "warehouse"
    file_format: str | None = None  # the one format the importer reads (None: any)

    def settings(self, config):
        """This profile's settings on ``config`` (its field named after the profile), or None."""
        return getattr(config, self.name, None)

    def defaults(self, data: dict) -> dict:
        if self.file_format is not None:
            if data.get("file_format", self.file_format) != self.file_format:
                raise ValueError(f"profile {self.name} writes {self.file_format.capitalize()} (leave file_format out or "
                                 f"set {self.file_format})")
            data = {**data, "file_format": self.file_format}
        return data

    def check(self, config) -> None:
        return None

    def rejected(self, table: pa.Table, config) -> list[tuple[int, str]]:
        return []

    def shape(self, table: pa.Table, config) -> tuple[pa.Table, int]:
        return table, 0

    def completes_partitions(self, config) -> bool:
        return config.completion_marker is not None

    def completion_lateness_seconds(self, config) -> float:
        return config.completion_lateness_seconds

    def after_completion(self, partition: str) -> tuple[str, str]:
        """The dead-letter reason and message for events of a partition already completed."""
        return "partition_complete", f"{partition} was already marked complete"

    def finish_partition(self, storage, partition: str, end_us: int, config) -> dict:
        """What completing ``partition`` publishes besides the completion marker; returns what it did."""
        return {}


WAREHOUSE = Profile()
