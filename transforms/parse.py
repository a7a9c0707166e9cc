"""Bytes -> canonical event batches, with a dead letter for every rejected line.

``ParseEvents(settings)`` takes a PCollection of raw lines (``bytes``; read them with a bytes coder so
one invalid UTF-8 byte cannot fail the job) and returns ``{"events": (shard, pyarrow.Table), "dead_letters":
dict}``. Lines are handled in batches: each batch is parsed with orjson, normalised by the dialect, and
turned into one Arrow table per dedup shard, so nothing downstream works per event.

Parsing rules: strict JSON (no NaN/Infinity, no lone surrogate escapes, no trailing data); a UTF-8 BOM
is ignored; duplicate keys keep the last value (RFC 8259 leaves it open; this is what orjson and
browsers do); integers beyond the 64-bit range become floats; blank lines are counted as
``blank_lines`` and are not events.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import apache_beam as beam
import orjson
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms import deadletter
from transforms.dialects import segment
from transforms.events import batch_schema

DEAD_LETTERS = "dead_letters"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ParseSettings:
    """Everything the parse stage needs; all plain values (safe to serialise with the pipeline)."""

    source_id: str
    max_event_bytes: int = 65_536
    max_nesting_depth: int = 64
    max_past_days: float = 3_650
    max_future_hours: float = 24
    tenant_id_field: str = "context.tenant_id"
    app_id_field: str = "context.app_id"
    consent_purposes: tuple = ()
    shards: int = 4


def _get_path(obj, parts):
    for part in parts:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    if isinstance(obj, str):
        return obj
    if isinstance(obj, int) and not isinstance(obj, bool):
        return str(obj)
    return None


def _too_deep(obj, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))
    return False


def shard_of(event_id: str, shards: int) -> int:
    """Stable across processes and runs (unlike ``hash()``)."""
    return zlib.crc32(event_id.encode("utf-8", "surrogatepass")) % shards


class _ParseBatchFn(beam.DoFn):
    def __init__(self, settings: ParseSettings):
        self._s = settings

    def setup(self):
        s = self._s
        self._schema = batch_schema(s.consent_purposes)
        self._tenant_path = tuple(s.tenant_id_field.split("."))
        self._app_path = tuple(s.app_id_field.split("."))
        self._max_past_us = int(s.max_past_days * 86_400_000_000)
        self._max_future_us = int(s.max_future_hours * 3_600_000_000)
        self._input = Metrics.counter(deadletter.NAMESPACE, "input")
        self._blank = Metrics.counter(deadletter.NAMESPACE, "blank_lines")

    def _reject(self, reason, stage, error, line, event_id=None):
        deadletter.count(reason)
        return beam.pvalue.TaggedOutput(DEAD_LETTERS, deadletter.make_record(
            reason, stage, error, line, self._s.source_id, event_id=event_id))

    def _classify(self, line: bytes, exc: Exception):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            return self._reject("invalid_utf8", "parse", f"invalid UTF-8 at byte {err.start}", line)
        if "depth limit" in str(exc):
            return self._reject("too_deep", "parse", "nesting exceeds the parser's depth limit", line)
        return self._reject("parse_error", "parse", str(exc), line)

    def process(self, lines):
        s = self._s
        now = deadletter.now_us()
        n_cols = len(self._schema)
        shards: dict[int, list[list]] = {}
        seen = blank = 0
        dumps = orjson.dumps
        purposes = s.consent_purposes
        for line in lines:
            if line.startswith(_BOM):
                line = line[3:]
            if not line or line.isspace():
                blank += 1
                continue
            seen += 1
            if len(line) > s.max_event_bytes:
                yield self._reject("too_large", "parse", f"{len(line)} bytes exceeds {s.max_event_bytes}", line)
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield self._classify(line, exc)
                continue
            if type(obj) is not dict:
                yield self._reject("not_an_object", "parse", f"top level is a JSON {type(obj).__name__}", line)
                continue
            # Counting brackets is cheap; the walk runs only when the count could exceed the limit.
            if line.count(b"{") + line.count(b"[") > s.max_nesting_depth and _too_deep(obj, s.max_nesting_depth):
                yield self._reject("too_deep", "parse", f"nesting deeper than {s.max_nesting_depth}", line)
                continue
            try:
                row = segment.normalise(obj, s.source_id, now, self._max_past_us, self._max_future_us)
            except segment.Rejected as rej:
                yield self._reject(rej.reason, "normalise", rej.error, line, rej.event_id)
                continue
            event_id = row[0]
            cols = shards.get(shard_of(event_id, s.shards))
            if cols is None:
                cols = shards[shard_of(event_id, s.shards)] = [[] for _ in range(n_cols)]
            for i in range(8):
                cols[i].append(row[i])
            for i in (8, 9, 10):
                value = row[i]
                cols[i].append(None if value is None else dumps(value))
            cols[11].append(_get_path(obj, self._tenant_path))
            cols[12].append(_get_path(obj, self._app_path))
            cols[13].append("segment")
            if purposes:
                consent = obj.get("context")
                consent = consent.get("consent") if isinstance(consent, dict) else None
                if not isinstance(consent, dict):
                    consent = {}
                for j, purpose in enumerate(purposes):
                    cols[14 + j].append(consent.get(purpose) is True)
        self._input.inc(seen)
        if blank:
            self._blank.inc(blank)
        for shard, cols in shards.items():
            arrays = [pa.array(c, type=f.type) for c, f in zip(cols, self._schema)]
            yield shard, pa.Table.from_arrays(arrays, schema=self._schema)


class ParseEvents(beam.PTransform):
    """Raw lines -> ``{"events": (shard, Table), "dead_letters": record}``."""

    def __init__(self, settings: ParseSettings, min_batch: int = 256, max_batch: int = 8192):
        super().__init__()
        self._settings = settings
        self._min_batch = min_batch
        self._max_batch = max_batch

    def expand(self, lines):
        return (lines
                | "BatchLines" >> beam.BatchElements(min_batch_size=self._min_batch, max_batch_size=self._max_batch)
                | "ParseAndNormalise" >> beam.ParDo(_ParseBatchFn(self._settings)).with_outputs(
                    DEAD_LETTERS, main="events"))
