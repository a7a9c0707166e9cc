"""Vendor ``gcs``: files in Google Cloud Storage, with the same options as ``s3``::

    {"bucket": "my-lake", "prefix": "events/", "service_account_json": "file:/secrets/sa.json",
     "kms_key_name": "projects/P/locations/L/keyRings/R/cryptoKeys/K", "file_format": "parquet"}

Credentials: ``service_account_json`` (inline JSON, or a reference such as ``env:GCS_SA`` /
``file:PATH``), else application default credentials; with ``endpoint_url`` and no service account
the requests are anonymous (emulators). ``project_id`` defaults to the service account's project.

Each file is one upload with ``ifGenerationMatch=0`` (create only, so retries are safe and never
overwrite) and a CRC32C check; ``kms_key_name`` (or the tenant's key) is set on every object (CMEK).
Delivery needs ``storage.objects.create`` (and ``cloudkms.cryptoKeyVersions.useToEncrypt`` for the
service agent on CMEK keys); ``storage.objects.get`` is needed only for file names without ``{id}``.
"""
from __future__ import annotations

import typing

from pydantic import Field

from transforms.lifecycle import Lifecycle, LifecycleRule
from transforms.routes import Route
from transforms.secrets import SecretField
from transforms.sinks.base import Destination
from transforms.sinks.files import WriteEventsToFiles
from transforms.sinks.objectstore import ObjectStoreConfig, relocate_bucket
from transforms.storage.gcs import GCSStorage


class GCSConfig(ObjectStoreConfig):
    URL_SCHEME: typing.ClassVar[str] = "gs"
    region: str | None = Field(None, pattern=r"^[a-z0-9-]{2,40}$", description="expected bucket location")
    project_id: str | None = Field(None, pattern=r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$")
    """(gcs) ."""
    service_account_json: SecretField | None = None
    """(gcs) the key JSON (string or object), inline or by reference; with `endpoint_url` and no key, anonymous
    (emulators)"""
    kms_key_name: str | None = Field(None, pattern=r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")
    """(s3 / gcs) SSE-KMS key id/ARN on every S3 object; Cloud KMS key on every GCS object (CMEK)"""

    def region_name(self):
        return self.region

    def kms_key(self):
        return self.kms_key_name

    def connection(self) -> dict:
        return {"endpoint_url": self.endpoint_url, "service_account_json": self.service_account_json,
                "project_id": self.project_id, "max_attempts": self.max_attempts}

    def open_storage(self, route: Route) -> GCSStorage:
        return GCSStorage(route.bucket, route.prefix, kms_key_name=route.kms_key, **self.connection())

    # No key_problem check before writing: Cloud KMS key state needs the KMS API, and GCS itself refuses a
    # disabled or unusable key at write time, which fails closed the same way (GCSStorage.put_if_absent).

    def preflight(self) -> list[str]:
        if self.service_account_json is not None and (p := self.service_account_json.check()):
            return [f"service_account_json: {p}"]
        problems = []
        for label, route, _ in self.static_routes():
            problem = GCSStorage(route.bucket, route.prefix, **self.connection()).bucket_problem(route.region)
            if problem:
                problems.append(f"routing ({label}): {problem}")
        return problems




GCS_CLASSES = frozenset({"NEARLINE", "COLDLINE", "ARCHIVE"})


def gcs_rules(rule: LifecycleRule) -> list[dict]:
    """The GCS lifecycle rules for ``rule``. Pure."""
    condition = {"matchesPrefix": [rule.prefix]} if rule.prefix else {}
    out = []
    if rule.archive_after_days:
        out.append({"action": {"type": "SetStorageClass", "storageClass": rule.archive_storage_class},
                    "condition": {"age": rule.archive_after_days, **condition}})
    if rule.delete_after_days:
        out.append({"action": {"type": "Delete"}, "condition": {"age": rule.delete_after_days, **condition}})
    return out


def merge_gcs(existing: list[dict], ours: list[dict], managed_prefixes: set[str]) -> list[dict]:
    def managed(rule):
        prefixes = rule.get("condition", {}).get("matchesPrefix") or [""]
        return len(prefixes) == 1 and prefixes[0] in managed_prefixes
    return [r for r in existing if not managed(r)] + ours


def apply_lifecycle(config, iid: str, bucket: str, rules: list[LifecycleRule]) -> None:
    from transforms.storage.gcs import client

    gcs_bucket = client(config.endpoint_url, config.service_account_json, config.project_id).get_bucket(bucket)
    ours = [g for r in rules for g in gcs_rules(r)]
    gcs_bucket.lifecycle_rules = merge_gcs(list(gcs_bucket.lifecycle_rules), ours, {r.prefix for r in rules})
    gcs_bucket.patch()


DESTINATION = Destination(GCSConfig, WriteEventsToFiles, relocate=relocate_bucket,
                          lifecycle=Lifecycle("gs", GCS_CLASSES, apply_lifecycle))
