"""Retention as bucket lifecycle rules: the rule a plan holds, and what an object-store destination
declares to apply rules (``Destination.lifecycle``). Planning is in ``pipelines.retention``."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LifecycleRule:
    integration_id: str
    scheme: str  # the URL scheme the bucket is shown with: "s3", "gs"
    bucket: str
    prefix: str
    label: str
    archive_after_days: int | None
    archive_storage_class: str | None
    delete_after_days: int | None

    @property
    def rule_id(self) -> str:
        digest = hashlib.sha256(f"{self.bucket}/{self.prefix}".encode()).hexdigest()[:12]
        return f"beamhouse-{self.integration_id}-{digest}"

    def describe(self) -> str:
        parts = []
        if self.archive_after_days:
            parts.append(f"archive to {self.archive_storage_class} after {self.archive_after_days} days")
        if self.delete_after_days:
            parts.append(f"delete after {self.delete_after_days} days")
        return f"{self.integration_id} ({self.label}): {self.scheme}://{self.bucket}/{self.prefix}: {', '.join(parts)}"


@dataclass(frozen=True)
class Lifecycle:
    """``scheme``: the store's URL scheme; ``storage_classes``: the archive classes it accepts;
    ``apply(config, integration_id, bucket, rules)``: replace this tool's rules for the integration on
    ``bucket`` by ``rules``, keeping every other rule (raises on failure, never with a credential)."""
    scheme: str
    storage_classes: frozenset[str]
    apply: Callable[[object, str, str, list[LifecycleRule]], None]
