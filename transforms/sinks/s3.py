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

import base64
import contextlib
import hashlib
import threading
import typing

from pydantic import Field, model_validator

from transforms import commit
from transforms.routes import Route
from transforms.secrets import SecretField, redact
from transforms.sinks.objectstore import ObjectStoreConfig

CONTENT_TYPES = {".parquet": "application/vnd.apache.parquet", ".gz": "application/gzip",
                 ".zst": "application/zstd", ".json": "application/x-ndjson", ".csv": "text/csv"}


def is_kms_refusal(code: str, message: str) -> bool:
    """S3 refused an SSE-KMS write because of the key (``KMS.DisabledException``, ``KMS.NotFoundException``
    ..., or AccessDenied/InvalidArgument naming KMS): fail closed, never retry without the key."""
    return code.startswith("KMS.") or (code in ("AccessDenied", "InvalidArgument") and "kms" in message.lower())


class S3Config(ObjectStoreConfig):
    URL_SCHEME: typing.ClassVar[str] = "s3"
    region: str = Field(pattern=r"^[a-z0-9-]{2,40}$")
    access_key_id: SecretField | None = None
    secret_access_key: SecretField | None = None
    session_token: SecretField | None = None
    kms_key_id: str | None = Field(None, min_length=1, max_length=2048)

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


_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def client(service: str, region: str | None, endpoint_url: str | None, access_key_id=None, secret_access_key=None,
           session_token=None, max_attempts: int = 5):
    """A cached boto3 client. Credentials are resolved here, on the worker, from their references."""
    import boto3
    from botocore.config import Config

    creds = tuple(s.get() if s is not None else None for s in (access_key_id, secret_access_key, session_token))
    key = (service, region, endpoint_url, creds, max_attempts)
    with _clients_lock:
        if key not in _clients:
            session = boto3.session.Session(aws_access_key_id=creds[0], aws_secret_access_key=creds[1],
                                            aws_session_token=creds[2], region_name=region)
            config = Config(retries={"mode": "standard", "max_attempts": max_attempts},
                            connect_timeout=10, read_timeout=60, user_agent_extra="beamhouse")
            _clients[key] = session.client(service, endpoint_url=endpoint_url, config=config)
        return _clients[key]


@contextlib.contextmanager
def _denied_as_lookup_denied(what: str):
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("AccessDenied", "403", "Forbidden"):
            raise commit.LookupDenied(f"{what}: no list or read access") from None
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
                # was taken before this call, and the caller finds out by what (commit.publish_batch).
                return exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0
            if self.kms_key_id and is_kms_refusal(code, message):
                raise commit.KeyUnusable(redact(f"{relative}: S3 refused the KMS key ({code}: {message})")) from None
            raise commit.PublishError(redact(f"{relative}: S3 PutObject failed ({code}: {message})")) from None
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
                raise commit.PublishError(f"{self.bucket}: DeleteObjects failed ({code})") from None
            errors = response.get("Errors", [])
            if errors:
                raise commit.PublishError(f"{self.bucket}: could not delete {len(errors)} staged object(s), "
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
                raise commit.LookupDenied(f"{relative}: no read access") from None
            raise
        meta = head.get("Metadata", {})
        return {"bytes": head["ContentLength"], "sha256": meta.get(commit.META_SHA256, ""),
                "batch": meta.get(commit.META_BATCH)}

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
