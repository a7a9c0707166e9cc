"""What the ``s3`` and ``gcs`` vendors share: the seed-000 bucket/prefix config, routing, retention and
the start-up checks. Each vendor module adds its credentials and its storage class.

Layouts come from ``partition_by`` and ``file_name`` (see ``transforms.partitioning``)::

    year={yyyy}/month={MM}/day={dd}/hour={HH}        + events-{epoch}-{id}   (default, seed 000)
    tenant_id={tenant_id}/app_id={app_id}/{yyyy}/{MM}/{dd}/{HH}
                                                     + data_{yyyy}_{MM}_{dd}_{HH}_{mm}_{ss}  (seed 003)
    date={date}/hour={HH}/min={min15}                (seed 002; {min30} for half hours)
    {date}                                           (daily, seeds 001 and 004)
"""
from __future__ import annotations

import typing

from pydantic import Field, field_validator, model_validator

from transforms import routes
from transforms.routes import Retention, Route, RouteOverride, Routing
from transforms.sinks.files import FileOutputConfig


class ObjectStoreConfig(FileOutputConfig):
    bucket: str
    """Bucket name."""
    prefix: str = "datafly/events/"  # the seed's default
    """Key prefix; a trailing `/` is added."""
    endpoint_url: str | None = Field(None, pattern=r"^https?://[^\s]+$",
                                     description="S3- or GCS-compatible endpoint (MinIO, emulators)")
    routing: Routing = Field(default_factory=Routing)
    """By data type, tenant and residency (below)"""
    retention: Retention | None = None
    """`{"archive_after_days", "archive_storage_class", "delete_after_days"}` for `pipelines.retention`."""
    max_attempts: int = Field(5, ge=1, le=20, description="attempts per request, transient errors retried")
    check_kms_keys: bool = Field(True, description="check each key's state before its first write")

    URL_SCHEME: typing.ClassVar[str] = ""  # each store's: s3, gs

    def destination(self) -> str:
        return f"{self.URL_SCHEME}://{self.bucket}/{self.prefix}".rstrip("/") + "/"

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return routes.check_bucket(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return routes.normalise_prefix(value)

    @model_validator(mode="after")
    def _tenant_retention(self):
        """A tenant's retention needs a prefix only that tenant's objects live under."""
        template = self.partition_by.split("/")
        for tenant, override in self.routing.tenants.items():
            if override.retention is None:
                continue
            own = override.bucket is not None or override.prefix is not None
            if not own and "{tenant_id}" not in template[0]:
                raise ValueError(f"routing.tenants.{tenant}.retention: give the tenant its own bucket or prefix, "
                                 f"or a partition_by that starts with the tenant ({{tenant_id}})")
        return self

    # -- routing --------------------------------------------------------------------------------
    def base_route(self) -> RouteOverride:
        return RouteOverride(bucket=self.bucket, prefix=self.prefix, region=self.region_name(),
                             kms_key=self.kms_key(), retention=self.retention)

    def route_for(self, tenant, dialect) -> Route:
        return routes.resolve(self.base_route(), self.routing, tenant, dialect)

    def routing_columns(self) -> tuple[str, ...]:
        r = self.routing
        by_tenant = bool(r.tenants or r.residency.tenants) or r.unknown_tenant == "dead_letter"
        return (("_tenant_id",) if by_tenant else ()) + (("_dialect",) if r.by_type else ())

    def static_routes(self):
        return routes.static_routes(self.base_route(), self.routing)

    def region_name(self) -> str | None:
        return None

    def kms_key(self) -> str | None:
        return None


def relocate_bucket(config, output: str):
    """``regenerate --output <scheme>://bucket/prefix``: the same settings under another bucket and prefix."""
    scheme = f"{config.URL_SCHEME}://"
    if not output.startswith(scheme):
        raise ValueError(f"--output: this export regenerates into {scheme}bucket/prefix")
    bucket, _, prefix = output[len(scheme):].partition("/")
    config = config.model_copy()
    config.bucket = routes.check_bucket(bucket)
    config.prefix = routes.normalise_prefix(prefix)
    return config
