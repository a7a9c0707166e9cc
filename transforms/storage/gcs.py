"""Objects in Google Cloud Storage, published with ``ifGenerationMatch=0`` and a CRC32C check; the cached
google-cloud-storage clients."""
from __future__ import annotations

from transforms import clients
from transforms.secrets import redact
from transforms.storage import META_BATCH, META_SHA256, KeyUnusable, LookupDenied, PublishError

SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)


def client(endpoint_url=None, service_account_json=None, project_id=None):
    """A cached google-cloud-storage client; the service account is read here, on the worker."""
    info = service_account_json.get() if service_account_json is not None else None

    def make():
        from google.cloud import storage

        try:
            creds, key_project = clients.google_credentials(info, endpoint_url, SCOPES)
        except clients.UnusableKey as exc:
            raise PublishError(str(exc)) from None
        project = project_id or key_project or ("anonymous" if endpoint_url and info is None else None)
        options = {"api_endpoint": endpoint_url} if endpoint_url else None
        return storage.Client(project=project, credentials=creds, client_options=options)

    return clients.cached(("gcs", endpoint_url, info, project_id), make)


class GCSStorage:
    """Objects under ``gs://<bucket>/<prefix>``, published with ``ifGenerationMatch=0``."""

    def __init__(self, bucket: str, prefix: str = "", kms_key_name: str | None = None, endpoint_url=None,
                 service_account_json=None, project_id=None, max_attempts: int = 5):
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.kms_key_name = kms_key_name
        self._conn = dict(endpoint_url=endpoint_url, service_account_json=service_account_json, project_id=project_id)
        self._max_attempts = max_attempts

    def _bucket(self):
        return client(**self._conn).bucket(self.bucket)

    def _retry(self):
        from google.cloud.storage.retry import DEFAULT_RETRY

        # Bounded: transient errors (429, 5xx, connection resets) are retried with backoff for at most
        # about 2 s * 2^attempts; a create-only upload is idempotent, so retrying can never duplicate.
        deadline = min(300.0, 2.0 * (2 ** self._max_attempts))
        return DEFAULT_RETRY.with_timeout(deadline)

    def put_if_absent(self, relative: str, data: bytes, metadata: dict) -> bool:
        from google.api_core import exceptions as gexc

        blob = self._bucket().blob(self.prefix + relative, kms_key_name=self.kms_key_name)
        blob.metadata = metadata
        try:
            blob.upload_from_string(data, content_type="application/octet-stream", if_generation_match=0,
                                    checksum="crc32c", retry=self._retry(), timeout=120)
        except gexc.PreconditionFailed:
            return False
        except (gexc.BadRequest, gexc.Forbidden) as exc:
            message = getattr(exc, "message", str(exc))
            if self.kms_key_name and ("kms" in message.lower() or "cryptokey" in message.lower()):
                raise KeyUnusable(redact(f"{relative}: GCS refused the KMS key ({message})")) from None
            raise PublishError(redact(f"{relative}: GCS upload failed ({type(exc).__name__}: {message})")) from None
        return True

    def list_names(self, folder: str) -> list[str]:
        """Relative names of the objects directly under ``folder`` (needs storage.objects.list; raises
        ``LookupDenied`` without it)."""
        from google.api_core import exceptions as gexc

        base = self.prefix + folder + "/"
        try:
            blobs = client(**self._conn).list_blobs(self.bucket, prefix=base, delimiter="/", timeout=60)
            return sorted(folder + "/" + b.name[len(base):] for b in blobs)
        except gexc.Forbidden:
            raise LookupDenied(f"{folder}: no list access") from None

    def read(self, relative: str) -> bytes:
        """An object's bytes (needs storage.objects.get; raises ``LookupDenied`` without it)."""
        from google.api_core import exceptions as gexc

        try:
            return self._bucket().blob(self.prefix + relative).download_as_bytes(timeout=120, retry=self._retry())
        except gexc.Forbidden:
            raise LookupDenied(f"{relative}: no read access") from None

    def public_name(self, relative: str) -> str:
        return relative

    def remove(self, relative: str) -> None:
        """Delete one object (bookkeeping markers; needs storage.objects.delete); a missing one is fine."""
        from google.api_core import exceptions as gexc

        try:
            self._bucket().blob(self.prefix + relative).delete(timeout=60, retry=self._retry())
        except gexc.NotFound:
            pass

    def lookup(self, relative: str) -> dict | None:
        from google.api_core import exceptions as gexc

        try:
            blob = self._bucket().get_blob(self.prefix + relative, timeout=60)
        except gexc.Forbidden:
            raise LookupDenied(f"{relative}: no read access") from None
        if blob is None:
            return None
        meta = blob.metadata or {}
        return {"bytes": blob.size, "sha256": meta.get(META_SHA256, ""), "batch": meta.get(META_BATCH)}

    def bucket_problem(self, region: str | None) -> str | None:
        from google.api_core import exceptions as gexc

        try:
            bucket = client(**self._conn).get_bucket(self.bucket, timeout=30)
        except gexc.NotFound:
            return f"bucket {self.bucket!r} does not exist"
        except gexc.Forbidden:
            return None  # least privilege: the first write will tell
        except Exception as exc:  # noqa: BLE001
            return redact(f"bucket {self.bucket!r}: {type(exc).__name__}: {exc}")
        location = (bucket.location or "").lower()
        if region and location and location != region.lower():
            return f"bucket {self.bucket!r} is in {location}, the config says {region}"
        return None
