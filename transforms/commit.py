"""Publishing files without overwriting, and delivery reports.

Protocol for every data file (architecture.md 3.4, reliability.md rules 2-4):

1. write the bytes to ``<root>/_beamhouse_tmp/<name>.tmp-<random>`` (outside the partition tree; readers
   skip ``_`` paths and the name does not end in a data extension);
2. publish under the final name only if no file has that name (local: ``os.link``, an atomic exclusive
   create; other Beam filesystems: existence check then rename, until their vendors add conditional
   writes), then remove the temp file;
3. verify the published size; any failure raises, which fails the bundle and the run;
4. after every file of a generation is published, write ``<root>/_reports/<generation>_delivery.report``
   listing each file with its size, record count and SHA-256. A file not listed in a report is incomplete.

Final names are deterministic per batch, so a retried or re-run batch finds its file already there and
reports it as ``already_present`` instead of writing it again.
"""
from __future__ import annotations

import hashlib
import os
import uuid

import orjson
from apache_beam.io.filesystems import FileSystems

from transforms import partitioning

TMP_DIR = "_beamhouse_tmp"
REPORT_DIR = "_reports"


class PublishError(RuntimeError):
    """Publishing or verifying a file failed."""


class LocalStorage:
    """A destination root on the local filesystem."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def path(self, relative: str) -> str:
        return os.path.join(self.root, *relative.split("/"))

    def write_temp(self, name: str, data: bytes) -> str:
        tmp_dir = os.path.join(self.root, TMP_DIR)
        os.makedirs(tmp_dir, exist_ok=True)
        tmp = os.path.join(tmp_dir, f"{os.path.basename(name)}.tmp-{uuid.uuid4().hex}")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def publish(self, tmp: str, relative: str) -> bool:
        """Link ``tmp`` to its final name; False when a file of that name already exists."""
        final = self.path(relative)
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.link(tmp, final)
            return True
        except FileExistsError:
            return False
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def size(self, relative: str) -> int:
        return os.stat(self.path(relative)).st_size

    def read(self, relative: str) -> bytes:
        with open(self.path(relative), "rb") as fh:
            return fh.read()


class BeamStorage:
    """A destination root on any Beam filesystem (gs://, s3://, ...)."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")

    def path(self, relative: str) -> str:
        return partitioning.join(self.root, relative)

    def write_temp(self, name: str, data: bytes) -> str:
        tmp = f"{self.root}/{TMP_DIR}/{name.rsplit('/', 1)[-1]}.tmp-{uuid.uuid4().hex}"
        with FileSystems.create(tmp) as fh:
            fh.write(data)
        return tmp

    def publish(self, tmp: str, relative: str) -> bool:
        final = self.path(relative)
        try:
            if FileSystems.exists(final):
                return False
            FileSystems.rename([tmp], [final])
            return True
        finally:
            if FileSystems.exists(tmp):
                FileSystems.delete([tmp])

    def size(self, relative: str) -> int:
        return FileSystems.match([self.path(relative)])[0].metadata_list[0].size_in_bytes

    def read(self, relative: str) -> bytes:
        with FileSystems.open(self.path(relative)) as fh:
            return fh.read()


def storage_for(root: str):
    """The storage for a destination root: local paths get exclusive-create publishing."""
    if "://" not in root or root.startswith("file://"):
        return LocalStorage(root[len("file://"):] if root.startswith("file://") else root)
    return BeamStorage(root)


def publish_bytes(storage, relative: str, data: bytes, records: int, **extra) -> dict:
    """Write ``data`` through the temp location and publish it under ``relative``.

    Returns the file's report entry: ``path``, ``bytes``, ``records``, ``sha256``, ``status``
    (``published`` or ``already_present``) plus ``extra``. Raises ``PublishError``.
    """
    partitioning.assert_relative_safe(relative)
    try:
        tmp = storage.write_temp(relative, data)
        published = storage.publish(tmp, relative)
        if published:
            size = storage.size(relative)
            if size != len(data):
                raise PublishError(f"{relative}: published {size} bytes, expected {len(data)}")
            digest = hashlib.sha256(data).hexdigest()
        else:
            existing = storage.read(relative)
            size, digest = len(existing), hashlib.sha256(existing).hexdigest()
    except PublishError:
        raise
    except Exception as exc:  # surface as one error type; the message names the file, never credentials
        raise PublishError(f"{relative}: publishing failed ({type(exc).__name__}: {exc})") from exc
    return {"path": relative, "bytes": size, "records": records, "sha256": digest,
            "status": "published" if published else "already_present", **extra}


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
        "files": [{k: f[k] for k in ("path", "bytes", "records", "sha256", "partition") if k in f} for f in files],
    }
    data = orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"
    return publish_bytes(storage, report_name([f["path"] for f in files]), data, records=len(files))
