"""The streaming parts of the delivery graph: sources, lateness, de-duplication with bounded state, and the
batch-interval trigger each integration's branch runs under.

Sources (each yields raw lines, ``bytes``, stamped with their arrival time by the source):

- ``--input_subscription projects/P/subscriptions/S``: Pub/Sub (``ReadFromPubSub``); a message holds one
  event or several NDJSON lines;
- ``--input_watch GLOB``: files appearing under a glob on any Beam filesystem (``MatchContinuously``), each
  file read once, ``.gz`` by extension;
- ``--kafka_bootstrap_servers`` + ``--kafka_topic``: Beam's ``ReadFromKafka``, a Java cross-language
  transform (see the README for what it needs).

Then, per event:

- lateness: an event whose ``timestamp`` is more than ``allowed_lateness_seconds`` before its ``received_at``
  (when it reached the collector, or the pipeline when it carries none) is a ``too_late`` dead letter (never
  dropped silently); anything within it is delivered to the partition of its event time, as a new file of that partition;
- de-duplication by ``event_id`` within ``dedup_window_seconds`` (default 24 hours): state per id, cleared
  by a timer when the window has passed, so state stays bounded by the ids of one window;
- batching per integration (``GroupIntoBatches``): a batch is delivered once ``batch_size`` events are
  buffered or ``batch_interval_seconds`` after its first event, whichever comes first, also when traffic
  stops; each batch then passes every grouping inside the sinks (by partition, by day, by route for
  reports) as one firing (``Repeatedly(AfterCount(1))``), so each sink writes its batches as they come.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa
from apache_beam.coders import BooleanCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms import coders, deadletter  # noqa: F401 (coders: Arrow shuffles)
from transforms.deadletter import DEAD_LETTERS
from transforms.dialects import cloudevents


def split_message(data: bytes) -> list[bytes]:
    """A message's lines (one event per line; a trailing newline or CR is not an event). Pure."""
    return [line.rstrip(b"\r") for line in data.split(b"\n") if line.strip()]


def pubsub_lines(message) -> list[bytes]:
    """A Pub/Sub message's lines; a binary-mode CloudEvent (``ce-*`` attributes) becomes one structured line."""
    structured = cloudevents.binary_to_structured(message.attributes or {}, message.data, "ce-")
    return [structured] if structured is not None else split_message(message.data or b"")


def kafka_lines(record) -> list[bytes]:
    """A Kafka record's lines (``ReadFromKafka(with_metadata=True)``); binary-mode CloudEvents (``ce_*``
    headers, the Kafka protocol binding) become one structured line."""
    headers = {}
    for header in getattr(record, "headers", None) or []:
        key, value = (header.key, header.value) if hasattr(header, "key") else header
        headers[key] = value
    value = getattr(record, "value", None)
    if value is None and isinstance(record, tuple):
        value = record[1]
    structured = cloudevents.binary_to_structured(headers, value, "ce_")
    return [structured] if structured is not None else split_message(value or b"")


def kafka_consumer_config(servers: str) -> dict:
    """The Kafka consumer's settings: from the earliest retained record, offsets never committed."""
    return {"bootstrap.servers": servers, "group.id": "beamhouse", "auto.offset.reset": "earliest",
            "enable.auto.commit": "false"}


def read_file_lines(readable) -> list[bytes]:
    """All lines of a matched file (``fileio.ReadableFile``), decompressed by extension."""
    from apache_beam.io.filesystem import CompressionTypes

    path = readable.metadata.path
    kind = CompressionTypes.GZIP if path.endswith(".gz") else CompressionTypes.UNCOMPRESSED
    with readable.open(compression_type=kind) as fh:
        return split_message(fh.read())


class ReadStream(beam.PTransform):
    """Raw lines from one streaming source (see the module docstring)."""

    def __init__(self, subscription=None, watch=None, watch_interval=10.0, kafka_servers=None, kafka_topic=None,
                 kafka_expansion_service=None):
        super().__init__()
        self._subscription, self._watch, self._interval = subscription, watch, watch_interval
        self._kafka = (kafka_servers, kafka_topic, kafka_expansion_service)

    def expand(self, p):
        if self._subscription:
            return (p | "ReadPubSub" >> beam.io.ReadFromPubSub(subscription=self._subscription, with_attributes=True)
                    | "SplitMessages" >> beam.FlatMap(pubsub_lines))
        if self._watch:
            from apache_beam.io import fileio

            return (p | "WatchFiles" >> fileio.MatchContinuously(self._watch, interval=self._interval)
                    | "ReadMatches" >> fileio.ReadMatches()
                    | "ReadLines" >> beam.FlatMap(read_file_lines))
        servers, topic, expansion = self._kafka
        from apache_beam.io.kafka import ReadFromKafka

        # The job commits no offsets: a stopped or crashed job's successor reads the topic from its first
        # retained record again, and the destinations' idempotence (the files' ledger, keyed MERGE/dedup in
        # the warehouses) drops what was delivered before. Nothing buffered is lost, nothing is doubled.
        return (p | "ReadKafka" >> ReadFromKafka(consumer_config=kafka_consumer_config(servers),
                                                 topics=[topic], with_metadata=True,
                                                 **({"expansion_service": expansion} if expansion else {}))
                | "KafkaValues" >> beam.FlatMap(kafka_lines))


class _ExplodeFn(beam.DoFn):
    """``(shard, Table)`` -> ``(event_id, one-row Table)``; events received more than the allowed lateness
    after their event time become ``too_late`` dead letters."""

    def __init__(self, allowed_lateness_s: float, source_id: str):
        self._lateness_us = int(allowed_lateness_s * 1_000_000)
        self._source_id = source_id

    def process(self, element):
        _, table = element
        # Lateness is measured against received_at (the collector's arrival time; the pipeline's own when
        # the event has none): a replay of the same events is judged the same way every time.
        times = table["timestamp"].cast(pa.int64()).to_numpy(zero_copy_only=False)
        received = table["received_at"].cast(pa.int64()).to_numpy(zero_copy_only=False)
        late = times < received - self._lateness_us
        ids = table["event_id"].to_pylist()
        for i in np.flatnonzero(late).tolist():
            deadletter.count("too_late")
            row = {k: v for k, v in table.slice(i, 1).to_pylist()[0].items() if not k.startswith("_")}
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, deadletter.make_record(
                "too_late", "normalise", f"event time is more than the allowed lateness "
                f"({self._lateness_us // 1_000_000} s) before received_at",
                orjson.dumps(row, option=orjson.OPT_NAIVE_UTC).decode(), self._source_id, event_id=ids[i]))
        for i in np.flatnonzero(~late).tolist():
            yield ids[i], table.slice(i, 1)


class _DedupFn(beam.DoFn):
    """The first of each ``event_id`` within the window passes; state is cleared when the window ends."""

    SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.REAL_TIME)

    def __init__(self, window_seconds: float):
        self._window = window_seconds

    def setup(self):
        self._duplicates = Metrics.counter(deadletter.NAMESPACE, "duplicates")
        self._unique = Metrics.counter(deadletter.NAMESPACE, "unique")

    def process(self, element, seen=beam.DoFn.StateParam(SEEN), expiry=beam.DoFn.TimerParam(EXPIRY)):
        if seen.read():
            self._duplicates.inc()
            return
        seen.write(True)
        expiry.set(Timestamp.now() + Duration(seconds=self._window))
        self._unique.inc()
        yield element[1]

    @on_timer(EXPIRY)
    def expire(self, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()


class DeduplicateStream(beam.PTransform):
    """``(shard, Table)`` -> unique one-row tables (within ``window_seconds``), plus ``too_late`` dead letters
    as ``result[DEAD_LETTERS]``."""

    def __init__(self, window_seconds: float, allowed_lateness_s: float, source_id: str):
        super().__init__()
        self._window, self._lateness, self._source = window_seconds, allowed_lateness_s, source_id

    def expand(self, keyed_tables):
        exploded = keyed_tables | "Explode" >> beam.ParDo(_ExplodeFn(self._lateness, self._source)).with_output_types(
            tuple[str, pa.Table]).with_outputs(DEAD_LETTERS, main="events")
        unique = exploded.events | "DropDuplicates" >> beam.ParDo(_DedupFn(self._window)).with_output_types(pa.Table)
        return {"events": unique, DEAD_LETTERS: exploded[DEAD_LETTERS]}


class BatchByInterval(beam.PTransform):
    """One-row tables -> one table per batch: ``GroupIntoBatches`` over the integration's events delivers a
    batch when ``batch_size`` events are buffered or ``interval_seconds`` after its first event, whichever
    comes first, also when traffic stops. Batches are then re-windowed to fire every grouping downstream
    (by partition, by day, by route for reports) once per batch. ``clock`` is for tests (TestStream's
    processing time); production uses the wall clock."""

    def __init__(self, batch_size: int, interval_seconds: float, clock=None):
        super().__init__()
        self._size, self._interval, self._clock = batch_size, interval_seconds, clock

    def expand(self, tables):
        kwargs = {"clock": self._clock} if self._clock is not None else {}
        return (tables
                # One key: batch_size and the interval count the integration's events, not a shard's.
                | "KeyOnce" >> beam.Map(lambda t: (0, t)).with_output_types(tuple[int, pa.Table])
                | "GroupIntoBatches" >> beam.GroupIntoBatches(self._size, max_buffering_duration_secs=self._interval,
                                                              **kwargs)
                | "ConcatBatch" >> beam.FlatMapTuple(_concat_pane).with_output_types(pa.Table)
                | "FirePerBatch" >> fire_per_element())


# The global window ends a day before the end of time, and a drain (Dataflow's drain, Flink's
# stop-with-savepoint --drain, a bounded test stream's end) moves the watermark to the end of time, firing
# GroupIntoBatches' end-of-window timer: the batches it flushes then are behind the watermark, and every
# grouping downstream would drop them as late data. Allowing more than that day of lateness keeps them.
DRAIN_LATENESS_SECONDS = 2 * 86_400


def fire_per_element():
    """Global windows firing for every element (each batch passes each grouping as one pane, its state
    discarded after the firing), keeping what a drain flushes (see ``DRAIN_LATENESS_SECONDS``)."""
    return beam.WindowInto(window.GlobalWindows(), trigger=trigger.Repeatedly(trigger.AfterCount(1)),
                           accumulation_mode=trigger.AccumulationMode.DISCARDING,
                           allowed_lateness=DRAIN_LATENESS_SECONDS)


def _concat_pane(_, tables):
    # An empty batch or pane carries nothing to deliver.
    tables = list(tables)
    if tables:
        yield pa.concat_tables(tables)

