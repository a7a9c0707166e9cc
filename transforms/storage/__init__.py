"""Storage: where a file destination's bytes go. One seam, as Kafka Connect's storage interfaces are:
the publish-and-report protocol (``transforms.commit``), the delivery ledger (``transforms.ledger``) and
dead letters use only the ``Storage`` protocol below, never a vendor's client.

Implementations (one module each): ``local`` (a folder), ``beamfs`` (any other Beam filesystem), ``s3``
(conditional PutObject), ``gcs`` (``ifGenerationMatch=0``), ``sftp`` (write then rename without overwrite).
``storage_for(root)`` picks one from a URL's scheme; destinations open theirs with their own settings
(``config.open_storage(route)``).

Names are relative to the storage's root and use ``/``. Paths starting with ``_`` hold bookkeeping
(reports, ledger, markers) that lake readers skip.
"""
from __future__ import annotations

from typing import Protocol

# Object metadata a publish records where the store keeps metadata (S3, GCS), read back by ``lookup``.
META_SHA256 = "beamhouse-sha256"
META_BATCH = "beamhouse-batch"


class PublishError(RuntimeError):
    """Publishing or verifying a file failed."""


class KeyUnusable(PublishError):
    """The encryption key configured for the data cannot be used. Nothing was written (fail closed)."""


class LookupDenied(PublishError):
    """The destination does not allow reading an existing object's metadata."""


class Storage(Protocol):
    """What a storage provides. Every method may raise ``PublishError``; reading methods raise
    ``LookupDenied`` where the store's policy allows no reading (publishing still works then)."""

    def put_if_absent(self, relative: str, data: bytes, metadata: dict) -> bool:
        """Create ``relative`` holding ``data`` (with ``metadata`` where the store keeps it), complete or
        not at all; False, writing nothing, when the name already exists. Never overwrites."""

    def lookup(self, relative: str) -> dict | None:
        """``{"bytes", "sha256", "batch"}`` of an existing file (``None`` values where the store cannot
        tell), or None when there is none."""

    def list_names(self, folder: str) -> list[str]:
        """Relative names of the files directly under ``folder``, sorted (none when it is missing)."""

    def read(self, relative: str) -> bytes:
        """A file's bytes."""

    def remove(self, relative: str) -> None:
        """Delete a bookkeeping file; a missing one is fine. Never used on delivered data."""

    def public_name(self, relative: str) -> str:
        """The name a reader finds ``relative`` under (what reports list; sFTP flattens folders)."""


def storage_for(root: str, **options) -> Storage:
    """The storage for a destination root: a local path (or ``file://``), ``s3://bucket/prefix``,
    ``gs://bucket/prefix`` (default credentials; ``options`` as the S3/GCS storages take them), or
    another Beam filesystem's URL."""
    if root.startswith("s3://"):
        from transforms.storage.s3 import S3Storage

        bucket, _, prefix = root[5:].partition("/")
        return S3Storage(bucket=bucket, prefix=prefix, **options)
    if root.startswith("gs://"):
        from transforms.storage.gcs import GCSStorage

        bucket, _, prefix = root[5:].partition("/")
        return GCSStorage(bucket=bucket, prefix=prefix, **options)
    if "://" not in root or root.startswith("file://"):
        from transforms.storage.local import LocalStorage

        return LocalStorage(root[len("file://"):] if root.startswith("file://") else root)
    from transforms.storage.beamfs import BeamStorage

    return BeamStorage(root)
