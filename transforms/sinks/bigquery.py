"""Vendor ``bigquery``: streaming inserts (``tabledata.insertAll``) keyed by ``event_id``, or load jobs.

Seed 000's body as it is::

    {"project_id": "my-gcp-project", "dataset": "datafly_events", "table": "events",
     "service_account_json": "file:/secrets/bq-writer.json", "batch_size": 500, "batch_interval_seconds": 60}

plus ``create_table`` (create the seed's table at start if missing), ``endpoint_url`` (emulators),
``location``, ``max_attempts``, ``request_timeout_seconds``. Credentials: ``service_account_json`` inline
or by reference (``env:``/``file:``), else application default credentials; anonymous with
``endpoint_url`` and no key.

Each request carries at most ``batch_size`` rows (and at most 50,000 rows and about 9 MB, under the API's
limits), with ``insertId`` = ``event_id``, so a retried request is recognised by BigQuery's best-effort
de-duplication (about a minute). Transient errors (429, 5xx, connection resets) are retried with
backoff within a bounded deadline; rows BigQuery rejects become ``sink_rejected`` dead letters with
BigQuery's reason while the rest of the request lands (``skipInvalidRows``).

``"method": "file_loads"`` (no streaming cost): each batch of ``batch_size`` rows (rows per load job; BigQuery
allows 1,500 load jobs per table per day, so raise it) becomes an NDJSON file, loaded by a load job into a
staging table ``_beamhouse_load_<batch id>`` (``WRITE_TRUNCATE``, so a retried load replaces itself), then
``MERGE``d into the table on ``event_id`` (pruned to the batch's time range) and the staging table dropped:
re-runs and retries never duplicate a row. With ``staging_uri`` (``gs://bucket/prefix``) the file is first
published there (create-only) and loaded from it; otherwise it is uploaded with the load request. A load
that BigQuery refuses for invalid data is retried as streaming inserts, so the bad rows become dead letters
and the rest lands.

``"method": "storage_write"`` uses Beam's ``WriteToBigQuery(method=STORAGE_WRITE_API)``, a Java
cross-language transform: building the pipeline starts Beam's Java expansion service (Java 11+ and the
expansion-service jar, downloaded from Maven Central unless pre-staged in ``~/.apache_beam/cache/jars``), which
also means Beam picks the write ids (not ``event_id``). A missing dataset or table,
or denied access, fails the run at start with a clear message. Least privilege:
``bigquery.tables.updateData`` on the table (plus ``bigquery.tables.get`` for the start-up check,
``bigquery.tables.create`` only with ``create_table``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from pydantic import Field

from transforms import clients, deadletter, formats
from transforms.deadletter import DEAD_LETTERS
from transforms.integrations import BaseDestinationConfig
from transforms.profiles.warehouse import COLUMNS, JSON_COLUMNS, TIME_COLUMNS, to_warehouse
from transforms.secrets import SecretField, redact
from transforms.sinks.base import Destination, WriteResult

MAX_ROWS_PER_REQUEST = 50_000     # API limit
MAX_REQUEST_BYTES = 9_000_000     # below the API's 10 MB request limit, leaving room for the envelope
SCOPES = ("https://www.googleapis.com/auth/bigquery.insertdata", "https://www.googleapis.com/auth/bigquery")

# The seed's table: (column, type, mode). JSON columns also accept STRING in an existing table.
SCHEMA = tuple((c, "TIMESTAMP" if c in TIME_COLUMNS else "JSON" if c in JSON_COLUMNS else "STRING",
                "REQUIRED" if c == "event_id" else "NULLABLE") for c in COLUMNS)
_ACCEPTED = {"STRING": {"STRING"}, "TIMESTAMP": {"TIMESTAMP"}, "JSON": {"JSON", "STRING"}}


class BigQueryConfig(BaseDestinationConfig):
    project_id: str = Field(pattern=r"^([a-z][a-z0-9.-]{0,62}:)?[a-z][a-z0-9-]{4,61}[a-z0-9]$")
    """The destination table."""
    dataset: str = Field(pattern=r"^[A-Za-z0-9_]{1,1024}$")
    """The destination table."""
    table: str = Field(pattern=r"^[A-Za-z0-9_-]{1,1024}$")
    """The destination table."""
    service_account_json: SecretField | None = None
    """Key JSON inline (string or object) or by reference (`env:`/`file:`); anonymous with `endpoint_url` and no
    key (emulators)"""
    method: Literal["streaming_inserts", "file_loads", "storage_write"] = "streaming_inserts"
    """`streaming_inserts` (`tabledata.insertAll`), `file_loads` (load jobs) or `storage_write` (Beam's Storage
    Write API)"""
    staging_uri: str | None = Field(None, pattern=r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^\s]*)?$",
                                    description="file_loads: publish load files here first")
    create_table: bool = False
    """Create the seed's table at start if missing: JSON columns, `PARTITION BY DATE(timestamp)`, `CLUSTER BY type,
    event`. `python -m pipelines.ddl` prints the DDL for creating it yourself."""
    endpoint_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    """API endpoint (emulators); default: Google's."""
    location: str | None = None
    """Location of the dataset's load jobs (e.g. `EU`); default: BigQuery's choice."""
    max_attempts: int = Field(5, ge=1, le=20)
    """Transient errors (429, 5xx, resets) retried with backoff within about `2^max_attempts * 2` s; then the run
    fails."""
    request_timeout_seconds: float = Field(60, gt=0, le=600)
    """How long one API request may take before it counts as failed (and is retried)."""

    def destination(self) -> str:
        return f"bigquery:{self.project_id}.{self.dataset}.{self.table}"

    @property
    def table_id(self) -> str:
        return f"{self.project_id}.{self.dataset}.{self.table}"

    def preflight(self) -> list[str]:
        """Resolve the key, check the dataset and table (creating it with ``create_table``)."""
        if self.service_account_json is not None and (p := self.service_account_json.check()):
            return [f"service_account_json: {p}"]
        try:
            return ensure_table(client_for(self), self)
        except Exception as exc:  # noqa: BLE001 - one clear line, never the key
            return [redact(f"{self.table_id}: {type(exc).__name__}: {getattr(exc, 'message', exc)}")]


def create_table_ddl(project_id: str, dataset: str, table: str) -> str:
    """The seed's DDL for the table (for users who create tables themselves). Pure."""
    for part, pattern in ((project_id, r"[a-z0-9.:-]+"), (dataset, r"[A-Za-z0-9_]+"), (table, r"[A-Za-z0-9_-]+")):
        if not re.fullmatch(pattern, part):
            raise ValueError(f"invalid identifier {part!r}")
    columns = ",\n".join(f"  {name} {kind}{' NOT NULL' if mode == 'REQUIRED' else ''}" for name, kind, mode in SCHEMA)
    return (f"CREATE TABLE `{project_id}.{dataset}.{table}` (\n{columns}\n)\n"
            f"PARTITION BY DATE(timestamp)\nCLUSTER BY type, event;")


def schema_problems(fields: Iterable[tuple[str, str, str]]) -> list[str]:
    """What makes an existing table's schema unusable: ``fields`` are (name, type, mode). Pure."""
    actual = {name: (kind.upper(), (mode or "NULLABLE").upper()) for name, kind, mode in fields}
    problems = []
    for name, kind, _ in SCHEMA:
        if name not in actual:
            problems.append(f"column {name} is missing")
        elif actual[name][0] not in _ACCEPTED[kind]:
            problems.append(f"column {name} is {actual[name][0]}, expected {kind}")
    wanted = {name for name, _, _ in SCHEMA}
    for name, (_, mode) in actual.items():
        if name not in wanted and mode == "REQUIRED":
            problems.append(f"column {name} is REQUIRED but not written by beamhouse: every insert would fail")
    return problems


def merge_sql(table_id: str, staging_id: str, min_us: int, max_us: int) -> str:
    """Insert the staging table's rows whose ``event_id`` the table does not hold; the time range prunes
    the target's partitions. Pure; identifiers are validated project.dataset.table ids."""
    for ident in (table_id, staging_id):
        if not re.fullmatch(r"[a-z0-9.:-]+\.[A-Za-z0-9_]+\.[A-Za-z0-9_-]+", ident):
            raise ValueError(f"invalid table id {ident!r}")
    cols = ", ".join(name for name, _, _ in SCHEMA)
    values = ", ".join(f"S.{name}" for name, _, _ in SCHEMA)
    return (f"MERGE `{table_id}` T USING `{staging_id}` S\n"
            f"ON T.event_id = S.event_id AND T.timestamp BETWEEN TIMESTAMP_MICROS({int(min_us)}) "
            f"AND TIMESTAMP_MICROS({int(max_us)})\n"
            f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})")


def chunk_rows(rows: list[dict], sizes: list[int], max_rows: int, max_bytes: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of at most ``max_rows`` rows and ``max_bytes`` bytes (a single larger row
    gets a request of its own). Pure."""
    out, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_rows or total + size > max_bytes):
            out.append((start, i))
            start, total = i, 0
        total += size
    if start < len(rows):
        out.append((start, len(rows)))
    return out


def client_for(config: BigQueryConfig):
    """A cached google-cloud-bigquery client; the key is read here, on the worker."""
    info = config.service_account_json.get() if config.service_account_json is not None else None

    def make():
        from google.api_core.client_options import ClientOptions
        from google.cloud import bigquery

        try:
            creds, _ = clients.google_credentials(info, config.endpoint_url, SCOPES)
        except clients.UnusableKey as exc:
            raise ValueError(str(exc)) from None
        options = ClientOptions(api_endpoint=config.endpoint_url) if config.endpoint_url else None
        return bigquery.Client(project=config.project_id, credentials=creds, location=config.location,
                               client_options=options)

    return clients.cached(("bigquery", config.project_id, config.endpoint_url, info, config.location), make)


def ensure_table(client, config: BigQueryConfig) -> list[str]:
    """Check dataset and table; create the table when asked. Returns problems (empty when usable)."""
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    dataset = f"{config.project_id}.{config.dataset}"
    try:
        client.get_dataset(dataset, timeout=30)
    except gexc.NotFound:
        return [f"dataset {dataset} does not exist (beamhouse does not create datasets)"]
    except gexc.Forbidden:
        return [f"access to dataset {dataset} denied (the service account needs bigquery.tables.get and "
                f"bigquery.tables.updateData on the table)"]
    try:
        table = client.get_table(config.table_id, timeout=30)
    except gexc.NotFound:
        if not config.create_table:
            return [f"table {config.table_id} does not exist: set create_table, or create it with the DDL from "
                    f"python -m pipelines.ddl --integrations FILE"]
        table = bigquery.Table(config.table_id, schema=[bigquery.SchemaField(n, t, mode=m) for n, t, m in SCHEMA])
        table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field="timestamp")
        table.clustering_fields = ["type", "event"]
        client.create_table(table, exists_ok=True, timeout=60)
        return []
    problems = schema_problems((f.name, f.field_type, f.mode) for f in table.schema)
    return [f"table {config.table_id} is incompatible: {p}" for p in problems]


def load_file(table) -> bytes:
    """NDJSON for a load job (``formats``): JSON columns as JSON values (a JSON column would keep a string as
    a string), times ISO 8601 UTC, nulls omitted."""
    return formats.encode("json", to_warehouse(table), "none")


def insert_rows(table) -> tuple[list[dict], list[int]]:
    """Warehouse rows as insertAll JSON (timestamps ISO 8601 UTC, JSON columns as JSON text) and the
    serialised size of each row."""
    rows = to_warehouse(table).to_pylist()
    out, sizes = [], []
    for row in rows:
        for column in TIME_COLUMNS:
            if row[column] is not None:
                row[column] = row[column].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        row = {k: v for k, v in row.items() if v is not None}
        out.append(row)
        sizes.append(len(orjson.dumps(row)) + len(row["event_id"]) + 32)
    return out, sizes


class _InsertAllFn(beam.DoFn):
    def __init__(self, integration_id: str, config: BigQueryConfig):
        self._iid = integration_id
        self._config = config

    def setup(self):
        from google.cloud.bigquery.retry import DEFAULT_RETRY

        self._client = client_for(self._config)
        deadline = min(600.0, 2.0 * (2 ** self._config.max_attempts))  # bounded: nothing retries forever
        self._retry = DEFAULT_RETRY.with_deadline(deadline)
        self._delivered = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.delivered")
        self._inserted = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.rows_inserted")
        self._present = Metrics.counter(deadletter.NAMESPACE, f"{self._iid}.rows_already_present")

    def process(self, table):
        rows, sizes = insert_rows(table)
        limit = min(self._config.batch_size, MAX_ROWS_PER_REQUEST)
        for start, stop in chunk_rows(rows, sizes, limit, MAX_REQUEST_BYTES):
            yield from self._insert(rows[start:stop])

    def _insert(self, rows: list[dict]):
        from google.api_core import exceptions as gexc

        ids = [r["event_id"] for r in rows]
        try:
            errors = self._client.insert_rows_json(self._config.table_id, rows, row_ids=ids, skip_invalid_rows=True,
                                                   retry=self._retry, timeout=self._config.request_timeout_seconds)
        except (gexc.NotFound, gexc.Forbidden, gexc.BadRequest) as exc:
            raise RuntimeError(redact(f"{self._config.table_id}: insertAll failed: {exc.message}")) from None
        rejected = {}
        for entry in errors:
            reasons = [f"{e.get('reason', '')}: {e.get('message', '')}".strip(": ") for e in entry.get("errors", [])
                       if e.get("reason") != "stopped"]
            if reasons:
                rejected[entry["index"]] = "; ".join(reasons)
        landed = len(rows) - len(rejected)
        self._delivered.inc(landed)
        self._inserted.inc(landed)
        for index, reason in sorted(rejected.items()):
            row = rows[index]
            deadletter.count("sink_rejected", self._iid)
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, deadletter.make_record(
                "sink_rejected", "sink", f"BigQuery rejected the row: {reason}", orjson.dumps(row).decode(),
                row.get("source_id"), integration_id=self._iid, event_id=row["event_id"]))
        if landed:
            yield {"table": self._config.table_id, "rows": landed}


class _LoadFn(_InsertAllFn):
    """``file_loads``: load job into a staging table, MERGE on event_id, drop the staging table."""

    def process(self, table):
        table = table.sort_by("event_id")
        for start in range(0, table.num_rows, self._config.batch_size):
            yield from self._load(table.slice(start, self._config.batch_size))

    def _load(self, rows):
        import hashlib
        import io

        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        c = self._config
        ids = rows["event_id"].to_pylist()
        batch = hashlib.sha256("\x00".join([c.table_id, *ids]).encode()).hexdigest()[:16]
        staging = f"{c.project_id}.{c.dataset}._beamhouse_load_{batch}"
        data = load_file(rows)
        job_config = bigquery.LoadJobConfig(
            schema=[bigquery.SchemaField(n, t, mode=m) for n, t, m in SCHEMA],
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE, max_bad_records=0)
        timeout = c.request_timeout_seconds * 5
        try:
            if c.staging_uri:
                from transforms.commit import publish_bytes
                from transforms.storage.gcs import GCSStorage

                bucket, _, prefix = c.staging_uri[5:].partition("/")
                name = f"{batch}.ndjson"
                publish_bytes(GCSStorage(bucket, prefix, service_account_json=c.service_account_json), name, data,
                              records=len(rows))
                job = self._client.load_table_from_uri(f"{c.staging_uri.rstrip('/')}/{name}", staging,
                                                       job_config=job_config, retry=self._retry)
            else:
                job = self._client.load_table_from_file(io.BytesIO(data), staging, job_config=job_config,
                                                        num_retries=c.max_attempts, rewind=True)
            job.result(timeout=timeout)
        except (gexc.BadRequest, gexc.GoogleAPICallError) as exc:
            if isinstance(exc, (gexc.NotFound, gexc.Forbidden)):
                raise RuntimeError(redact(f"{c.table_id}: load job failed: {exc.message}")) from None
            # Invalid data: stream this batch instead, so the bad rows are named and the rest lands.
            self._client.delete_table(staging, not_found_ok=True)
            yield from self._insert(insert_rows(rows)[0])
            return
        times = rows["timestamp"].cast(pa.int64())
        lo, hi = pc.min(times).as_py(), pc.max(times).as_py()
        try:
            merge = self._client.query(merge_sql(c.table_id, staging, lo, hi), retry=self._retry)
            merge.result(timeout=timeout)
        finally:
            self._client.delete_table(staging, not_found_ok=True)
        inserted = merge.num_dml_affected_rows or 0
        self._delivered.inc(len(rows))
        self._inserted.inc(inserted)
        self._present.inc(len(rows) - inserted)
        yield {"table": c.table_id, "rows": len(rows), "inserted": inserted}


class WriteEventsToBigQuery(beam.PTransform):
    """Prepared event batches -> insertAll requests; returns ``{"files", "reports", "dead_letters"}``
    (``files`` carries per-request row counts)."""

    def __init__(self, integration):
        super().__init__()
        self._integration = integration

    def expand(self, tables):
        integ = self._integration
        if integ.config.method == "storage_write":
            return _storage_write(tables, integ)
        fn = _LoadFn if integ.config.method == "file_loads" else _InsertAllFn
        out = tables | "Write" >> beam.ParDo(fn(integ.integration_id, integ.config)).with_outputs(
            DEAD_LETTERS, main="inserted")
        return WriteResult(out[DEAD_LETTERS], delivered=out.inserted)


def _storage_write(tables, integ):
    """Beam's Storage Write API transform (Java, via the expansion service; see the module docstring).
    Rows Beam reports as failed become ``sink_rejected`` dead letters."""
    c, iid = integ.config, integ.integration_id
    rows = (tables
            | "ToRows" >> beam.FlatMap(lambda t: insert_rows(t)[0])
            | "Count" >> beam.Map(_count, iid, 1))
    # Beam's schema conversion has no JSON type: JSON columns are sent as JSON text (STRING), which the
    # Storage Write API accepts for JSON columns.
    schema = {"fields": [{"name": n, "type": "STRING" if t == "JSON" else t, "mode": m} for n, t, m in SCHEMA]}
    result = rows | "StorageWrite" >> beam.io.WriteToBigQuery(
        table=c.table_id, schema=schema, method=beam.io.WriteToBigQuery.Method.STORAGE_WRITE_API,
        create_disposition=beam.io.BigQueryDisposition.CREATE_NEVER,
        write_disposition=beam.io.BigQueryDisposition.WRITE_APPEND)
    dead = result.failed_rows_with_errors | "FailedRows" >> beam.Map(_failed_row, iid)
    return WriteResult(dead)


def _count(row, iid, n):
    Metrics.counter(deadletter.NAMESPACE, f"{iid}.delivered").inc(n)
    return row


def _failed_row(failed, iid):
    # Beam yields (destination, row, error) for rows the Storage Write API refused.
    row, error = (failed[1], failed[2]) if isinstance(failed, tuple) and len(failed) >= 3 else (failed, "refused")
    row = dict(row) if isinstance(row, dict) else {"row": str(row)}
    _count(None, iid, -1)
    deadletter.count("sink_rejected", iid)
    return deadletter.make_record("sink_rejected", "sink", f"BigQuery Storage Write API: {error}",
                                  orjson.dumps(row, default=str).decode(), row.get("source_id"),
                                  integration_id=iid, event_id=row.get("event_id"))


def ddl(config: BigQueryConfig) -> str:
    return create_table_ddl(config.project_id, config.dataset, config.table)


DESTINATION = Destination(BigQueryConfig, WriteEventsToBigQuery, ddl=ddl)
