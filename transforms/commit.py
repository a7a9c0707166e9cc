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
import logging
from collections.abc import Callable

import orjson

from transforms import partitioning
from transforms.secrets import redact
from transforms.storage import META_BATCH, META_SHA256, KeyUnusable, LookupDenied, PublishError  # noqa: F401

log = logging.getLogger("beamhouse.commit")

REPORT_DIR = "_reports"
MAX_NAME_COLLISIONS = 1000


def publish_bytes(storage, relative: str, data: bytes, records: int, **extra) -> dict:
    """Publish ``data`` under ``relative``, a name derived from its content. See ``publish_batch``."""
    return publish_batch(storage, lambda n: relative, data, records, batch=None, content_addressed=True, **extra)


def publish_batch(storage, name_for: Callable[[int], str], data: bytes, records: int, batch: str | None,
                  content_addressed: bool, **extra) -> dict:
    """Publish a batch's bytes under ``name_for(0)`` (or ``name_for(n)`` after collisions, see above).

    Returns the file's report entry: ``path``, ``bytes``, ``records``, ``sha256``, ``status``
    (``published`` or ``already_present``) plus ``extra``. Raises ``PublishError`` (``KeyUnusable`` when
    the encryption key was refused; nothing was written then). Logged on ``beamhouse.commit``: each file at
    debug level, a name that already holds these events under other settings as a warning.
    """
    entry = _publish_batch(storage, name_for, data, records, batch, content_addressed, **extra)
    if entry.get("differs"):
        log.warning("%s already holds these events written under other settings; left as it is (flagged "
                    "differs in the report)", entry["path"])
    else:
        log.debug("%s %s (%d records)", entry["status"], entry["path"], records)
    return entry


def _publish_batch(storage, name_for, data: bytes, records: int, batch: str | None, content_addressed: bool,
                   **extra) -> dict:
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
