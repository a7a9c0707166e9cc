"""Vendor ``duckdb``: the embedded warehouse, a DuckDB database file.

Config (plus the common settings)::

    {"path": "out/warehouse.duckdb", "table": "events", "create_table": true}

The table has the 13 canonical columns, ``TIMESTAMP`` columns holding UTC, and ``JSON`` columns for
``context``/``properties``/``traits``. Each run loads all of its events in one transaction and inserts
only rows whose ``event_id`` is not already in the table, so re-runs and retries never double a row.
DuckDB allows one writing process per file, so the load runs as a single step after all batches are
prepared.

Query example (revenue by day)::

    SELECT CAST("timestamp" AS DATE) AS day,
           ROUND(SUM(CAST(json_extract(properties, '$.total') AS DECIMAL(18, 2))), 2) AS revenue
    FROM events WHERE event = 'Order Completed' GROUP BY day ORDER BY day DESC;
"""
from __future__ import annotations

import os
import re

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from pydantic import Field

from transforms import coders, deadletter
from transforms.integrations import BaseDestinationConfig
from transforms.profiles.warehouse import COLUMNS, JSON_COLUMNS, TIME_COLUMNS, to_warehouse
from transforms.sinks.base import Destination, WriteResult

_IDENT = r"[A-Za-z_][A-Za-z0-9_]{0,62}"


class DuckDBConfig(BaseDestinationConfig):
    path: str = Field(min_length=1, description="DuckDB database file (created if missing)")
    table: str = Field("events", pattern=rf"^({_IDENT}\.)?{_IDENT}$", description="[schema.]table")
    create_table: bool = True
    """Create the canonical table if missing (`event_id` primary key, `JSON` columns); when `false` a missing table
    fails the run at start."""
    lock_wait_seconds: float = Field(120, ge=0, le=3600, description="how long a load waits for another "
                                     "process (a concurrent run) to release the database file")

    def destination(self) -> str:
        table = self.table if "." in self.table else f"main.{self.table}"
        return f"duckdb:{os.path.abspath(self.path)}#{table.lower()}"

    def preflight(self) -> list[str]:
        """Start-up checks, before anything is published: the file's folder exists or can be made (the run
        makes it), the database opens (not locked by another process, e.g. a notebook holding it open
        read-write) and, with ``create_table: false``, the table exists. A check makes nothing."""
        import duckdb

        folder = os.path.dirname(os.path.abspath(self.path))
        existing = folder
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
            return [f"path: the folder {folder} cannot be made ({existing} is not a writable folder)"]
        if not os.path.exists(self.path):  # created by the run (never here: a check makes nothing)
            return [] if self.create_table else [f"path: {self.path} does not exist (and create_table is false)"]
        try:
            con = duckdb.connect(self.path)
        except duckdb.Error as exc:
            held = "lock" in str(exc).lower()
            why = "another process holds it open: close it there (a notebook?)" if held else type(exc).__name__
            return [f"path: {self.path} cannot be opened for writing ({why})"]
        try:
            if not self.create_table:
                con.execute(f"SELECT * FROM {quote_ident(self.table)} LIMIT 0")
        except duckdb.Error:
            return [f"table: {self.table} does not exist in {self.path} (and create_table is false)"]
        finally:
            con.close()
        return []


def quote_ident(name: str) -> str:
    """Quote a validated identifier (``[schema.]table``) for DuckDB."""
    parts = name.split(".")
    for part in parts:
        if not re.fullmatch(_IDENT, part):
            raise ValueError(f"invalid identifier {part!r}")
    return ".".join('"' + p + '"' for p in parts)


def create_table_sql(table: str) -> str:
    """DDL for the canonical table (idempotent)."""
    types = {c: "VARCHAR" for c in COLUMNS}
    types.update({c: "TIMESTAMP" for c in TIME_COLUMNS})
    types.update({c: "JSON" for c in JSON_COLUMNS})
    cols = ",\n  ".join(f'"{c}" {types[c]}' + (" NOT NULL PRIMARY KEY" if c == "event_id" else "") for c in COLUMNS)
    schema = ""
    if "." in table:
        schema = f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.split('.')[0])};\n"
    return f"{schema}CREATE TABLE IF NOT EXISTS {quote_ident(table)} (\n  {cols}\n)"


def insert_new_rows_sql(table: str, staged: str) -> str:
    """Insert staged rows whose event_id the table does not hold yet."""
    target = quote_ident(table)
    select = ", ".join(f'CAST(s."{c}" AS JSON)' if c in JSON_COLUMNS else f's."{c}"' for c in COLUMNS)
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    return (f"INSERT INTO {target} ({cols}) SELECT {select} FROM {quote_ident(staged)} AS s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE t.\"event_id\" = s.\"event_id\")")


def _naive_utc(table: pa.Table) -> pa.Table:
    # DuckDB would read tz-aware Arrow timestamps as TIMESTAMPTZ and DATE() them in the session's zone;
    # naive values holding UTC keep day boundaries in UTC whatever the reader's settings.
    for name in TIME_COLUMNS:
        idx = table.schema.get_field_index(name)
        table = table.set_column(idx, name, table[name].cast(pa.timestamp("us")))
    return table


def _connect_waiting(path: str, wait_seconds: float):
    """``duckdb.connect(path)``, waiting (with backoff, up to ``wait_seconds``) while another process holds the
    file: DuckDB allows one writing process, and two runs loading into one file would otherwise fail one."""
    import time

    import duckdb

    deadline, pause = time.monotonic() + wait_seconds, 0.1
    while True:
        try:
            return duckdb.connect(path)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


class _LoadIntoDuckDBFn(beam.DoFn):
    def __init__(self, integration_id: str, config: DuckDBConfig):
        self._iid = integration_id
        self._config = config

    def process(self, encoded_tables):
        c = self._config
        tables = [coders.decode_table(data) for data in encoded_tables]
        staged = _naive_utc(pa.concat_tables(tables)) if tables else None
        os.makedirs(os.path.dirname(os.path.abspath(c.path)), exist_ok=True)
        con = _connect_waiting(c.path, c.lock_wait_seconds)
        try:
            if c.create_table:
                con.execute(create_table_sql(c.table))
            else:
                con.execute(f"SELECT * FROM {quote_ident(c.table)} LIMIT 0")  # fails fast if missing
            if staged is None or staged.num_rows == 0:
                return
            con.execute("BEGIN TRANSACTION")
            con.register("beamhouse_staged", staged)
            inserted = con.execute(insert_new_rows_sql(c.table, "beamhouse_staged")).fetchone()[0]
            con.execute("COMMIT")
        finally:
            con.close()
        ns = deadletter.NAMESPACE
        Metrics.counter(ns, f"{self._iid}.delivered").inc(staged.num_rows)
        Metrics.counter(ns, f"{self._iid}.rows_inserted").inc(inserted)
        Metrics.counter(ns, f"{self._iid}.rows_already_present").inc(staged.num_rows - inserted)
        yield {"table": c.table, "rows": staged.num_rows, "inserted": inserted}


class WriteEventsToDuckDB(beam.PTransform):
    """Prepared event batches -> rows in the DuckDB table, loaded once, idempotently."""

    def __init__(self, integration):
        super().__init__()
        self._integration = integration

    def expand(self, tables):
        integ = self._integration
        loads = (tables
                 | "ToWarehouseRows" >> beam.Map(to_warehouse).with_output_types(pa.Table)
                 # As IPC bytes: the list is a combiner accumulator, which Beam would otherwise pickle.
                 | "Encode" >> beam.Map(coders.encode_table).with_output_types(bytes)
                 # Streaming (a non-default trigger): one load per fired pane.
                 | "CollectBatches" >> beam.combiners.ToList().with_defaults(tables.windowing.is_default())
                 | "LoadIntoDuckDB" >> beam.ParDo(_LoadIntoDuckDBFn(integ.integration_id, integ.config)))
        empty = tables.pipeline | "NoDeadLetters" >> beam.Create([])
        return WriteResult(empty, delivered=loads)


def ddl(c: DuckDBConfig) -> str:
    return f"{create_table_sql(c.table)};"


DESTINATION = Destination(DuckDBConfig, WriteEventsToDuckDB, ddl=ddl)
