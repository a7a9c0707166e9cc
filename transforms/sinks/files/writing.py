"""Writing a write group's partitions: the ledger subtracted, files cut by ``batch_size``, published
create-only (``transforms.commit``), recorded in the ledger; then one delivery report per route."""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from transforms import commit, deadletter, formats, ledger, partitioning
from transforms.deadletter import sink_dead_letters
from transforms.profiles.warehouse import to_warehouse
from transforms.routes import Route
from transforms.sinks.files.completion import complete_name, pending_name
from transforms.sinks.files.config import FileOutputConfig
from transforms.sinks.files.keying import NO_TENANT, split_destinations


def tenant_counts(rows: pa.Table) -> dict[str, int]:
    """Events per tenant in ``rows`` (events without a tenant under ``NO_TENANT``)."""
    counts = pc.value_counts(rows["_tenant_id"]).to_pylist()
    return {NO_TENANT if c["values"] is None else c["values"]: c["counts"] for c in counts}


def apportion(events_by_tenant: dict[str, int], size: int) -> dict[str, tuple[int, int]]:
    """``{tenant: (events, bytes)}``: a file's bytes shared in proportion to events, summing exactly to
    ``size`` (the remainder goes to the tenants with the largest fractions, ties by name)."""
    total = sum(events_by_tenant.values())
    exact = {t: size * n / total for t, n in events_by_tenant.items()}
    out = {t: int(v) for t, v in exact.items()}
    rest = size - sum(out.values())
    for t in sorted(exact, key=lambda t: (out[t] - exact[t], t))[:rest]:
        out[t] += 1
    return {t: (events_by_tenant[t], out[t]) for t in events_by_tenant}


class _WritePartitionFn(beam.DoFn):
    """All events of one (route, write group) -> per partition and file tenant (None: mixed), files of at
    most ``batch_size`` events."""

    def __init__(self, integration_id: str, config: FileOutputConfig, run_id: str):
        self._iid = integration_id
        self._config = config
        self._run_id = run_id  # the same in every worker: pickled with the DoFn

    def setup(self):
        c = self._config
        self._storages: dict[str, object] = {}
        self._key_problems: dict[str, str | None] = {}
        self._ext = formats.extension(c.file_format, c.compression)
        self._names = partitioning.parse_file_template(c.file_name)
        self._options = {"separator": c.csv_separator} if c.file_format == "csv" else {}
        self._delivered = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.delivered")
        self._files = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.files")
        self._present = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.files_already_present")
        self._already = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.already_delivered")
        self._differs = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.files_differ")
        self._adopted = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.files_adopted")
        self._concurrent = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.files_of_concurrent_run")
        self._ledger_unavailable = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.ledger_unavailable")
        self._ledgers: dict[str, ledger.Ledger] = {}
        self._template = partitioning.parse_template(c.partition_by)
        self._pending_known: set[tuple[int, str]] = set()  # (storage, partition) with a pending marker

    def _storage(self, route_key: str):
        if route_key not in self._storages:
            route = Route.from_key(route_key)
            self._key_problems[route_key] = self._config.key_problem(route)
            self._storages[route_key] = self._config.open_storage(route)
        return self._storages[route_key], self._key_problems[route_key]

    def process(self, element):
        (route_key, _), slices = element
        slices = list(slices)
        if not slices:  # an empty streaming pane
            return
        grouped = pa.concat_tables(slices)
        for partition, tenant, rows in split_destinations(grouped, self._config.partition_time):
            yield from self._write_partition(route_key, partition, tenant, rows)

    def _write_partition(self, route_key: str, partition: str, tenant: str | None, rows: pa.Table):
        storage, problem = self._storage(route_key)
        if problem is not None:  # fail closed: never unencrypted, never under another key
            yield from sink_dead_letters(self._iid, "encryption_key_unusable", rows, problem, with_payload=False)
            return
        rows = yield from self._subtract_delivered(route_key, storage, partition, rows)
        if self._config.completes_partitions():
            rows = yield from self._completion_check(storage, partition, rows)
        rows = yield from self._profile_checks(rows)
        if rows.num_rows == 0:
            return
        for number, start in enumerate(range(0, rows.num_rows, self._config.batch_size), 1):
            chunk = rows.slice(start, self._config.batch_size)
            try:
                record = self._write(storage, self._ledgers[route_key], partition, tenant, chunk, number)
            except commit.KeyUnusable as exc:
                yield from sink_dead_letters(self._iid, "encryption_key_unusable", chunk, str(exc), with_payload=False)
                continue
            yield {**record, "route": route_key}

    def _subtract_delivered(self, route_key: str, storage, partition: str, rows):
        """Drop the events the partition already holds (``transforms.ledger``: a re-run over grown input),
        counted as delivered; yields the files of a stopped run that no report lists, for this run's report.
        Returns the rows still to write."""
        if route_key not in self._ledgers:
            self._ledgers[route_key] = ledger.Ledger(storage, self._run_id)
        book = self._ledgers[route_key]
        held, adopt = book.delivered(partition)
        if book.unavailable:
            self._ledger_unavailable.inc()
        for record in adopt:
            self._adopted.inc()
            yield {**record, "status": "adopted", "route": route_key}
        if not len(held):
            return rows
        known = pc.is_in(rows["event_id"], value_set=held)
        already = pc.sum(known).as_py() or 0
        if not already:
            return rows
        self._delivered.inc(already)
        self._already.inc(already)
        return rows.filter(pc.invert(known))

    def _completion_check(self, storage, partition: str, rows):
        """Events of a partition already marked complete are dead letters: readers that trust the marker (or
        Statsig, which never re-reads a finished day) would never see them. Returns the rows to write."""
        if storage.lookup(complete_name(partition)) is None:
            return rows
        reason, error = self._config.output_profile().after_completion(partition)
        yield from sink_dead_letters(self._iid, reason, rows, error)
        return rows.slice(0, 0)

    def _profile_checks(self, rows):
        """Dead-letter the events the output profile's importer cannot hold. Returns the rest."""
        rejected = self._config.output_profile().rejected(to_warehouse(rows), self._config)
        if not rejected:
            return rows
        for index, reason in rejected:
            yield from sink_dead_letters(self._iid, "profile_rejected", rows.slice(index, 1), reason)
        keep = np.ones(rows.num_rows, dtype=bool)
        keep[[i for i, _ in rejected]] = False
        return rows.filter(pa.array(keep))

    def _profile_table(self, rows: pa.Table) -> pa.Table:
        table, collisions = self._config.output_profile().shape(to_warehouse(rows), self._config)
        if collisions:
            Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.map_key_collisions").inc(collisions)
        return table

    def _write(self, storage, book: ledger.Ledger, partition: str, tenant: str, rows, number: int = 1):
        c = self._config
        batch = partitioning.batch_id(self._iid, partition, rows["event_id"].cast(pa.binary()).to_pylist())
        first_us = pc.min(rows[c.partition_time]).value

        def name_for(collision: int) -> str:
            name = partitioning.render_file_name(self._names, first_us, batch, self._ext, collision, number)
            return f"{partition}/{name}"

        data = formats.encode(c.file_format, self._profile_table(rows), c.compression, **self._options)
        record = commit.publish_batch(storage, name_for, data, rows.num_rows, batch=batch,
                                      content_addressed=self._names.content_addressed, partition=partition)
        record["batch"] = batch
        if tenant is not None:
            record["tenant"] = tenant
        if not book.record(partition, batch, {k: v for k, v in record.items() if k != "status"}, rows["event_id"]):
            record["status"] = "another_run"  # a concurrent run's file, listed in that run's report
        if c.completes_partitions():
            # The partition has data: remember it and its end (in the destination, so a later run completes
            # it) and how far the delivered data reaches (the watermark completeness is judged by).
            if (id(storage), partition) not in self._pending_known:
                end_us = partitioning.partition_end_us(self._template, first_us, c.partition_timezone)
                storage.put_if_absent(pending_name(partition),
                                      orjson.dumps({"partition": partition, "end_us": end_us}), {})
                self._pending_known.add((id(storage), partition))
            record["max_received_at_us"] = pc.max(rows["received_at"]).value
        self._delivered.inc(rows.num_rows)
        self._files.inc()
        if record["status"] == "another_run":
            self._concurrent.inc()
        if record["status"] == "already_present":
            self._present.inc()
            if record.get("differs"):
                self._differs.inc()
        written = record["status"] == "published"
        shares = {tenant: rows.num_rows} if tenant is not None else tenant_counts(rows)
        for name, (events, size) in apportion(shares, record.get("bytes", 0)).items():
            usage = f"{self._iid}.tenant.{name}."
            Metrics.counter(deadletter.NAMESPACE, usage + "events").inc(events)
            Metrics.counter(deadletter.NAMESPACE, usage + "files").inc()
            Metrics.counter(deadletter.NAMESPACE, usage + "bytes").inc(size)
            if written:
                Metrics.counter(deadletter.NAMESPACE, usage + "bytes_written").inc(size)
        return record


class _WriteReportFn(beam.DoFn):
    """One delivery report per route: the files of this generation under that route's root."""

    def __init__(self, integration_id: str, vendor: str, config: FileOutputConfig):
        self._iid, self._vendor, self._config = integration_id, vendor, config

    def process(self, element):
        from transforms.timestamps import format_us

        route_key, files = element
        storage = self._config.open_storage(Route.from_key(route_key))
        # One entry a path: a stopped run's file can be adopted by two workers meeting its partition.
        entries = list({f["path"]: {k: v for k, v in f.items() if k not in ("route", "max_received_at_us")}
                        for f in files if f["status"] != "another_run"}.values())
        report = commit.write_report(storage, self._iid, self._vendor, entries,
                                     created_at=format_us(deadletter.now_us()))
        if report is not None:
            Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.reports").inc()
            book = ledger.Ledger(storage)
            for entry in entries:  # after the report: its files no longer need adopting
                if "batch" in entry:
                    book.mark_reported(entry["partition"], entry["batch"])
            yield {**report, "route": route_key}
