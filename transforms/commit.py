"""Publishing files without overwriting, and delivery reports.

Protocol for every data file (architecture.md 3.4, reliability.md rules 2-4):

1. the bytes never appear under their final name until complete. Local disk: written to
   ``<root>/_beamhouse_tmp/<name>.tmp-<random>`` (outside the partition tree; readers skip ``_`` paths)
   and then linked. S3 and GCS: one upload request, which the store makes visible only once complete,
   so no temp object (and no copy or delete permission) is needed;
2. publish under the final name only if nothing has that name: ``os.link`` (an exclusive create),
   S3 ``PutObject`` with ``If-None-Match: *``, GCS with ``ifGenerationMatch=0``. A second attempt can
   never overwrite, so a versioned bucket keeps exactly one version per key;
3. integrity is checked: local size after linking, S3 ``x-amz-checksum-sha256``, GCS ``crc32c``; any
   failure raises, which fails the bundle and the run;
4. after every file of a generation is published, ``_reports/<generation>_delivery.report`` lists each
   file with its size, record count and SHA-256. A file not listed in a report is incomplete.

Names are deterministic per batch. When the name contains the batch id (the default), a name that
already exists holds this very batch's events (a retry or a re-run) and is reported ``already_present``
with what the store holds: its size and digest read back (``differs`` when they are not what this run
would have written, e.g. after a change of selection or format: nothing is rewritten), or, where the store
allows no reading (an S3 PutObject-only policy), ``verified: false`` and no size or digest. For
time-only names (seed 003's ``data_YYYY_MM_DD_HH_MM_SS``) the existing object's recorded batch id is
read back: the same batch is ``already_present``; another batch means a collision, and the batch takes
the next free name ``<name>_1``, ``<name>_2`` ... in a fixed order, so retries find the same name.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable

import orjson
from apache_beam.io.filesystems import FileSystems

from transforms import partitioning
from transforms.secrets import redact

TMP_DIR = "_beamhouse_tmp"
# A temporary file this old was left by a killed run: writing and linking one batch takes seconds.
STALE_TMP_SECONDS = 3600
_TMP_NAME = re.compile(r".+\.tmp-[0-9a-f]{32}$")
REPORT_DIR = "_reports"
MAX_NAME_COLLISIONS = 1000
META_SHA256 = "beamhouse-sha256"
META_BATCH = "beamhouse-batch"


class PublishError(RuntimeError):
    """Publishing or verifying a file failed."""


class KeyUnusable(PublishError):
    """The encryption key configured for the data cannot be used. Nothing was written (fail closed)."""


class LookupDenied(PublishError):
    """The destination does not allow reading an existing object's metadata."""


class LocalStorage:
    """A destination root on the local filesystem.

    Storages have ``put_if_absent(relative, data, metadata) -> bool``, ``lookup(relative) -> dict | None``
    (raising ``LookupDenied`` where the store allows no reading: a report then lists an existing file as
    ``verified: false``), ``list_names``, ``read``, ``remove`` and ``public_name``.
    """

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        # Folders this instance made. A layout with many partitions writes one small file per folder, and
        # making the folders again for each file (makedirs walks every level) cost as much as the write.
        self._dirs: set[str] = set()

    def path(self, relative: str) -> str:
        return os.path.join(self.root, *relative.split("/"))

    def _in_folder(self, folder: str, create):
        """``create()`` (which makes a file in ``folder``), making the folder first the first time; once more
        after making it again if it was removed underneath (e.g. by a retention job)."""
        if folder not in self._dirs:
            os.makedirs(folder, exist_ok=True)
            self._dirs.add(folder)
        try:
            return create()
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            return create()

    def put_if_absent(self, relative: str, data: bytes, metadata: dict) -> bool:
        """Write through a temp file and link it; False when a file of that name already exists."""
        tmp_dir = os.path.join(self.root, TMP_DIR)
        if tmp_dir not in self._dirs:
            sweep_stale_temp_files(tmp_dir)
        tmp = os.path.join(tmp_dir, f"{relative.rsplit('/', 1)[-1]}.tmp-{uuid.uuid4().hex}")
        final = self.path(relative)
        try:
            with self._in_folder(tmp_dir, lambda: open(tmp, "wb")) as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                self._in_folder(os.path.dirname(final), lambda: os.link(tmp, final))
            except FileExistsError:
                return False
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        size = os.stat(final).st_size
        if size != len(data):
            raise PublishError(f"{relative}: published {size} bytes, expected {len(data)}")
        return True

    def lookup(self, relative: str) -> dict | None:
        try:
            with open(self.path(relative), "rb") as fh:
                existing = fh.read()
        except FileNotFoundError:
            return None
        return {"bytes": len(existing), "sha256": hashlib.sha256(existing).hexdigest(), "batch": None}

    def list_names(self, folder: str) -> list[str]:
        """Relative names of the files directly under ``folder`` (sorted; none when it is missing)."""
        try:
            return sorted(f"{folder}/{n}" for n in os.listdir(self.path(folder))
                          if os.path.isfile(os.path.join(self.path(folder), n)))
        except FileNotFoundError:
            return []

    def read(self, relative: str) -> bytes:
        with open(self.path(relative), "rb") as fh:
            return fh.read()

    def public_name(self, relative: str) -> str:
        """The name a reader finds ``relative`` under (what reports list)."""
        return relative

    def remove(self, relative: str) -> None:
        """Delete a file (bookkeeping markers); a missing one is fine."""
        try:
            os.unlink(self.path(relative))
        except FileNotFoundError:
            pass


def sweep_stale_temp_files(tmp_dir: str, older_than: float = STALE_TMP_SECONDS) -> int:
    """Remove the temporary files killed runs left in ``tmp_dir``: only names of this module's form
    (``<name>.tmp-<32 hex>``) last written more than ``older_than`` seconds ago. Returns how many."""
    removed = 0
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(tmp_dir))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if _TMP_NAME.match(entry.name) and entry.is_file() and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:  # another run swept it
            pass
    return removed


class BeamStorage:
    """A destination root on another Beam filesystem (hdfs://, azfs://, ...): write to a temp name,
    then rename after an existence check. Not atomic against a concurrent writer of the same name;
    S3 and GCS have their own storages with conditional writes."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")

    def put_if_absent(self, relative: str, data: bytes, metadata: dict) -> bool:
        final = partitioning.join(self.root, relative)
        if FileSystems.exists(final):
            return False
        tmp = f"{self.root}/{TMP_DIR}/{relative.rsplit('/', 1)[-1]}.tmp-{uuid.uuid4().hex}"
        try:
            with FileSystems.create(tmp) as fh:
                fh.write(data)
            FileSystems.rename([tmp], [final])
        finally:
            if FileSystems.exists(tmp):
                FileSystems.delete([tmp])
        size = FileSystems.match([final])[0].metadata_list[0].size_in_bytes
        if size != len(data):
            raise PublishError(f"{relative}: published {size} bytes, expected {len(data)}")
        return True

    def lookup(self, relative: str) -> dict | None:
        final = partitioning.join(self.root, relative)
        if not FileSystems.exists(final):
            return None
        with FileSystems.open(final) as fh:
            existing = fh.read()
        return {"bytes": len(existing), "sha256": hashlib.sha256(existing).hexdigest(), "batch": None}

    def list_names(self, folder: str) -> list[str]:
        base = partitioning.join(self.root, folder) + "/"
        matched = FileSystems.match([base + "*"])[0].metadata_list
        return sorted(folder + "/" + m.path[len(base):] for m in matched if "/" not in m.path[len(base):])

    def read(self, relative: str) -> bytes:
        with FileSystems.open(partitioning.join(self.root, relative)) as fh:
            return fh.read()

    def public_name(self, relative: str) -> str:
        return relative

    def remove(self, relative: str) -> None:
        final = partitioning.join(self.root, relative)
        if FileSystems.exists(final):
            FileSystems.delete([final])


def storage_for(root: str, **options):
    """The storage for a destination root: a local path, ``s3://bucket/prefix``, ``gs://bucket/prefix``
    (default credentials; ``options`` as the S3/GCS storages take them), or another Beam filesystem."""
    if root.startswith("s3://"):
        from transforms.sinks.s3 import S3Storage

        bucket, _, prefix = root[5:].partition("/")
        return S3Storage(bucket=bucket, prefix=prefix, **options)
    if root.startswith("gs://"):
        from transforms.sinks.gcs import GCSStorage

        bucket, _, prefix = root[5:].partition("/")
        return GCSStorage(bucket=bucket, prefix=prefix, **options)
    if "://" not in root or root.startswith("file://"):
        return LocalStorage(root[len("file://"):] if root.startswith("file://") else root)
    return BeamStorage(root)


def publish_bytes(storage, relative: str, data: bytes, records: int, **extra) -> dict:
    """Publish ``data`` under ``relative``, a name derived from its content. See ``publish_batch``."""
    return publish_batch(storage, lambda n: relative, data, records, batch=None, content_addressed=True, **extra)


def publish_batch(storage, name_for: Callable[[int], str], data: bytes, records: int, batch: str | None,
                  content_addressed: bool, **extra) -> dict:
    """Publish a batch's bytes under ``name_for(0)`` (or ``name_for(n)`` after collisions, see above).

    Returns the file's report entry: ``path``, ``bytes``, ``records``, ``sha256``, ``status``
    (``published`` or ``already_present``) plus ``extra``. Raises ``PublishError`` (``KeyUnusable`` when
    the encryption key was refused; nothing was written then).
    """
    digest = hashlib.sha256(data).hexdigest()
    metadata = {META_SHA256: digest, **({META_BATCH: batch} if batch else {})}
    for n in range(MAX_NAME_COLLISIONS):
        relative = name_for(n)
        partitioning.assert_relative_safe(relative)
        try:
            if storage.put_if_absent(relative, data, metadata):
                return {"path": relative, "bytes": len(data), "records": records, "sha256": digest,
                        "status": "published", **extra}
            try:
                existing = storage.lookup(relative)
            except LookupDenied:
                if content_addressed:  # the name is derived from these very events, but which bytes it holds
                    # (written under other settings?) cannot be read here: the entry says so, never our digest
                    return {"path": relative, "records": records, "status": "already_present", "verified": False,
                            **extra}
                raise PublishError(f"{relative}: a file of that name exists and telling whether it holds this "
                                   f"batch needs read access (s3:GetObject / storage.objects.get); "
                                   f"or use a file name with {{id}}") from None
        except PublishError:
            raise
        except Exception as exc:  # one error type; the message names the file, never credentials
            raise PublishError(redact(f"{relative}: publishing failed ({type(exc).__name__}: {exc})")) from exc
        if existing is None:
            raise PublishError(f"{relative}: the store refused the write as existing but has no such object")
        same = (existing["batch"] == batch) if (batch and existing.get("batch")) else existing["sha256"] == digest
        if same or content_addressed:
            # What the store holds, not what this run would have written: the same events under other
            # settings (a changed selection, profile or compression) are flagged, never rewritten.
            entry = {"path": relative, "bytes": existing["bytes"], "records": records, "sha256": existing["sha256"],
                     "status": "already_present", **extra}
            if not existing["sha256"]:
                entry.update(verified=False)
                del entry["sha256"]
            elif existing["sha256"] != digest:
                entry["differs"] = True
            return entry
    raise PublishError(f"{name_for(0)}: more than {MAX_NAME_COLLISIONS} batches share this file name")


def report_name(paths) -> str:
    return f"{REPORT_DIR}/{partitioning.generation_id(paths)}_delivery.report"


def write_report(storage, integration_id: str, vendor: str, files: list[dict], created_at: str) -> dict | None:
    """Write the generation's delivery report, last. Returns the report entry, or None without files."""
    if not files:
        return None
    files = sorted(files, key=lambda f: f["path"])
    body = {
        "integration_id": integration_id,
        "vendor": vendor,
        "generation": partitioning.generation_id([f["path"] for f in files]),
        "created_at": created_at,
        "file_count": len(files),
        "record_count": sum(f["records"] for f in files),
        # Paths as a consumer finds them on the store (sFTP flattens partition folders into names).
        "files": [{**{k: f[k] for k in ("path", "bytes", "records", "sha256", "partition", "tenant", "verified",
                                        "differs") if k in f},
                   "path": storage.public_name(f["path"])} for f in files],
    }
    data = orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"
    return publish_bytes(storage, report_name([f["path"] for f in files]), data, records=len(files))
