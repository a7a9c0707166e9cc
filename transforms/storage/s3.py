"""Objects in Amazon S3 (or an S3-compatible store), published with conditional PutObject
(``If-None-Match: *``) and an ``x-amz-checksum-sha256`` check; the cached boto3 clients."""
from __future__ import annotations

import base64
import contextlib
import hashlib

from transforms import clients
from transforms.secrets import redact
from transforms.storage import META_BATCH, META_SHA256, KeyUnusable, LookupDenied, PublishError

CONTENT_TYPES = {".parquet": "application/vnd.apache.parquet", ".gz": "application/gzip",
                 ".zst": "application/zstd", ".json": "application/x-ndjson", ".csv": "text/csv"}


def is_kms_refusal(code: str, message: str) -> bool:
    """S3 refused an SSE-KMS write because of the key (``KMS.DisabledException``, ``KMS.NotFoundException``
    ..., or AccessDenied/InvalidArgument naming KMS): fail closed, never retry without the key."""
    return code.startswith("KMS.") or (code in ("AccessDenied", "InvalidArgument") and "kms" in message.lower())


def client(service: str, region: str | None, endpoint_url: str | None, access_key_id=None, secret_access_key=None,
           session_token=None, max_attempts: int = 5):
    """A cached boto3 client. Credentials are resolved here, on the worker, from their references."""
    creds = tuple(s.get() if s is not None else None for s in (access_key_id, secret_access_key, session_token))

    def make():
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(aws_access_key_id=creds[0], aws_secret_access_key=creds[1],
                                        aws_session_token=creds[2], region_name=region)
        config = Config(retries={"mode": "standard", "max_attempts": max_attempts},
                        connect_timeout=10, read_timeout=60, user_agent_extra="beamhouse")
        return session.client(service, endpoint_url=endpoint_url, config=config)

    return clients.cached(("aws", service, region, endpoint_url, creds, max_attempts), make)


@contextlib.contextmanager
def _denied_as_lookup_denied(what: str):
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("AccessDenied", "403", "Forbidden"):
            raise LookupDenied(f"{what}: no list or read access") from None
        raise


class S3Storage:
    """Objects under ``s3://<bucket>/<prefix>``, published with conditional PutObject."""

    def __init__(self, bucket: str, prefix: str = "", region: str | None = None, kms_key_id: str | None = None,
                 endpoint_url: str | None = None, access_key_id=None, secret_access_key=None, session_token=None,
                 max_attempts: int = 5):
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.region = region
        self.kms_key_id = kms_key_id
        self._conn = dict(endpoint_url=endpoint_url, access_key_id=access_key_id,
                          secret_access_key=secret_access_key, session_token=session_token,
                          max_attempts=max_attempts)

    def _client(self, service: str = "s3"):
        return client(service, self.region, **self._conn)

    def key(self, relative: str) -> str:
        return self.prefix + relative

    def put_if_absent(self, relative: str, data: bytes, metadata: dict) -> bool:
        from botocore.exceptions import ClientError

        extra = {}
        if self.kms_key_id:
            extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        ext = "." + relative.rsplit(".", 1)[-1]
        try:
            self._client().put_object(
                Bucket=self.bucket, Key=self.key(relative), Body=data, IfNoneMatch="*",
                ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                ContentType=CONTENT_TYPES.get(ext, "application/octet-stream"), Metadata=metadata, **extra)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", "")
            if code == "PreconditionFailed":
                # Answered to botocore's retry of this very upload: an earlier attempt wrote these bytes and
                # its answer was lost (a dropped connection, a 500 after the write). Anything else: the name
                # was taken before this call, and the caller finds out by what (transforms.commit.publish_batch).
                return exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0
            if self.kms_key_id and is_kms_refusal(code, message):
                raise KeyUnusable(redact(f"{relative}: S3 refused the KMS key ({code}: {message})")) from None
            raise PublishError(redact(f"{relative}: S3 PutObject failed ({code}: {message})")) from None
        return True

    def delete(self, relatives: list[str]) -> None:
        """Delete objects (staging files once loaded); missing ones are fine. Raises on refusals."""
        from botocore.exceptions import ClientError

        for start in range(0, len(relatives), 1000):  # DeleteObjects takes at most 1000 keys
            keys = [{"Key": self.key(r)} for r in relatives[start:start + 1000]]
            try:
                response = self._client().delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                raise PublishError(f"{self.bucket}: DeleteObjects failed ({code})") from None
            errors = response.get("Errors", [])
            if errors:
                raise PublishError(f"{self.bucket}: could not delete {len(errors)} staged object(s), "
                                          f"e.g. {errors[0].get('Key')} ({errors[0].get('Code')})")

    def remove(self, relative: str) -> None:
        """Delete one object (bookkeeping markers; needs s3:DeleteObject)."""
        self.delete([relative])

    def list_names(self, folder: str) -> list[str]:
        """Relative names of the objects directly under ``folder`` (needs s3:ListBucket; raises
        ``LookupDenied`` without it)."""
        base = self.key(folder) + "/"
        names = []
        with _denied_as_lookup_denied(folder):
            for page in self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base,
                                                                                Delimiter="/"):
                names += [folder + "/" + o["Key"][len(base):] for o in page.get("Contents", [])]
        return sorted(names)

    def read(self, relative: str) -> bytes:
        """An object's bytes (needs s3:GetObject; raises ``LookupDenied`` without it)."""
        with _denied_as_lookup_denied(relative):
            return self._client().get_object(Bucket=self.bucket, Key=self.key(relative))["Body"].read()

    def public_name(self, relative: str) -> str:
        return relative

    def lookup(self, relative: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            head = self._client().head_object(Bucket=self.bucket, Key=self.key(relative))
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                return None
            if status == 403:
                raise LookupDenied(f"{relative}: no read access") from None
            raise
        meta = head.get("Metadata", {})
        return {"bytes": head["ContentLength"], "sha256": meta.get(META_SHA256, ""),
                "batch": meta.get(META_BATCH)}

    def bucket_problem(self, region: str | None) -> str | None:
        """None when the bucket exists in ``region`` (or the check is not permitted), else why not."""
        from botocore.exceptions import ClientError

        try:
            location = self._client().get_bucket_location(Bucket=self.bucket).get("LocationConstraint")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                return f"bucket {self.bucket!r} does not exist"
            if code in ("AccessDenied", "AllAccessDisabled"):
                return None  # least privilege without GetBucketLocation: the first write will tell
            return f"bucket {self.bucket!r}: {code}"
        except Exception as exc:  # noqa: BLE001 - endpoint unreachable, bad credentials ...
            return redact(f"bucket {self.bucket!r}: {type(exc).__name__}: {exc}")
        actual = location or "us-east-1"
        if actual == "EU":
            actual = "eu-west-1"
        if region and actual != region:
            return f"bucket {self.bucket!r} is in {actual}, the config says {region}"
        return None

    def kms_key_problem(self, key_id: str) -> str | None:
        """None when the key is enabled (or its state cannot be read here), else why it is unusable."""
        from botocore.exceptions import ClientError

        try:
            meta = self._client("kms").describe_key(KeyId=key_id)["KeyMetadata"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NotFoundException", "InvalidArnException"):
                return f"KMS key {key_id} not found ({code})"
            return None  # not allowed to describe: the write itself fails closed if the key is refused
        if meta.get("KeyState") != "Enabled":
            return f"KMS key {key_id} is {meta.get('KeyState')}"
        return None
