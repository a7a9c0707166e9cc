"""Vendor ``s3``: files in Amazon S3 (or an S3-compatible store), the seed-000 config as it is::

    {"bucket": "my-analytics-bucket", "prefix": "datafly/events/", "region": "us-east-1",
     "access_key_id": "AKIA...", "secret_access_key": "env:AWS_SECRET", "file_format": "json",
     "compression": "gzip", "batch_size": 1000, "batch_interval_seconds": 300}

plus ``csv``/``zstd``, ``endpoint_url``, ``kms_key_id`` (SSE-KMS on every object), routing, retention
and quota (see ``transforms.sinks.objectstore`` and ``transforms.routes``). Without keys the default
AWS credential chain is used (environment, shared config, instance or task role).

Delivery needs only ``s3:PutObject`` (plus ``s3:GetBucketLocation`` for the start-up check, and
``kms:GenerateDataKey`` on SSE-KMS keys): one ``PutObject`` per file with ``If-None-Match: *`` and
``x-amz-checksum-sha256``, never a list, copy or delete. Optional reads: ``s3:GetObject`` lets a retry
confirm an existing object is its own (needed only for file names without ``{id}``), ``kms:DescribeKey``
lets the writer refuse a disabled key before trying it.
"""
from __future__ import annotations

import typing

from pydantic import Field, model_validator

from transforms.lifecycle import Lifecycle, LifecycleRule
from transforms.routes import Route
from transforms.secrets import SecretField
from transforms.sinks.base import Destination
from transforms.sinks.files import WriteEventsToFiles
from transforms.sinks.objectstore import ObjectStoreConfig, relocate_bucket
from transforms.storage.s3 import S3Storage


class S3Config(ObjectStoreConfig):
    URL_SCHEME: typing.ClassVar[str] = "s3"
    region: str = Field(pattern=r"^[a-z0-9-]{2,40}$")
    """(s3 (required), gcs (optional check)) the bucket's region; checked at start with `GetBucketLocation`."""
    access_key_id: SecretField | None = None
    """(s3) keys, inline or by reference."""
    secret_access_key: SecretField | None = None
    """(s3) keys, inline or by reference."""
    session_token: SecretField | None = None
    """(s3) keys, inline or by reference."""
    kms_key_id: str | None = Field(None, min_length=1, max_length=2048)
    """(s3 / gcs) SSE-KMS key id/ARN on every S3 object; Cloud KMS key on every GCS object (CMEK)"""

    @model_validator(mode="after")
    def _keys_together(self):
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither (default credential chain)")
        return self

    def region_name(self):
        return self.region

    def kms_key(self):
        return self.kms_key_id

    def connection(self) -> dict:
        return {"endpoint_url": self.endpoint_url, "access_key_id": self.access_key_id,
                "secret_access_key": self.secret_access_key, "session_token": self.session_token,
                "max_attempts": self.max_attempts}

    def open_storage(self, route: Route) -> S3Storage:
        return S3Storage(route.bucket, route.prefix, region=route.region or self.region,
                         kms_key_id=route.kms_key, **self.connection())

    def key_problem(self, route: Route) -> str | None:
        if route.kms_key is None or not self.check_kms_keys:
            return None
        return S3Storage(route.bucket, route.prefix, region=route.region or self.region, **self.connection()) \
            .kms_key_problem(route.kms_key)

    def preflight(self) -> list[str]:
        """Start-up checks: secrets resolve, each routed bucket exists and is in its configured region."""
        problems = [f"{name}: {p}" for name in ("access_key_id", "secret_access_key", "session_token")
                    if getattr(self, name) is not None and (p := getattr(self, name).check())]
        if problems:
            return problems
        seen = set()
        for label, route, _ in self.static_routes():
            if route.bucket in seen:
                continue
            seen.add(route.bucket)
            storage = S3Storage(route.bucket, route.prefix, region=route.region or self.region, **self.connection())
            problem = storage.bucket_problem(route.region or self.region)
            if problem:
                problems.append(f"routing ({label}): {problem}")
        return problems




S3_CLASSES = frozenset({"STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER", "GLACIER_IR", "DEEP_ARCHIVE"})


def s3_rule(rule: LifecycleRule) -> dict:
    """The S3 lifecycle rule document for ``rule``. Pure."""
    out = {"ID": rule.rule_id, "Filter": {"Prefix": rule.prefix}, "Status": "Enabled"}
    if rule.archive_after_days:
        out["Transitions"] = [{"Days": rule.archive_after_days, "StorageClass": rule.archive_storage_class}]
    if rule.delete_after_days:
        out["Expiration"] = {"Days": rule.delete_after_days}
    return out


def merge_s3(existing: list[dict], ours: list[dict], integration_id: str) -> list[dict]:
    mine = f"beamhouse-{integration_id}-"
    return [r for r in existing if not r.get("ID", "").startswith(mine)] + ours


def apply_lifecycle(config, iid: str, bucket: str, rules: list[LifecycleRule]) -> None:
    from botocore.exceptions import ClientError

    from transforms.storage.s3 import client

    s3 = client("s3", config.region, **config.connection())
    try:
        existing = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
            raise
        existing = []
    merged = merge_s3(existing, [s3_rule(r) for r in rules], iid)
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": merged})


DESTINATION = Destination(S3Config, WriteEventsToFiles, relocate=relocate_bucket,
                          lifecycle=Lifecycle("s3", S3_CLASSES, apply_lifecycle))
