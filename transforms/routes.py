"""Where each event of an object-store integration goes: bucket, prefix, region and encryption key.

Pure functions and pydantic models, no I/O. The ``routing`` block of an ``s3`` or ``gcs`` config::

    "routing": {
      "by_type":  {"otel": {"bucket": "otel-lake"}, "snowplow": {"prefix": "snowplow/"}},
      "residency": {"tenants": {"acme": "eu-west-1"},
                    "regions": {"eu-west-1": {"bucket": "lake-eu", "region": "eu-west-1"}}},
      "tenants":  {"acme": {"kms_key_id": "arn:aws:kms:...:key/..."},
                   "globex": {"bucket": "globex-lake", "prefix": "events/"}},
      "unknown_tenant": "default"
    }

Resolution, later steps overriding earlier ones field by field: the integration's own ``bucket``,
``prefix``, ``region``, key -> the route for the event's data type (its input dialect: segment, snowplow,
cloudevents, otel) -> the route of the tenant's residency region -> the tenant's own entry.
``unknown_tenant``: ``"default"`` (a tenant with no entry uses the routes above, so new tenants need no
setup) or ``"dead_letter"`` (only tenants listed under ``tenants`` or ``residency.tenants`` are delivered;
any other event becomes an ``unknown_tenant`` dead letter).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

import orjson
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9-]{2,40}$")
DIALECTS = ("segment", "snowplow", "cloudevents", "otel")


def normalise_prefix(prefix: str) -> str:
    """``"events"`` -> ``"events/"``; ``""`` stays empty. Rejects absolute, ``.``/``..`` and empty parts."""
    if prefix in ("", "/"):
        return ""
    if "\\" in prefix or any(ord(c) < 32 for c in prefix):
        raise ValueError("prefix must use '/' and no control characters")
    parts = prefix.strip("/").split("/")
    if prefix.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError("prefix must be relative, without empty, '.' or '..' components")
    return "/".join(parts) + "/"


def check_bucket(value: str) -> str:
    if not _BUCKET.match(value) or ".." in value:
        raise ValueError("bucket names are 3-222 lower-case letters, digits, '.', '_' or '-'")
    return value


class Retention(BaseModel):
    """``{"archive_after_days": 30, "archive_storage_class": "GLACIER", "delete_after_days": 365}``:
    applied as bucket lifecycle rules by ``python -m pipelines.retention``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    archive_after_days: int | None = Field(None, ge=1, le=36_500)
    """Move objects to `archive_storage_class` this many days after creation."""
    archive_storage_class: str | None = Field(None, pattern=r"^[A-Z_]{3,40}$")
    """The store's archive class (S3: `GLACIER`, `DEEP_ARCHIVE` ...; GCS: `NEARLINE`, `COLDLINE`, `ARCHIVE`)."""
    delete_after_days: int | None = Field(None, ge=1, le=36_500)
    """Delete objects this many days after creation."""

    @model_validator(mode="after")
    def _consistent(self) -> Retention:
        if (self.archive_after_days is None) != (self.archive_storage_class is None):
            raise ValueError("archive_after_days and archive_storage_class go together")
        if self.archive_after_days is None and self.delete_after_days is None:
            raise ValueError("give archive_after_days/archive_storage_class, delete_after_days, or both")
        if self.archive_after_days and self.delete_after_days and self.delete_after_days <= self.archive_after_days:
            raise ValueError("delete_after_days must be later than archive_after_days")
        return self


class RouteOverride(BaseModel):
    """Fields a route may override. ``kms_key`` is also accepted as ``kms_key_id`` (S3) or
    ``kms_key_name`` (GCS)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, populate_by_name=True)
    bucket: str | None = None
    """Another bucket for this route."""
    prefix: str | None = None
    """Another prefix for this route."""
    region: str | None = Field(None, pattern=_REGION.pattern)
    """The bucket's region (checked at start)."""
    kms_key: str | None = Field(None, min_length=1, max_length=2048,
                                validation_alias=AliasChoices("kms_key", "kms_key_id", "kms_key_name"))
    """Encryption key for this route (`kms_key_id` for S3, `kms_key_name` for GCS)."""
    retention: Retention | None = None
    """Lifecycle rules for this route's bucket/prefix."""

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value):
        return None if value is None else check_bucket(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value):
        return None if value is None else normalise_prefix(value)


class Residency(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    tenants: dict[str, str] = Field(default_factory=dict, description="tenant id -> region")
    regions: dict[str, RouteOverride] = Field(default_factory=dict, description="region -> route")

    @model_validator(mode="after")
    def _known_regions(self) -> Residency:
        missing = sorted({r for r in self.tenants.values() if r not in self.regions})
        if missing:
            raise ValueError(f"residency.tenants names regions without a route in residency.regions: {missing}")
        for region, route in self.regions.items():
            if route.region is None:
                route.region = region
        return self


class Routing(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    by_type: dict[str, RouteOverride] = Field(default_factory=dict)
    """Per data type (the input dialect: `segment`, `snowplow`, `cloudevents`, `otel`)."""
    residency: Residency = Field(default_factory=Residency)
    """Tenants pinned to regions, and each region's route."""
    tenants: dict[str, RouteOverride] = Field(default_factory=dict)
    """Per tenant id: its own bucket, prefix, key or retention."""
    unknown_tenant: Literal["default", "dead_letter"] = "default"
    """A tenant without an entry: the integration's route (`default`), or a dead letter `unknown_tenant`."""

    @field_validator("by_type")
    @classmethod
    def _types(cls, value):
        unknown = sorted(set(value) - set(DIALECTS))
        if unknown:
            raise ValueError(f"by_type keys must be data types ({', '.join(DIALECTS)}); unknown: {unknown}")
        return value


@dataclass(frozen=True)
class Route:
    """One destination root. ``tenant`` is set when the route (or its key) belongs to one tenant, so
    that tenant's files and reports are kept apart from everyone else's."""

    bucket: str
    prefix: str
    region: str | None
    kms_key: str | None
    tenant: str | None = None

    def key(self) -> str:
        """A stable string form (a GroupByKey key)."""
        return orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS).decode()

    @staticmethod
    def from_key(key: str) -> Route:
        return Route(**orjson.loads(key))


class UnknownTenant(LookupError):
    """No route for the event's tenant while ``unknown_tenant`` is ``dead_letter``."""


def _apply(route: dict, override: RouteOverride | None) -> None:
    if override is None:
        return
    for field in ("bucket", "prefix", "region", "kms_key"):
        value = getattr(override, field)
        if value is not None:
            route[field] = value


def resolve(base: RouteOverride, routing: Routing, tenant: str | None, dialect: str | None) -> Route:
    """The route of an event with this tenant and data type. Raises ``UnknownTenant``."""
    own = routing.tenants.get(tenant) if tenant is not None else None
    region = routing.residency.tenants.get(tenant) if tenant is not None else None
    if routing.unknown_tenant == "dead_letter" and own is None and region is None:
        raise UnknownTenant("event has no tenant" if tenant is None else "tenant has no route")
    route = {"bucket": base.bucket, "prefix": base.prefix or "", "region": base.region, "kms_key": base.kms_key}
    _apply(route, routing.by_type.get(dialect))
    if region is not None:
        _apply(route, routing.residency.regions[region])
    _apply(route, own)
    # A tenant's own entry or residency gives it a route of its own: its files and reports stay apart.
    scoped = tenant if (own is not None or region is not None) else None
    return Route(route["bucket"], route["prefix"], route["region"], route["kms_key"], scoped)


def static_routes(base: RouteOverride, routing: Routing) -> list[tuple[str, Route, Retention | None]]:
    """Every route named in the config, with the retention that applies to it (for preflight checks and
    lifecycle rules): ``(label, route, retention)``. A tenant's retention falls back to the integration's."""
    out = [("default", resolve(base, Routing(), None, None), base.retention)]
    for dialect, override in routing.by_type.items():
        r = dict(bucket=base.bucket, prefix=base.prefix or "", region=base.region, kms_key=base.kms_key)
        _apply(r, override)
        out.append((f"type {dialect}", Route(**r), override.retention or base.retention))
    for region, override in routing.residency.regions.items():
        r = dict(bucket=base.bucket, prefix=base.prefix or "", region=base.region, kms_key=base.kms_key)
        _apply(r, override)
        out.append((f"region {region}", Route(**r), override.retention or base.retention))
    for tenant, override in routing.tenants.items():
        route = resolve(base, routing, tenant, None)
        out.append((f"tenant {tenant}", route, override.retention or base.retention))
    return out
