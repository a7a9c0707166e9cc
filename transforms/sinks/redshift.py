"""Vendor ``redshift``: batch files staged in S3, loaded with ``COPY ... MANIFEST`` and merged by event id.

Seed 000's body as it is::

    {"host": "my-cluster.abc123.us-east-1.redshift.amazonaws.com", "port": 5439, "database": "analytics",
     "schema": "datafly", "table": "events", "user": "datafly_service", "password": "env:REDSHIFT_PASSWORD",
     "s3_bucket": "my-redshift-staging", "s3_prefix": "datafly/staging/", "s3_region": "us-east-1",
     "iam_role_arn": "arn:aws:iam::123456789012:role/RedshiftS3Access",
     "batch_size": 1000, "batch_interval_seconds": 120}

plus ``create_table`` (the seed's table: ``SUPER`` JSON columns, ``DISTKEY(anonymous_id)``,
``SORTKEY(timestamp)``), ``ssl`` (default true), and for the staging writes ``s3_access_key_id`` /
``s3_secret_access_key`` (else the default AWS chain) and ``s3_endpoint_url``. Redshift reads the
staged files with ``iam_role_arn``; beamhouse never sends AWS keys to Redshift.

Each load (one or more batch files of a day, see ``transforms.sinks.staged``):

1. the files (gzip NDJSON, JSON columns nested so ``JSON 'auto'`` loads them as ``SUPER``) are put in
   ``s3://<s3_bucket>/<s3_prefix><integration>/<day>/`` with create-only ``PutObject``, then a manifest
   listing each of them as ``mandatory`` under ``<s3_prefix>_manifests/<load id>.manifest``;
2. in one transaction: ``COPY`` the manifest into a temporary table; ``LOCK`` the target; if
   ``<schema>._beamhouse_loads`` already records this load id (a retry after a lost acknowledgement),
   roll back and count the rows as already present; else insert the staged rows whose ``event_id`` the
   table does not hold, record the load id, ``COMMIT``;
3. only after the commit are the staged files and the manifest deleted (seed: staging files are deleted
   after loading). A failed COPY or merge rolls everything back and leaves the files for the next run.

A COPY Redshift refuses for the data (``stl_load_errors``) is retried file by file and halved down to
the refused rows, which become ``sink_rejected`` dead letters with Redshift's reason.

Privileges: on the cluster ``INSERT, SELECT`` on the table and ``_beamhouse_loads``, ``TEMP`` on the
database (``CREATE`` on the schema with ``create_table``, or to create ``_beamhouse_loads`` once); the
IAM role needs ``s3:GetObject`` on the staging prefix; beamhouse's own credentials need ``s3:PutObject``
and ``s3:DeleteObject`` there.
"""
from __future__ import annotations

import hashlib
import logging
import re
import typing

import orjson
from pydantic import ConfigDict, Field, field_validator

from transforms import retry, routes
from transforms.integrations import BaseDestinationConfig
from transforms.profiles.warehouse import COLUMNS
from transforms.secrets import SecretField, redact
from transforms.sinks.base import Destination
from transforms.sinks.staged import BatchFile, LoadOutcome, WriteStagedLoads

log = logging.getLogger("beamhouse.sinks.redshift")

_IDENT = r"[A-Za-z_][A-Za-z0-9_$]{0,126}"
LOADS_TABLE = "_beamhouse_loads"
# Seed 000's column types.
TYPES = {"event_id": "VARCHAR(64) NOT NULL", "type": "VARCHAR(20)", "event": "VARCHAR(256)",
         "anonymous_id": "VARCHAR(64)", "user_id": "VARCHAR(256)", "timestamp": "TIMESTAMP",
         "received_at": "TIMESTAMP", "sent_at": "TIMESTAMP", "context": "SUPER", "properties": "SUPER",
         "traits": "SUPER", "source_id": "VARCHAR(64)", "integration_id": "VARCHAR(64)"}


class RedshiftConfig(BaseDestinationConfig):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, populate_by_name=True)

    host: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
    """The cluster; identifiers validated, lower-cased and quoted."""
    port: int = Field(5439, ge=1, le=65535)
    """The cluster; identifiers validated, lower-cased and quoted."""
    database: str = Field(pattern=rf"^{_IDENT}$")
    """The cluster; identifiers validated, lower-cased and quoted."""
    schema_name: str = Field(alias="schema", pattern=rf"^{_IDENT}$")
    """The cluster; identifiers validated, lower-cased and quoted."""
    table: str = Field(pattern=rf"^{_IDENT}$")
    """The cluster; identifiers validated, lower-cased and quoted."""
    user: str = Field(min_length=1, max_length=128)
    """The cluster; identifiers validated, lower-cased and quoted."""
    password: SecretField
    """The cluster; identifiers validated, lower-cased and quoted."""
    s3_bucket: str
    """Where batch files are staged (`<prefix><integration>/<day>/…`, manifests under `<prefix>_manifests/`)"""
    s3_prefix: str = ""
    """Where batch files are staged (`<prefix><integration>/<day>/…`, manifests under `<prefix>_manifests/`)"""
    s3_region: str = Field(pattern=r"^[a-z0-9-]{2,40}$")
    """Where batch files are staged (`<prefix><integration>/<day>/…`, manifests under `<prefix>_manifests/`)"""
    iam_role_arn: str = Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")
    """The role Redshift reads the staged files with (`IAM_ROLE`); AWS keys are never sent to Redshift."""
    create_table: bool = False
    """Create the seed's table (`SUPER` columns, `DISTKEY(anonymous_id)`, `SORTKEY(timestamp)`) when missing."""
    ssl: bool = True
    """Connect with TLS (driver setting of `redshift_connector`, AWS's driver)."""
    s3_endpoint_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    """The staging bucket's endpoint (S3-compatible stores); default: AWS's."""
    s3_access_key_id: SecretField | None = None
    """Beamhouse's own credentials for staging."""
    s3_secret_access_key: SecretField | None = None
    """Beamhouse's own credentials for staging."""
    max_attempts: int = Field(5, ge=1, le=20)
    """Attempts when the connection drops; transient errors are retried with backoff."""
    connect_timeout_seconds: int = Field(60, ge=1, le=600)
    """How long connecting may take."""

    def destination(self) -> str:
        return f"redshift:{self.host}:{self.port}/{self.database}.{self.schema_name}.{self.table}".lower()

    def integration_problems(self, integration) -> list[tuple[str, str]]:
        # Every row carries these two: one too wide for the seed's VARCHAR(64) would refuse every row.
        return [(field, f"at most {width} bytes in Redshift's {TYPES[field].split()[0]} column")
                for field in ("source_id", "integration_id")
                if len(getattr(integration, field).encode()) > (width := varchar_width(TYPES[field]))]

    @field_validator("s3_bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return routes.check_bucket(value)

    @field_validator("s3_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return routes.normalise_prefix(value)

    def preflight(self) -> list[str]:
        """Secrets resolve; the table exists (or is created) with the seed's columns; the staging
        bucket exists; the load-record table exists."""
        problems = [f"{n}: {p}" for n in ("password", "s3_access_key_id", "s3_secret_access_key")
                    if getattr(self, n) is not None and (p := getattr(self, n).check())]
        if problems:
            return problems
        problem = self.storage().bucket_problem(self.s3_region)
        if problem:
            return [f"s3_bucket: {problem}"]
        try:
            with RedshiftLoader("preflight", self) as loader:
                return loader.check_target()
        except Exception as exc:  # noqa: BLE001 - one clear line, never the password
            return [redact(f"{self.schema_name}.{self.table}: {type(exc).__name__}: {error_message(exc)}")]

    def storage(self):
        from transforms.storage.s3 import S3Storage

        return S3Storage(self.s3_bucket, self.s3_prefix, region=self.s3_region, endpoint_url=self.s3_endpoint_url,
                         access_key_id=self.s3_access_key_id, secret_access_key=self.s3_secret_access_key,
                         max_attempts=self.max_attempts)


def varchar_width(sql_type: str) -> int:
    """``VARCHAR(64) NOT NULL`` -> 64 (Redshift counts bytes)."""
    return int(re.match(r"VARCHAR\((\d+)\)", sql_type).group(1))


# -- pure SQL --------------------------------------------------------------------------------------
def quote_ident(name: str) -> str:
    """A config identifier, validated, lower-cased (as Redshift folds it) and quoted."""
    if not re.fullmatch(_IDENT, name):
        raise ValueError(f"invalid Redshift identifier {name!r}")
    return '"' + name.lower() + '"'


def qualified(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _columns() -> str:
    return ", ".join(quote_ident(c) for c in COLUMNS)


def create_table_sql(schema: str, table: str) -> str:
    """Seed 000's table."""
    cols = ",\n".join(f"  {quote_ident(c)} {TYPES[c]}" for c in COLUMNS)
    return (f"CREATE TABLE IF NOT EXISTS {qualified(schema, table)} (\n{cols}\n)\n"
            f"DISTKEY(anonymous_id)\nSORTKEY(timestamp)")


def create_loads_table_sql(schema: str) -> str:
    """The record of committed loads: a retried load finds its id here and loads nothing."""
    return (f"CREATE TABLE IF NOT EXISTS {qualified(schema, LOADS_TABLE)} (\n"
            f"  load_id VARCHAR(64) NOT NULL,\n  target_table VARCHAR(256) NOT NULL,\n"
            f"  manifest VARCHAR(1024) NOT NULL,\n  rows_staged BIGINT NOT NULL,\n"
            f"  rows_inserted BIGINT NOT NULL,\n  loaded_at TIMESTAMP NOT NULL\n)")


def create_stage_sql(stage: str, schema: str, table: str) -> str:
    return f"CREATE TEMP TABLE {quote_ident(stage)} (LIKE {qualified(schema, table)})"


def copy_sql(stage: str, manifest_url: str, iam_role_arn: str, region: str) -> str:
    """COPY the files a manifest lists (all mandatory) into the staging table. Pure."""
    if not manifest_url.startswith("s3://"):
        raise ValueError("manifest_url must be an s3:// URL")
    return (f"COPY {quote_ident(stage)} ({_columns()})\n"
            f"FROM {quote_string(manifest_url)}\n"
            f"IAM_ROLE {quote_string(iam_role_arn)}\n"
            f"FORMAT AS JSON 'auto'\nGZIP\nMANIFEST\nTIMEFORMAT 'auto'\n"
            f"REGION {quote_string(region)}\nCOMPUPDATE OFF\nSTATUPDATE OFF")


def lock_sql(schema: str, table: str) -> str:
    return f"LOCK {qualified(schema, table)}"


def load_recorded_sql(schema: str) -> str:
    return f"SELECT rows_staged FROM {qualified(schema, LOADS_TABLE)} WHERE load_id = %s"


def merge_sql(schema: str, table: str, stage: str) -> str:
    """Insert the staged rows whose event_id the table does not hold; the time bounds (%s, %s) let
    Redshift skip blocks by the sort key. Pure."""
    target = qualified(schema, table)
    cols = ", ".join(f"s.{quote_ident(c)}" for c in COLUMNS)
    return (f"INSERT INTO {target} ({_columns()})\n"
            f"SELECT {cols} FROM {quote_ident(stage)} AS s\n"
            f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE t.\"event_id\" = s.\"event_id\" "
            f"AND t.\"timestamp\" BETWEEN %s AND %s)")


def record_load_sql(schema: str) -> str:
    return (f"INSERT INTO {qualified(schema, LOADS_TABLE)} "
            f"(load_id, target_table, manifest, rows_staged, rows_inserted, loaded_at) "
            f"VALUES (%s, %s, %s, %s, %s, GETDATE())")


def drop_stage_sql(stage: str) -> str:
    return f"DROP TABLE IF EXISTS {quote_ident(stage)}"


def load_errors_sql() -> str:
    return ("SELECT TRIM(colname), line_number, TRIM(err_reason) FROM stl_load_errors "
            "WHERE query = pg_last_copy_id() ORDER BY starttime DESC LIMIT 1")


def revenue_by_day_sql(schema: str, table: str, days: int = 30) -> str:
    """Seed 000's revenue-by-day query for the configured table (SUPER navigation)."""
    return (f"SELECT DATE(timestamp) AS day, SUM(properties.total::FLOAT) AS revenue\n"
            f"FROM {qualified(schema, table)}\n"
            f"WHERE event = 'Order Completed' AND timestamp >= GETDATE() - INTERVAL '{int(days)} days'\n"
            f"GROUP BY day ORDER BY day DESC")


def manifest(entries: typing.Sequence[tuple[str, int]]) -> bytes:
    """A COPY manifest: every file ``mandatory`` (a missing file fails the COPY instead of loading less)."""
    return orjson.dumps({"entries": [{"url": url, "mandatory": True, "meta": {"content_length": size}}
                                     for url, size in entries]}, option=orjson.OPT_INDENT_2)


def load_id(target: str, names: typing.Sequence[str]) -> str:
    return hashlib.sha256("\x00".join([target, *sorted(names)]).encode()).hexdigest()[:32]


def error_message(exc) -> str:
    """redshift_connector puts the server's fields in a dict (``M`` message, ``C`` SQL state)."""
    arg = exc.args[0] if getattr(exc, "args", None) else exc
    if isinstance(arg, dict):
        return str(arg.get("M", arg))
    return str(arg)


def sqlstate(exc) -> str:
    arg = exc.args[0] if getattr(exc, "args", None) else None
    return str(arg.get("C", "")) if isinstance(arg, dict) else ""


def is_data_error(exc) -> bool:
    """Refused for the data: a COPY load error (``stl_load_errors``) or SQL states 22xxx/23xxx."""
    return sqlstate(exc)[:2] in ("22", "23") or "stl_load_errors" in error_message(exc)


def is_connection_error(exc) -> bool:
    import redshift_connector

    return isinstance(exc, (redshift_connector.InterfaceError, redshift_connector.OperationalError,
                            ConnectionError, OSError))


# -- loading ---------------------------------------------------------------------------------------
class RedshiftLoader:
    """Stages and loads batch files for one integration (see ``transforms.sinks.staged``)."""

    def __init__(self, integration_id: str, config: RedshiftConfig):
        self._iid = integration_id
        self._c = config
        self._storage = config.storage()
        self._con = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._con is not None:
            try:
                self._con.close()
            except Exception:  # noqa: BLE001 - the connection may already be gone
                pass
            self._con = None

    def _connection(self):
        if self._con is None:
            import redshift_connector

            c = self._c
            self._con = redshift_connector.connect(
                host=c.host, port=c.port, database=c.database, user=c.user, password=c.password.get(),
                ssl=c.ssl, timeout=c.connect_timeout_seconds, application_name="beamhouse")
            self._con.autocommit = False
        return self._con

    def _run(self, sql: str, params=None):
        cur = self._connection().cursor()
        cur.execute(sql, params)
        return cur

    def check_target(self) -> list[str]:
        c = self._c
        con = self._connection()
        try:
            if c.create_table:
                self._run(create_table_sql(c.schema_name, c.table))
            self._run(create_loads_table_sql(c.schema_name))
            cur = self._run("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                            "AND table_name = %s", (c.schema_name.lower(), c.table.lower()))
            found = {row[0].lower() for row in cur.fetchall()}
            con.commit()
        except Exception:
            con.rollback()
            raise
        if not found:
            return [f"table {c.schema_name}.{c.table} does not exist: set create_table, or create it with the "
                    f"DDL from python -m pipelines.ddl --integrations FILE"]
        return [f"table {c.schema_name}.{c.table} has no column {col}" for col in COLUMNS if col not in found]

    def prepare(self, rows):
        return rows, 0  # the merge skips rows the table holds

    def _key(self, f: BatchFile) -> str:
        return f"{self._iid}/{f.name}"

    def stage(self, files: list[BatchFile]) -> None:
        from transforms import commit

        for f in files:
            commit.publish_bytes(self._storage, self._key(f), f.data, records=f.rows.num_rows)

    def load(self, files: list[BatchFile]) -> dict[str, LoadOutcome]:
        try:
            return self._load_unit(files)
        except _DataError as exc:
            if len(files) > 1:  # find the refused file(s): each file is then a load of its own
                out = {}
                for f in files:
                    out.update(self.load([f]))
                return out
            return {files[0].name: LoadOutcome(error=f"Redshift refused the row: {exc}")}

    def _load_unit(self, files: list[BatchFile]) -> dict[str, LoadOutcome]:
        c = self._c
        target = f"{c.schema_name}.{c.table}".lower()
        lid = load_id(target, [f.name for f in files])
        manifest_key = f"_manifests/{lid}.manifest"
        urls = [(f"s3://{c.s3_bucket}/{self._storage.key(self._key(f))}", f.size) for f in files]
        # Create-only is enough: the manifest's name and content both follow from the file names and sizes.
        self._storage.put_if_absent(manifest_key, manifest(urls), {})
        manifest_url = f"s3://{c.s3_bucket}/{self._storage.key(manifest_key)}"
        rows = sum(f.rows.num_rows for f in files)
        lo = min(_min_time(f) for f in files)
        hi = max(_max_time(f) for f in files)
        try:  # retried only when the connection broke, on a new connection
            for attempt in retry.attempts(c.max_attempts, lambda e: not isinstance(e, _DataError) and
                                          is_connection_error(e), first_wait=2, max_wait=30, between=self.close,
                                          what=f"redshift {target} load {lid}", logger=log):
                with attempt:
                    inserted, present = self._transaction(lid, target, manifest_url, rows, lo, hi)
        except _DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - one clear error, without credentials
            self.close()
            raise RuntimeError(redact(f"{target}: load {lid} failed: {error_message(exc)}")) from None
        # Committed (now or by an earlier attempt): the staged files are no longer needed.
        self._storage.delete([self._key(f) for f in files] + [manifest_key])
        out = {f.name: LoadOutcome() for f in files}
        # The merge counts a whole load; the per-file split only feeds totals, so the first file carries it.
        out[files[0].name] = LoadOutcome(loaded=inserted, present=present)
        return out

    def _transaction(self, lid, target, manifest_url, rows, lo, hi) -> tuple[int, int]:
        c = self._c
        con = self._connection()
        stage = f"beamhouse_stage_{lid[:16]}"
        try:
            self._run(create_stage_sql(stage, c.schema_name, c.table))
            self._run(copy_sql(stage, manifest_url, c.iam_role_arn, c.s3_region))
            # Serialise loaders on this table only for the check and the merge (not the COPY).
            self._run(lock_sql(c.schema_name, c.table))
            recorded = self._run(load_recorded_sql(c.schema_name), (lid,)).fetchall()
            if recorded:
                con.rollback()
                return 0, rows
            inserted = self._run(merge_sql(c.schema_name, c.table, stage), (lo, hi)).rowcount
            self._run(record_load_sql(c.schema_name), (lid, target, manifest_url, rows, inserted))
            self._run(drop_stage_sql(stage))
            con.commit()
        except Exception as exc:
            try:
                con.rollback()
            except Exception:  # noqa: BLE001 - the connection may be gone; the server rolls back
                self.close()
                raise exc from None
            if is_data_error(exc):
                raise _DataError(self._load_error(exc)) from None
            raise
        return inserted, rows - inserted

    def _load_error(self, exc) -> str:
        """Redshift's reason from ``stl_load_errors`` when readable, else the COPY's own message."""
        try:
            row = self._run(load_errors_sql()).fetchone() if "stl_load_errors" in error_message(exc) else None
            self._connection().rollback()
            if row:
                return redact(f"column {row[0]}, line {row[1]}: {row[2]}")
        except Exception:  # noqa: BLE001 - not readable here (permissions, or not Redshift)
            try:
                self._connection().rollback()
            except Exception:  # noqa: BLE001
                self.close()
        return redact(error_message(exc))


class _DataError(Exception):
    """The COPY was refused for the data; the message is Redshift's reason."""


def _min_time(f: BatchFile):
    import pyarrow.compute as pc

    return pc.min(f.rows["timestamp"]).as_py().replace(tzinfo=None)


def _max_time(f: BatchFile):
    import pyarrow.compute as pc

    return pc.max(f.rows["timestamp"]).as_py().replace(tzinfo=None)


def open_loader(integration_id: str, config: RedshiftConfig) -> RedshiftLoader:
    return RedshiftLoader(integration_id, config)


class WriteEventsToRedshift(WriteStagedLoads):
    """Prepared event batches -> files staged in S3, COPY'd and merged by event_id."""

    def __init__(self, integration):
        super().__init__(integration, open_loader, "json")


def ddl(c: RedshiftConfig) -> str:
    """The table and the load-record table."""
    return f"{create_table_sql(c.schema_name, c.table)};\n\n{create_loads_table_sql(c.schema_name)};"


DESTINATION = Destination(RedshiftConfig, WriteEventsToRedshift, ddl=ddl)
