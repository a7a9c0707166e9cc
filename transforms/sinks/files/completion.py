"""Completion: once a time partition can receive no more data, its marker file (or Statsig's day-finish step)."""
from __future__ import annotations

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics

from transforms import deadletter, ledger
from transforms.routes import Route
from transforms.sinks.files.config import FileOutputConfig


def pending_name(partition: str) -> str:
    """The marker that ``partition`` has data and is not complete yet (holds the partition and its end)."""
    return f"_pending/{ledger.partition_token(partition)}"


def complete_name(partition: str) -> str:
    """The marker that ``partition`` was completed (written after its completion marker or signal)."""
    return f"_complete/{ledger.partition_token(partition)}"


class _CompletePartitionsFn(beam.DoFn):
    """``(route, file records)`` -> each partition of the route that is now complete, in the order the
    partitions end, stopping at the first that is not: its completion marker, written after its files
    (``completion_marker``), and for Statsig the day's metrics and ``finished_date`` signal (or the
    mark-data-ready call). Yields one record per completed partition.

    Complete means: the watermark - the latest ``received_at`` of the delivered events, per run in batch,
    per batch in streaming - has passed the partition's end plus the lateness. Events for a partition
    already completed are dead letters (``partition_complete``). The check is made when a batch's partition
    is written, so on a runner writing several batches at once, a batch held back for longer than the
    lateness could still publish after the marker (the README says so)."""

    def __init__(self, integration_id: str, config: FileOutputConfig):
        self._iid, self._config = integration_id, config

    def setup(self):
        self._completed = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.partitions_completed")

    def process(self, element):
        route_key, files = element
        watermarks = [f["max_received_at_us"] for f in files if "max_received_at_us" in f]
        if not watermarks:
            return
        watermark = max(watermarks)
        storage = self._config.open_storage(Route.from_key(route_key))
        lateness = self._config.completion_lateness_us()
        for end_us, partition, name in sorted(self._pending(storage)):
            if watermark < end_us + lateness:
                break
            if storage.lookup(complete_name(partition)) is None:
                yield self._complete(storage, partition, end_us)
            storage.remove(name)

    @staticmethod
    def _pending(storage):
        for name in storage.list_names("_pending"):
            try:
                info = orjson.loads(storage.read(name))
            except Exception:  # removed meanwhile by another worker completing it
                if storage.lookup(name) is None:
                    continue
                raise
            yield info["end_us"], info["partition"], name

    def _complete(self, storage, partition: str, end_us: int) -> dict:
        from transforms.timestamps import format_us

        c = self._config
        out = {"partition": partition, "end": format_us(end_us)}
        if c.completion_marker is not None:
            names = [n.rsplit("/", 1)[-1] for n in storage.list_names(partition)]
            files = [n for n in names if not n.startswith(("_", "."))]
            body = orjson.dumps({"partition": partition, "end": out["end"], "files": files},
                                option=orjson.OPT_INDENT_2)
            # An earlier attempt's marker stands (it listed the same files: none were accepted since).
            storage.put_if_absent(f"{partition}/{c.completion_marker}", body, {})
            out.update(marker=f"{partition}/{c.completion_marker}", files=len(files))
        out.update(c.output_profile().finish_partition(storage, partition, end_us, c))
        storage.put_if_absent(complete_name(partition), partition.encode(), {})
        self._completed.inc()
        return out
