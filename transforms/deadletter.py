"""Dead letters: one NDJSON record per rejected event, with a stable reason code.

Record fields: ``reason``, ``stage`` (parse | normalise | sink), ``error`` (never a secret),
``source_id``, ``integration_id`` (when known), ``received_at``, ``event_id`` (when known), and the
original ``payload`` as text, or ``payload_base64`` when it was not valid UTF-8.

``WriteDeadLetters(path)`` writes them with the same commit protocol as data files (deterministic names,
no overwrite); if they cannot be written the run fails rather than losing the events.
"""
from __future__ import annotations

import base64
import hashlib
import time

import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from transforms import coders, commit
from transforms.profiles.warehouse import to_warehouse
from transforms.storage import storage_for
from transforms.timestamps import format_us

NAMESPACE = "beamhouse"
# The tag of every transform's dead-letter output (they flatten into one output: WriteDeadLetters).
DEAD_LETTERS = "dead_letters"
RECORDS_PER_FILE = 10_000

REASONS = {
    "invalid_utf8": "the line is not valid UTF-8 (payload kept as payload_base64)",
    "parse_error": "not valid JSON: malformed, NaN/Infinity, lone surrogate escapes, trailing data",
    "not_an_object": "valid JSON whose top level is not an object",
    "too_large": "the line is longer than --max_event_bytes",
    "too_deep": "objects/arrays nested deeper than --max_nesting_depth",
    "unknown_type": "type missing or not one of page, track, identify, group, screen, alias",
    "missing_event_name": "a track event without a non-empty event name",
    "missing_identity": "neither userId nor anonymousId",
    "invalid_field": "a known field has the wrong JSON type or length (the error names the field)",
    "conflicting_event_id": "messageId and event_id are both present and differ",
    "invalid_timestamp": "timestamp, originalTimestamp, receivedAt or sentAt cannot be parsed",
    "timestamp_out_of_range": "timestamp outside the window around received_at, or received_at outside the "
                              "window (--max_past_days / --max_future_hours) around the processing time",
    "unsupported_signal": "an OpenTelemetry export of metrics: measurements, not events (send them to a "
                          "metrics backend); logs and traces are accepted",
    "internal_error": "handling this one event raised an unexpected error (the error names its type): a bug to "
                      "report; the event is kept here instead of failing the run",
    "corrupt_input": "a compressed input file is damaged or cut short; the events before the damage were read "
                     "(the error names the file and how many lines were read)",
    "invalid_partition_value": "a value the partition template needs is missing, empty or too long",
    "unknown_tenant": "routing.unknown_tenant is dead_letter and the event's tenant has no route",
    "encryption_key_unusable": "the tenant's encryption key was refused or is not enabled; nothing was "
                               "written (the payload is withheld from the dead letter too)",
    "sink_rejected": "the destination refused the event (the error says why)",
    "too_late": "streaming: received more than --allowed_lateness_seconds after its event time",
    "archive_unreadable": "regeneration: an archive line is not a row the files destination wrote",
    "profile_rejected": "the integration's output profile (hackle, statsig) cannot hold the event",
    "day_already_finished": "statsig: the event's day was already signalled as finished",
    "partition_complete": "the event's partition was already marked complete (completion_marker)",
}


def now_us() -> int:
    return time.time_ns() // 1000


def make_record(reason: str, stage: str, error: str, payload, source_id: str | None,
                integration_id: str | None = None, event_id: str | None = None,
                received_at_us: int | None = None) -> dict:
    """Build a dead-letter record. ``payload`` is the original bytes (or already-decoded text)."""
    assert reason in REASONS, reason
    record = {
        "reason": reason,
        "stage": stage,
        "error": error,
        "source_id": source_id,
        "integration_id": integration_id,
        "received_at": format_us(received_at_us if received_at_us is not None else now_us()),
        "event_id": event_id,
    }
    if isinstance(payload, bytes):
        try:
            record["payload"] = payload.decode("utf-8")
        except UnicodeDecodeError:
            record["payload_base64"] = base64.b64encode(payload).decode("ascii")
    else:
        record["payload"] = payload
    return {k: v for k, v in record.items() if v is not None}


def count(reason: str, integration_id: str | None = None, n: int = 1) -> None:
    name = f"dead_letter.{reason}" if integration_id is None else f"{integration_id}.dead_letter.{reason}"
    Metrics.counter(NAMESPACE, name).inc(n)


def keyed_line(record: dict) -> tuple[bytes, bytes]:
    """``(digest, line)``: the record as an NDJSON line, and a digest of it without its processing time
    (``received_at``), which orders and names the files: a re-run of the same input gives the same files."""
    key = orjson.dumps({k: v for k, v in record.items() if k != "received_at"}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(key).digest()[:16], orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def _as_table(records: list) -> pa.Table:
    digests, lines = zip(*map(keyed_line, records)) if records else ((), ())
    return pa.table({"digest": pa.array(digests, pa.binary()), "line": pa.array(lines, pa.binary())})


class _WriteDeadLetterFilesFn(beam.DoFn):
    """Dead letters (a list of records, or ``(key, [Table of digest, line])`` from a grouping) -> files of at
    most ``RECORDS_PER_FILE`` records in digest order, each named by its records' digests: the same dead
    letters give the same files, which a re-run finds already there."""

    def __init__(self, root: str):
        self._root = root

    def process(self, element):
        table = pa.concat_tables(element[1]) if isinstance(element, tuple) else _as_table(element)
        if not table.num_rows:
            return
        table = table.take(pc.sort_indices(table, sort_keys=[("digest", "ascending"), ("line", "ascending")]))
        storage = storage_for(self._root)
        for start in range(0, table.num_rows, RECORDS_PER_FILE):
            chunk = table.slice(start, RECORDS_PER_FILE)
            data = b"\n".join(chunk["line"].to_pylist()) + b"\n"
            digest = hashlib.sha256(b"".join(chunk["digest"].to_pylist())).hexdigest()[:16]
            name = f"dead_letters-{digest}.ndjson"
            # Publishing failures raise and fail the run: dead letters must be durable.
            yield commit.publish_bytes(storage, name, data, records=chunk.num_rows)


class WriteDeadLetters(beam.PTransform):
    """Write every dead-letter record under ``path``; fails the run if they cannot be written."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, records):
        if not records.windowing.is_default():  # streaming (a non-default trigger): one list per pane
            return (records
                    | "CollectDeadLetters" >> beam.combiners.ToList().with_defaults(False)
                    | "WriteDeadLetterFiles" >> beam.ParDo(_WriteDeadLetterFilesFn(self._path)))
        # Batch: in Arrow batches of (digest, line) through one grouping, which a local run spills to disk
        # (transforms.coders): memory holds the dead letters' bytes once, at the end, where one list of all
        # the records took 25 times the input (2.6 GB at 100k bad lines of 1 KB).
        return (records
                | "BatchDeadLetters" >> beam.BatchElements(min_batch_size=1000, max_batch_size=10_000)
                | "DeadLetterTables" >> beam.Map(lambda batch: (0, _as_table(batch))).with_output_types(
                    tuple[int, pa.Table])
                | "CollectDeadLetters" >> coders.GroupTablesByKey()
                | "WriteDeadLetterFiles" >> beam.ParDo(_WriteDeadLetterFilesFn(self._path)))


def payload_of(row: dict) -> str:
    return orjson.dumps(row, option=orjson.OPT_NAIVE_UTC).decode()


def sink_dead_letters(iid: str, reason: str, rows: pa.Table, error: str, with_payload: bool = True):
    """Dead-letter records for ``rows`` (as tagged outputs), counted for integration ``iid``. Without
    payload the record keeps the event id and reason only (used when writing the event anywhere would
    break a guarantee, e.g. its tenant's encryption key is unusable)."""
    count(reason, iid, rows.num_rows)
    for row in to_warehouse(rows).to_pylist():
        payload = payload_of(row) if with_payload else None
        err = error if with_payload else f"{error}; payload withheld, re-deliver by event_id from the input"
        yield beam.pvalue.TaggedOutput(DEAD_LETTERS, make_record(
            reason, "sink", err, payload, row["source_id"], integration_id=iid, event_id=row["event_id"]))
