"""A destination root on the local filesystem: bytes written to a temp file outside the partition tree,
fsynced, then linked to the final name (an exclusive create: never an overwrite)."""
from __future__ import annotations

import hashlib
import os
import re
import time
import uuid

from transforms.storage import PublishError

TMP_DIR = "_beamhouse_tmp"


# A temporary file this old was left by a killed run: writing and linking one batch takes seconds.
STALE_TMP_SECONDS = 3600


_TMP_NAME = re.compile(r".+\.tmp-[0-9a-f]{32}$")


class LocalStorage:
    """A destination root on the local filesystem (a ``transforms.storage.Storage``)."""

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
