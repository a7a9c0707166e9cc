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

import logging
import zlib
from dataclasses import dataclass
from itertools import repeat

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms import coders, deadletter, dialects  # noqa: F401 (coders: registers the Arrow shuffle coder)
from transforms.deadletter import DEAD_LETTERS
from transforms.dialects import cloudevents, common, segment, segment_bulk, snowplow
from transforms.events import batch_schema

_log = logging.getLogger(__name__)
# The deepest --max_nesting_depth: orjson writes at most 254 levels back out (its recursion limit), and
# an event's JSON columns sit one level below the event. The depth check itself walks iteratively.
MAX_NESTING_DEPTH = 200
_BOM = b"\xef\xbb\xbf"
_OPEN_BRACE, _CLOSE_BRACE, _OPEN_BRACKET, _NEWLINE = ord("{"), ord("}"), ord("["), ord("\n")
_SPACE = np.zeros(256, dtype=bool)  # the bytes ``bytes.isspace`` counts as whitespace
_SPACE[list(b" \t\n\r\x0b\x0c")] = True


class _JoinedLines:
    """Line ``i`` of a joined block, sliced out when asked: the fast path needs only a few (events whose id
    is derived from the whole line, events handed to the per-event path)."""

    def __init__(self, data: bytes, bounds: np.ndarray):
        self._data = data
        self._bounds = bounds  # line i is data[bounds[i] + 1:bounds[i + 1]]

    def __getitem__(self, i: int) -> bytes:
        return self._data[int(self._bounds[i]) + 1:int(self._bounds[i + 1])]

    def __len__(self) -> int:
        return len(self._bounds) - 1


class _ByteMasks:
    """``positions(codes, *values)``: where a block's bytes (a uint8 array) equal any of ``values``, with
    the comparisons written into buffers kept between blocks. numpy would allocate each comparison's result
    afresh, and at a block's size (megabytes) that is new memory from the kernel every time: its page
    faults cost five times the comparison itself."""

    def __init__(self):
        self.release()

    def release(self):
        """Drop the buffers (megabytes each): the stages after parsing need the memory more."""
        self._hits = self._other = np.empty(0, dtype=bool)

    def positions(self, codes: np.ndarray, *values: int) -> np.ndarray:
        n = len(codes)
        if len(self._hits) < n:
            self._hits, self._other = np.empty(n + n // 4, dtype=bool), np.empty(n + n // 4, dtype=bool)
        hits, other = self._hits[:n], self._other[:n]
        np.equal(codes, values[0], out=hits)
        for value in values[1:]:
            np.logical_or(hits, np.equal(codes, value, out=other), out=hits)
        return np.flatnonzero(hits)


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
    shards: int = 16  # see --shards in pipelines/options.py for why 16
    dialect: str = "auto"  # or one of segment, snowplow, cloudevents, otel (see transforms.dialects)
    max_envelope_bytes: int = 4 * 1024 * 1024  # a line holding many events (a batch or an OTLP export)


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


def split_by_shard(table: pa.Table, shards: int):
    """``(shard, rows)`` for each dedup shard present in ``table`` (rows of one event id share a shard)."""
    # ``shard_of`` of every id as C-level passes: the ids' UTF-8 bytes straight out of Arrow (no ``str`` to
    # encode again) and ``zlib.crc32`` mapped over them (175 -> 85 ns an event).
    ids = table["event_id"].cast(pa.binary()).to_pylist()
    keys = (np.fromiter(map(zlib.crc32, ids), dtype=np.uint32, count=table.num_rows) % shards).astype(np.int64)
    # One gather orders the rows by shard; each shard is then a zero-copy slice (a gather per shard
    # costs a pass over every column each time).
    order = np.argsort(keys, kind="stable")
    ordered = table.take(order)
    present, starts = np.unique(keys[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    for shard, start, end in zip(present.tolist(), starts.tolist(), ends.tolist()):
        yield shard, ordered.slice(start, end - start)


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
        self._bulk = segment_bulk.BulkNormaliser(self._tenant_path, self._app_path, s.consent_purposes,
                                                 self._max_past_us, self._max_future_us, s.source_id)
        self._masks = _ByteMasks()
        self._input = Metrics.counter(deadletter.NAMESPACE, "input")
        self._blank = Metrics.counter(deadletter.NAMESPACE, "blank_lines")

    def finish_bundle(self):
        self._masks.release()

    def _reject(self, reason, stage, error, line, event_id=None):
        # Counted when emitted (``process``), so a block handled again line by line is not counted twice.
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
        """Parse one block (or batch) of lines, or a ``(landed_us, block)`` pair from the file reader: then
        ``landed_us`` (the file's last-modified time) stands for the processing time, which is the
        ``received_at`` of events without ``receivedAt``, so a re-run gives them the same partition and file.

        No input line can fail the job: if handling the block raises anything unexpected, its lines are
        handled again one at a time, and a line that still raises becomes an ``internal_error`` dead letter
        naming the exception's type (its message may quote the event)."""
        landed_us = None
        if isinstance(lines, tuple):
            landed_us, lines = lines
        self._now = landed_us or deadletter.now_us()
        try:
            outputs, seen, blank = self._parse_block(lines)
        except Exception as exc:  # noqa: BLE001 - one event must not fail the run (a crash loop in streaming)
            # A bug, not bad input: said in the log and counted (the lines still get their outcome below).
            _log.warning("parsing a block raised %s; its lines are handled one at a time", type(exc).__name__)
            Metrics.counter(deadletter.NAMESPACE, "parse_block_fallbacks").inc()
            outputs, seen, blank = self._one_at_a_time(lines)
        self._input.inc(seen)
        if blank:
            self._blank.inc(blank)
        for out in outputs:
            if isinstance(out, beam.pvalue.TaggedOutput):
                deadletter.count(out.value["reason"])
            yield out

    def _one_at_a_time(self, lines):
        """``_parse_block`` of each line alone; a line whose handling raises becomes its dead letter."""
        outputs, seen, blank = [], 0, 0
        for line in (lines.split(b"\n") if isinstance(lines, bytes) else lines):
            try:
                out, line_seen, line_blank = self._parse_block([line], fast=False)
            except Exception as exc:  # noqa: BLE001
                out, line_seen, line_blank = [self._reject("internal_error", "parse", type(exc).__name__, line)], 1, 0
            outputs += out
            seen += line_seen
            blank += line_blank
        return outputs, seen, blank

    def _parse_block(self, lines, fast: bool = True):
        """``(outputs, non-blank lines, blank lines)`` of one block: ``(shard, table)`` pairs and dead
        letters (``TaggedOutput``), nothing counted yet. ``fast=False``: the per-event rules only."""
        outputs = list(self._parse(lines, fast))
        return outputs, self._seen, self._blank_seen

    def _parse(self, lines, fast: bool):
        s = self._s
        self._seen = self._blank_seen = 0  # envelopes add to them as they are opened (_count_envelope)
        bulk = self._bulk
        now = self._now
        use_fast = fast and bulk.usable and s.dialect in ("auto", "segment")
        # A block from ``transforms.read`` may come as the bytes it was read in, its lines joined by newlines.
        data = lines if isinstance(lines, bytes) else None
        # The common case: a block of plain lines that all decode on the fast path, checked and decoded with
        # C-level passes over the whole block instead of a Python loop over its lines.
        plain = None
        if use_fast:
            plain = self._plain_joined(data) if data is not None else self._plain_block(lines)
        block = bulk.decode_joined(plain[0], len(plain[1]) - 1) if plain is not None else None
        if block is not None:
            (events, probes), slow, blank = block, [], 0
            fast_lines, seen = (lines if data is None else _JoinedLines(*plain)), len(events)
        else:
            if data is not None:
                lines = data.split(b"\n")  # a joined block holds no line ending in \r (the reader lists those)
            events, probes, fast_lines, slow = [], [], [], []
            seen, blank = yield from self._line_by_line(lines, use_fast, events, probes, fast_lines, slow)
        self._seen += seen
        self._blank_seen += blank
        tables = []
        if events:
            columns, accepted, rejected = bulk.run(events, probes, now, fast_lines)
            if len(accepted):
                columns.insert(13, pa.repeat("segment", len(accepted)))
                tables.append(self._table(columns))
            slow.extend(fast_lines[i] for i in rejected)
        if slow:
            columns = [[] for _ in self._schema]
            for line in slow:
                yield from self._normalise_one(line, now, columns)
            if columns[0]:
                tables.append(self._table(columns))
        if not tables:
            return
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        yield from split_by_shard(table, s.shards)

    def _line_by_line(self, lines, use_fast: bool, events: list, probes: list, fast_lines: list, slow: list):
        """The per-line checks: append each line's decoded event and probe (and the line) to ``events``,
        ``probes`` and ``fast_lines`` when it may take the fast path, else the line to ``slow``; yields the
        dead letters of lines refused outright and returns ``(non-blank lines, blank lines)``."""
        s = self._s
        seen = blank = 0
        # Locals, not attribute lookups: this loop runs once per line.
        depth_limit, max_event_bytes = s.max_nesting_depth, s.max_event_bytes
        decode, keep_line, keep_slow = self._bulk.decode, fast_lines.append, slow.append
        keep_event, keep_probe = events.append, probes.append
        for line in lines:
            if line.startswith(_BOM):
                line = line[3:]
            if not line or line.isspace():
                blank += 1
                continue
            seen += 1
            if len(line) > max_event_bytes:
                # A line of many events (a batch, an OTLP export) may be larger; its events are checked one by one.
                if len(line) > s.max_envelope_bytes or not _may_be_envelope(line):
                    limit = s.max_envelope_bytes if _may_be_envelope(line) else s.max_event_bytes
                    yield self._reject("too_large", "parse", f"{len(line)} bytes exceeds {limit}", line)
                    continue
                keep_slow(line)
                continue
            # The fast path takes lines that are valid UTF-8 and shallow enough by bracket count (it keeps
            # nested objects as text, so it must not see what the per-event checks would refuse).
            if (use_fast and line.count(b"{") + line.count(b"[") <= depth_limit
                    and (line.isascii() or _valid_utf8(line))):
                decoded = decode(line)
                if decoded is not None:
                    keep_event(decoded[0])
                    keep_probe(decoded[1])
                    keep_line(line)
                    continue
            keep_slow(line)
        return seen, blank

    def _plain_block(self, lines):
        """``(joined, bounds)`` if every line may go to the fast path without the per-line checks, else
        None: none blank, none over ``max_event_bytes``, all valid UTF-8 without a BOM, none deeper than
        ``max_nesting_depth`` by bracket count (``_line_by_line`` applies the same checks line by line).
        ``joined``: the lines joined by newlines; ``bounds``: -1, the newlines' positions in it, its length
        (line ``i`` is ``joined[bounds[i] + 1:bounds[i + 1]]``)."""
        try:
            if not (lines and all(lines) and not any(map(bytes.isspace, lines))):
                return None
        except TypeError:  # not all ``bytes`` (a source handing over another buffer type): line by line
            return None
        data = b"\n".join(lines)
        return self._plain_joined(data, lines)

    def _plain_joined(self, data: bytes, lines=None):
        """``_plain_block`` for lines already joined by newlines (``data``), as the reader hands them over.
        Then no line may be empty or start with whitespace: that is how blank lines are told apart without
        splitting (a line with whitespace first is valid, but goes line by line). ``lines``: the lines, when
        the caller has them (their count must match the newlines').

        The checks run on the joined block with numpy, not line by line: where the newlines are gives the
        lengths, and each bracket's line is found by a binary search over them. With the comparisons' buffers
        kept (``_ByteMasks``) this costs 0.35 us a line against 0.7 for per-line ``len``/``count`` passes
        (a pass over a block's line objects misses the cache on each one)."""
        s = self._s
        codes = np.frombuffer(data, dtype=np.uint8)
        ends = self._masks.positions(codes, _NEWLINE)  # where each line but the last ends
        bounds = np.concatenate(([-1], ends, [len(data)]))
        if lines is not None:
            if len(ends) != len(lines) - 1:  # a line holding a newline itself: its parts are not lines here
                return None
        elif bounds[-2] + 1 >= len(data) or _SPACE[codes[bounds[:-1] + 1]].any():  # an empty or blank line
            return None
        if int(np.diff(bounds).max()) - 1 > s.max_event_bytes:
            return None
        # Every line must start with ``{`` and end with ``}``: inside a JSON value a ``}`` is never followed
        # by whitespace and then ``{``, so no value can then span a line break, each line holds at least one
        # value, and the decode's count equal to the lines' means one value a line. The count alone is not
        # enough: an object split over two lines and a line holding two objects balance it, and values
        # would be paired with the wrong lines.
        if (codes[bounds[:-1] + 1] != _OPEN_BRACE).any() or (codes[bounds[1:] - 1] != _CLOSE_BRACE).any():
            return None
        brackets = self._masks.positions(codes, _OPEN_BRACE, _OPEN_BRACKET)
        if len(brackets) > s.max_nesting_depth:
            if np.bincount(np.searchsorted(ends, brackets)).max() > s.max_nesting_depth:
                return None
        if codes.max() < 0x80:  # all ASCII
            return data, bounds
        # Joined by a newline, which no multi-byte sequence can span: the block is valid UTF-8 exactly when
        # every line is. A BOM anywhere in a joined block sends it line by line (where a leading one is cut).
        bom = any(map(bytes.startswith, lines, repeat(_BOM))) if lines is not None else _BOM in data
        if bom or not _valid_utf8(data):
            return None
        return data, bounds

    def _table(self, columns) -> pa.Table:
        arrays = [c.cast(f.type) if isinstance(c, pa.Array) else pa.array(c, type=f.type)
                  for c, f in zip(columns, self._schema)]
        return pa.Table.from_arrays(arrays, schema=self._schema)

    def _normalise_one(self, line: bytes, now: int, cols: list):
        """The per-event path: append the line's events to ``cols``; yields the dead letters."""
        s = self._s
        declared = s.dialect
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if declared in ("auto", "snowplow") and snowplow.looks_text(line):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as err:
                    yield self._reject("invalid_utf8", "parse", f"invalid UTF-8 at byte {err.start}", line)
                    return
                yield from self._append_items([("snowplow", snowplow.text_event(text, line, self._limits(now)))], cols)
                return
            yield self._classify(line, exc)
            return
        # Counting brackets is cheap; the walk runs only when the count could exceed the limit.
        if line.count(b"{") + line.count(b"[") > s.max_nesting_depth and _too_deep(obj, s.max_nesting_depth):
            yield self._reject("too_deep", "parse", f"nesting deeper than {s.max_nesting_depth}", line)
            return
        captured = cloudevents.from_http_capture(obj)
        if captured is not None:  # an HTTP request recorded as JSON: what it carried is the record
            obj = captured
        dialect = dialects.detect(obj) if declared == "auto" else declared
        if dialect == "segment":
            if type(obj) is not dict:
                yield self._reject("not_an_object", "parse", f"top level is a JSON {type(obj).__name__}", line)
                return
            if isinstance(obj.get("batch"), list) and "type" not in obj:
                self._count_envelope(len(obj["batch"]))
                yield from self._segment_envelope(obj, now, cols)
                return
            if len(line) > s.max_event_bytes:  # a large line let through as a possible envelope, which it is not
                yield self._reject("too_large", "parse", f"{len(line)} bytes exceeds {s.max_event_bytes}", line)
                return
            rejected = self._segment_one(obj, line, now, cols)
            if rejected is not None:
                yield rejected
            return
        items = dialects.events(dialect, obj, line, self._limits(now))
        self._count_envelope(len(items))
        yield from self._append_items(items, cols)

    def _count_envelope(self, events: int):
        """``input`` counts events: a line holding several adds the rest; one holding none (an empty batch or
        export) is counted with the blank lines, so the accounting still balances."""
        self._seen += events - 1
        if events == 0:
            self._blank_seen += 1

    def _limits(self, now: int) -> common.Limits:
        return common.Limits(self._s.source_id, now, self._max_past_us, self._max_future_us)

    def _append_items(self, items, cols):
        """Append normalised events to ``cols``; yield the dead letters of rejected ones."""
        s = self._s
        for dialect, item in items:
            if isinstance(item, segment.Rejected):
                yield self._reject(item.reason, "normalise", item.error, getattr(item, "payload", b""), item.event_id)
                continue
            row, view = item
            encoded = [None if row[i] is None else orjson.dumps(row[i]) for i in (8, 9, 10)]
            size = sum(len(e) for e in encoded if e is not None)
            if size > s.max_event_bytes:
                yield self._reject("too_large", "normalise", f"the event's JSON is {size} bytes, over {s.max_event_bytes}",
                                   orjson.dumps({"event_id": row[0], "event": row[2]}), row[0])
                continue
            self._append_row(cols, row, encoded, view, dialect)

    def _append_row(self, cols, row, encoded, source: dict, dialect: str):
        """One event's columns: canonical values, JSON columns as encoded, then tenant, app, dialect and one
        consent flag per purpose, read from ``source`` (the raw Segment object, or another dialect's view)."""
        for i in range(8):
            cols[i].append(row[i])
        for i, value in zip((8, 9, 10), encoded):
            cols[i].append(value)
        cols[11].append(_get_path(source, self._tenant_path))
        cols[12].append(_get_path(source, self._app_path))
        cols[13].append(dialect)
        consent = source.get("context")
        consent = consent.get("consent") if isinstance(consent, dict) else None
        if not isinstance(consent, dict):
            consent = {}
        for j, purpose in enumerate(self._s.consent_purposes):
            cols[14 + j].append(consent.get(purpose) is True)

    def _segment_envelope(self, obj: dict, now: int, cols: list):
        """A Segment HTTP API batch body (``{"batch": [...], "sentAt": ...}``): each event on its own; the
        body's ``sentAt`` applies to events without one, and ``writeKey`` (a credential) is never kept."""
        sent_at = obj.get("sentAt")
        for event in obj["batch"]:
            payload = orjson.dumps(event)
            if type(event) is not dict:
                yield self._reject("not_an_object", "parse", f"a batch entry is a JSON {type(event).__name__}", payload)
                continue
            if len(payload) > self._s.max_event_bytes:  # the envelope may be large, each of its events not
                yield self._reject("too_large", "parse", f"a batch entry of {len(payload)} bytes exceeds "
                                   f"{self._s.max_event_bytes}", payload)
                continue
            if sent_at is not None and event.get("sentAt") is None:
                event = {**event, "sentAt": sent_at}
            event.pop("writeKey", None)
            rejected = self._segment_one(event, payload, now, cols)
            if rejected is not None:
                yield rejected

    def _segment_one(self, obj: dict, line: bytes, now: int, cols: list):
        """One Segment event: append its columns to ``cols``, or return its dead letter."""
        s = self._s
        try:
            row = segment.normalise(obj, s.source_id, now, self._max_past_us, self._max_future_us)
        except segment.Rejected as rej:
            return self._reject(rej.reason, "normalise", rej.error, line, rej.event_id)
        self._append_row(cols, row, [None if row[i] is None else orjson.dumps(row[i]) for i in (8, 9, 10)],
                         obj, "segment")
        return None


def _may_be_envelope(line: bytes) -> bool:
    head = line.lstrip()[:1]
    return head == b"[" or (head == b"{" and any(k in line for k in (b'"resourceLogs"', b"payload_data", b'"batch"')))


def _valid_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class ParseEvents(beam.PTransform):
    """Raw lines -> ``{"events": (shard, Table), "dead_letters": record}``.

    The input is either blocks of lines (from ``transforms.read.ReadLineBlocks``: ``bytes`` holding lines
    joined by newlines, or ``list[bytes]``; ``blocks=True``) or one line per element (``bytes``, as a
    streaming source delivers them), which are batched first."""

    def __init__(self, settings: ParseSettings, blocks: bool = False, min_batch: int = 256, max_batch: int = 8192):
        super().__init__()
        self._settings = settings
        self._blocks = blocks
        self._min_batch = min_batch
        self._max_batch = max_batch

    def expand(self, lines):
        if not self._blocks:
            lines = lines | "BatchLines" >> beam.BatchElements(
                min_batch_size=self._min_batch, max_batch_size=self._max_batch)
        return lines | "ParseAndNormalise" >> beam.ParDo(_ParseBatchFn(self._settings)).with_output_types(
            tuple[int, pa.Table]).with_outputs(DEAD_LETTERS, main="events")
