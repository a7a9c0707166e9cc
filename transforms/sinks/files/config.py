"""The files destination's settings (also the base of the s3, gcs and sftp configs)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from transforms import formats, partitioning
from transforms.integrations import BaseDestinationConfig
from transforms.profiles.hackle import HackleSettings
from transforms.profiles.registry import PROFILES
from transforms.profiles.statsig import StatsigSettings
from transforms.routes import Route
from transforms.storage import storage_for


class Quota(BaseModel):
    """Per-tenant daily byte quota: ``{"daily_bytes": 10000000000, "tenants": {"acme": 5e10},
    "action": "warn"}``. Bytes written for a tenant in one UTC day of delivery (a batch run is one
    day) are compared with its limit; ``warn`` logs and reports it in the summary, ``fail`` also makes the
    run exit with status 1 once delivery is done (no data is dropped for a quota)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    daily_bytes: int | None = Field(None, ge=1)
    """Bytes a tenant may have written per UTC day of delivery, unless `tenants` names its own limit."""
    tenants: dict[str, int] = Field(default_factory=dict)
    """Per-tenant limits: tenant id -> bytes per day."""
    action: Literal["warn", "fail"] = "warn"
    """`warn` logs and reports an exceeded quota; `fail` also exits 1 after delivery (nothing is dropped)."""

    def limit(self, tenant: str) -> int | None:
        return self.tenants.get(tenant, self.daily_bytes)


class FileOutputConfig(BaseDestinationConfig):
    """What every file-writing vendor accepts: format, compression, layout and naming."""

    profile: Literal[tuple(PROFILES)] = "warehouse"
    """Output row shape: `warehouse` (the 13 canonical columns), or an importer's: `hackle`, `statsig`
    (docs/events.md, Output profiles)."""
    hackle: HackleSettings = Field(default_factory=HackleSettings)
    """Settings of the `hackle` profile."""
    statsig: StatsigSettings = Field(default_factory=StatsigSettings)
    """Settings of the `statsig` profile."""
    partition_timezone: str = "UTC"
    """IANA time zone whose clock the layout's days and hours follow (e.g. `Asia/Seoul`); `UTC` by default."""
    file_format: Literal["json", "parquet", "csv"] = "json"
    """`json` (NDJSON), `parquet` or `csv`."""
    compression: Literal["gzip", "snappy", "zstd", "none"] | None = None
    """`gzip`, `zstd`, `none`; `snappy` for Parquet only."""
    partition_by: str = partitioning.DEFAULT_TEMPLATE
    """Template; time `{yyyy} {MM} {dd} {HH} {mm} {ss} {date}`, minute ranges `{min15}` (`00-15` … `45-60`) and
    `{min30}` (`00-30`, `30-60`), fields `{tenant_id} {app_id} {type} {event} {dialect}`, in any order."""
    partition_time: Literal["timestamp", "received_at"] = "timestamp"
    """`timestamp` (event time) or `received_at`, in UTC."""
    file_prefix: str = Field("events", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    """File names are `<prefix>-<epoch>-<batch id>.<ext>`."""
    file_name: str | None = None
    """Name template without extension: `{yyyy} {MM} {dd} {HH} {mm} {ss} {epoch}` (the file's earliest event),
    `{id}` (the batch id) and `{n}` (the file's number in its partition, in one generation); e.g. seed 003's
    `data_{yyyy}_{MM}_{dd}_{HH}_{mm}_{ss}`."""
    csv_separator: str = Field(",", min_length=1, max_length=1)
    """One character."""
    quota: Quota | None = None
    """`{"daily_bytes": N, "tenants": {"acme": N}, "action": "warn"}`: per-tenant bytes written per UTC day of
    delivery (a batch run is one day); `warn` logs and reports, `fail` also exits 1 after delivery. Nothing is
    dropped for a quota."""
    schedule_minutes: Literal[15, 30, 60] | None = Field(
        None, description="scheduled export (seed 002): in streaming, deliver every N minutes all that arrived")
    completion_marker: str | None = Field(
        None, pattern=r"^_[A-Za-z0-9_.-]{1,63}$",
        description="write this file (e.g. _SUCCESS) into each time partition once it is complete")
    completion_lateness_seconds: float = Field(
        3600, ge=0, description="a partition is complete when delivered data was received this long after its end")

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data):
        # Importer profiles fix the format and the layout their importer reads.
        if isinstance(data, dict) and data.get("profile") in PROFILES:
            data = PROFILES[data["profile"]].defaults(dict(data))
        return data

    @model_validator(mode="before")
    @classmethod
    def _schedule(cls, data):
        # A schedule is the batch interval; batches are then cut by time only (the size limit at its maximum).
        if isinstance(data, dict) and data.get("schedule_minutes") is not None:
            if "batch_interval_seconds" in data:
                raise ValueError("give schedule_minutes or batch_interval_seconds, not both")
            data = dict(data)
            if isinstance(data["schedule_minutes"], int):
                data["batch_interval_seconds"] = data["schedule_minutes"] * 60
            data.setdefault("batch_size", 1_000_000)
        return data

    @field_validator("partition_by")
    @classmethod
    def _template(cls, value: str) -> str:
        partitioning.parse_template(value)  # raises ValueError with the reason
        return value

    @field_validator("partition_timezone")
    @classmethod
    def _partition_tz(cls, value: str) -> str:
        return StatsigSettings._tz(value)

    @model_validator(mode="after")
    def _profile_check(self):
        self.output_profile().check(self)
        return self

    def output_profile(self):
        """This integration's output profile (``transforms.profiles.base.Profile``)."""
        return PROFILES[self.profile]

    @model_validator(mode="after")
    def _completion(self):
        if self.completion_marker is not None and \
                partitioning.time_span(partitioning.parse_template(self.partition_by)) is None:
            raise ValueError("completion_marker needs a time placeholder in partition_by (partitions must end)")
        return self

    def completes_partitions(self) -> bool:
        """Whether partitions are tracked until complete (a completion marker, or Statsig's day signal)."""
        return self.output_profile().completes_partitions(self)

    def completion_lateness_us(self) -> int:
        return int(self.output_profile().completion_lateness_seconds(self) * 1_000_000)

    @field_validator("file_name")
    @classmethod
    def _file_name(cls, value):
        if value is not None:
            partitioning.parse_file_template(value)
        return value

    @field_validator("csv_separator")
    @classmethod
    def _separator(cls, value: str) -> str:
        if value in "\"\r\n" or value.isalnum():
            raise ValueError("separator must not be a quote, a line break, a letter or a digit")
        return value

    @model_validator(mode="after")
    def _compression(self):
        if self.compression is None:
            self.compression = formats.DEFAULT_COMPRESSION[self.file_format]
        elif self.compression not in formats.ALLOWED_COMPRESSION[self.file_format]:
            allowed = ", ".join(formats.ALLOWED_COMPRESSION[self.file_format])
            raise ValueError(f"compression {self.compression!r} does not apply to {self.file_format} (use {allowed})")
        if self.file_name is None:
            self.file_name = self.file_prefix + "-{epoch}-{id}"
        return self

    # What the writer asks of a vendor config (overridden by the object stores).
    def route_for(self, tenant: str | None, dialect: str | None) -> Route:
        return Route("", "", None, None)

    def routing_columns(self) -> tuple[str, ...]:
        """The event columns the route depends on (``_tenant_id``, ``_dialect``); none for one root."""
        return ()

    def open_storage(self, route: Route):
        raise NotImplementedError

    def key_problem(self, route: Route) -> str | None:
        """Why ``route``'s encryption key cannot be used, or None."""
        return None


class FilesConfig(FileOutputConfig):
    path: str = Field(min_length=1, description="Destination root: a local path, s3://, gs:// or another Beam filesystem")

    def destination(self) -> str:
        import os

        if "://" in self.path:  # s3://, gs://: the same place as an object-store vendor's bucket/prefix
            return self.path.rstrip("/") + "/"
        return "file://" + os.path.abspath(self.path).rstrip("/") + "/"

    def open_storage(self, route: Route):
        return storage_for(self.path)
