"""A destination root on another Beam filesystem (hdfs://, azfs://, ...)."""
from __future__ import annotations

import hashlib
import uuid

from apache_beam.io.filesystems import FileSystems

from transforms import partitioning
from transforms.storage import PublishError
from transforms.storage.local import TMP_DIR


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
