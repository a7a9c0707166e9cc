"""The delivery ledger: which event ids each partition of a file destination already holds, so a re-run
over grown input (the daily glob with late files) delivers only what is new.

Why names alone are not enough: a file's name is derived from its batch's event ids, so a re-run of the
same input finds the same names, but when the input grew the partition is cut into other batches and every
touched partition was delivered again under new names.

Layout, beside the data under the destination root (readers skip ``_`` paths)::

    _ledger/<partition token>/<batch id>.ids       the file's event ids (Arrow IPC, zstd; its report entry in
                                                   the schema metadata)
    _ledger/<partition token>/<batch id>.reported  empty: a delivery report lists that file

Protocol (each write create-if-absent, like the data):

1. a batch's file is published, then its ledger entry is written;
2. the delivery report is written (the commit point), then a ``.reported`` marker for each of its files;
3. a later run, before cutting a partition into files, reads the partition's entries and drops the events
   they hold (counted as delivered: they are in the destination). An entry without its marker is either a
   run's that is still going (this run's other workers, or a concurrent run's) or one stopped between 1 and
   2. If a report lists its file, the marker is written now. If not, and its run is known to be over - on
   this machine, its writing process no longer runs; elsewhere, a day has passed - this run *adopts* the
   file (lists it in its own report, so a consumer that reads reports sees it exactly once). A running
   run's entries are left alone: their events are cut into the same batches, found already there.
   When a run finds a file it cut already published by another run, it lists it in its report only if that
   run is over and never reported it: otherwise the other run's report lists it (one report a file).
   Two runs at once over *different* inputs touching one partition cut it differently and may both deliver
   its events: run one job per destination at a time.

What a store needs for this beyond publishing: listing and reading under ``_ledger/`` (S3:
``s3:ListBucket`` and ``s3:GetObject`` on the prefix; GCS: ``storage.objects.list`` and ``get``) and, only
after a stopped run, reading ``_reports/``. The ledger grows by one small object per data file; retention
may delete a partition's data and keep its ledger (its events are then not delivered again).
"""
from __future__ import annotations

import hashlib
import os
import socket
import time

import orjson
import pyarrow as pa

from transforms.storage import LookupDenied

LEDGER_DIR = "_ledger"
_ENTRY, _MARK = ".ids", ".reported"
_NO_IDS = pa.array([], pa.string())
_LIVE_RUNS: set[str] = set()  # runs with a ledger in this process that have not ended (``end_runs``)
ADOPT_AFTER_SECONDS = 86_400  # an unreported file from another machine's run is taken as abandoned after this


def partition_token(partition: str) -> str:
    """Partition paths can be long and hold any character: ledger folders and markers use a digest."""
    return hashlib.sha256(partition.encode()).hexdigest()[:32]


def folder(partition: str) -> str:
    return f"{LEDGER_DIR}/{partition_token(partition)}"


def entry_name(partition: str, batch: str) -> str:
    return f"{folder(partition)}/{batch}{_ENTRY}"


def marker_name(partition: str, batch: str) -> str:
    return f"{folder(partition)}/{batch}{_MARK}"


def encode_entry(record: dict, event_ids) -> bytes:
    """A ledger entry: the file's event ids (a string array or list) as Arrow IPC, its report entry in the
    schema's metadata. Made in C: a million ids cost no Python object each."""
    ids = event_ids if isinstance(event_ids, (pa.Array, pa.ChunkedArray)) else pa.array(event_ids, pa.string())
    table = pa.table({"event_id": ids}).replace_schema_metadata({"file": orjson.dumps(record)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_entry(data: bytes) -> tuple[dict, pa.Array]:
    table = pa.ipc.open_stream(data).read_all()
    return orjson.loads(table.schema.metadata[b"file"]), table["event_id"].combine_chunks()


class Ledger:
    """One destination root's ledger, read lazily per partition and kept for the worker's life (a
    streaming worker meets the same partitions again). ``storage``: the destination's storage (``list_names``,
    ``read``, ``put_if_absent``)."""

    def __init__(self, storage, run_id: str = ""):
        self._storage = storage
        self._run_id = run_id  # this run's: its own unreported files are never adopted
        if run_id:
            _LIVE_RUNS.add(run_id)
        self._ids: dict[str, pa.Array] = {}
        self._reported_paths: set | None = None  # every path the root's reports list, read only if needed
        self.unavailable = False  # the store refused listing or reading the ledger

    def delivered(self, partition: str) -> tuple[pa.Array, list[dict]]:
        """``(event ids the partition holds, files to adopt)``: the ids as a string array, the files those
        whose run stopped before a report listed them (their entries' records, to list in this run's
        report)."""
        if partition in self._ids:
            return self._ids[partition], []
        try:
            return self._read(partition)
        except (LookupDenied, PermissionError):
            # Publishing needs no read access (least privilege); without it this run cannot see what the
            # partition holds and delivers by names alone: the caller says so in the run's summary.
            self.unavailable = True
            self._ids[partition] = _NO_IDS
            return self._ids[partition], []

    def _read(self, partition: str) -> tuple[pa.Array, list[dict]]:
        names = set(self._storage.list_names(folder(partition)))  # relative names: "<folder>/<name>"
        # A run writes its report, then its markers one by one: a listing made meanwhile shows some of its
        # entries marked and others not, though the report lists them all. Subtracting only the marked ones
        # would cut the rest into other batches (new names: the same events twice), so when the partition
        # shows any marker, reports read before it are read again once.
        fresh = not any(n.endswith(_MARK) for n in names)
        ids: list = []
        adopt = []
        for name in sorted(n for n in names if n.endswith(_ENTRY)):
            record, event_ids = decode_entry(self._storage.read(name))
            if name[:-len(_ENTRY)] + _MARK not in names:
                path = self._storage.public_name(record["path"])
                if path not in self._reported() and not fresh:
                    self._reported_paths, fresh = None, True
                if path in self._reported():
                    self._storage.put_if_absent(name[:-len(_ENTRY)] + _MARK, b"", {})
                elif self._abandoned(record.pop("writer", {})):
                    adopt.append(record)
                else:
                    # A run still going wrote it (a concurrent run, or this run's other workers): its events
                    # are not subtracted, so this run cuts the same batches and finds the same names.
                    continue
            ids.append(event_ids)
        self._ids[partition] = pa.concat_arrays(ids) if ids else _NO_IDS
        return self._ids[partition], adopt

    def record(self, partition: str, batch: str, record: dict, event_ids) -> bool:
        """After a file is published: its entry (create-if-absent: a retry finds it written). Returns whether
        this run's report lists the file: not when another run wrote the entry and that run has listed it, or
        still runs and will (two runs of the same input at once cut the same files; one report lists each)."""
        from transforms.coders import process_identity

        writer = {"run": self._run_id, "host": socket.gethostname(), "process": process_identity(os.getpid()),
                  "at": time.time()}
        name = entry_name(partition, batch)
        if self._storage.put_if_absent(name, encode_entry({**record, "writer": writer}, event_ids), {}) or \
                self.unavailable:
            return True
        # Not added to what ``delivered`` subtracts: a retried bundle must cut its events into the very same
        # batches (found already there, and listed in this run's report), not around them.
        try:
            theirs = decode_entry(self._storage.read(name))[0].get("writer", {})
            if theirs.get("run") == self._run_id:
                return True
            if self._storage.lookup(marker_name(partition, batch)) is not None:
                return False
            self._reported_paths = None  # read again: the other run may have reported since
            if self._storage.public_name(record["path"]) in self._reported():
                return False
        except (LookupDenied, PermissionError):
            return True  # no reading allowed: delivered by names alone (the run's summary says so)
        return self._abandoned(theirs)  # adopted: its run stopped before reporting it

    def _abandoned(self, writer: dict) -> bool:
        """Whether the run that wrote an unreported entry is over (see the module docstring)."""
        from transforms.coders import process_identity

        if writer.get("run") == self._run_id:
            return False
        if writer.get("host") == socket.gethostname() and writer.get("process"):
            pid = int(str(writer["process"]).split()[0])
            if process_identity(pid) != writer["process"]:
                return True  # its process has gone
            # This very process (an in-process runner, run after run): over once the entry point ended it.
            return pid == os.getpid() and writer.get("run") not in _LIVE_RUNS
        return time.time() - float(writer.get("at", 0)) > ADOPT_AFTER_SECONDS

    def mark_reported(self, partition: str, batch: str) -> None:
        self._storage.put_if_absent(marker_name(partition, batch), b"", {})

    def _reported(self) -> set:
        if self._reported_paths is None:
            from transforms.commit import REPORT_DIR

            paths = set()
            for name in self._storage.list_names(REPORT_DIR):
                paths.update(f["path"] for f in orjson.loads(self._storage.read(name)).get("files", []))
            self._reported_paths = paths
        return self._reported_paths


def end_runs() -> None:
    """Say that the runs this process started have ended, failed or not (the entry points call it after each
    run): the next run in the same process then adopts their unreported files, as it would a dead process's."""
    _LIVE_RUNS.clear()
