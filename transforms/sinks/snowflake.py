"""Vendor ``snowflake``: batch files on a stage, loaded by ``COPY INTO`` or by Snowpipe.

Seed 000's body as it is::

    {"account": "abc12345.us-east-1", "warehouse": "DATAFLY_WH", "database": "ANALYTICS",
     "schema": "DATAFLY", "table": "EVENTS", "stage": "DATAFLY_STAGE", "pipe": "DATAFLY_PIPE",
     "user": "DATAFLY_SERVICE", "private_key": "file:/secrets/snowflake_rsa_key.p8",
     "batch_size": 1000, "batch_interval_seconds": 60}

plus ``private_key_passphrase``, ``role``, ``file_format`` (``json``: gzip NDJSON, the default, as in the
seed; or ``parquet``), ``stage_prefix`` (default ``beamhouse/``), ``create_table`` (create the seed's
table, and the internal stage, if missing), ``skip_loaded_events`` (default true), ``endpoint_url`` and
``snowpipe_endpoint_url`` (private link, emulators), ``snowpipe_wait_seconds``, and for an external stage
``stage_url`` (the stage's ``s3://bucket/prefix/`` with ``stage_region`` and optional keys, or
``gs://bucket/prefix/`` with an optional ``stage_service_account_json``).
Authentication is key-pair only (``SNOWFLAKE_JWT``); the key may be given inline or by reference.

How a day of events is delivered (see ``transforms.sinks.staged``):

1. unless ``skip_loaded_events`` is off, the ``event_id``s the table already holds for that day are
   looked up and those rows left out, so a re-run with different batching never doubles a row;
2. each batch becomes a file with a deterministic name, uploaded to the stage: an internal stage by
   ``PUT ... OVERWRITE=FALSE``, an external S3 or GCS stage with a create-only upload;
3. with ``pipe``: Snowpipe's REST ``insertFiles`` (the official ``snowflake-ingest`` client, key-pair JWT),
   then ``insertReport`` is polled until every file is reported; without: ``COPY INTO`` naming the
   files (``FILES = (...)``, ``ON_ERROR = ABORT_STATEMENT``), its per-file result checked;
4. a file Snowflake reports as loaded before (load metadata, 64 days for COPY, 14 for Snowpipe) is
   not loaded again and its rows count as already present. A refused file is split until the refused
   rows are alone; each becomes a ``sink_rejected`` dead letter with Snowflake's message.

Privileges: ``USAGE`` on the warehouse, database and schema; ``READ, WRITE`` on an internal stage;
``INSERT, SELECT`` on the table; with ``pipe``, ``OPERATE`` on the pipe (``CREATE TABLE``/``CREATE
STAGE`` on the schema only with ``create_table``).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import typing

import pyarrow as pa
from pydantic import ConfigDict, Field, model_validator

from transforms.integrations import BaseDestinationConfig
from transforms.profiles.warehouse import COLUMNS, JSON_COLUMNS, TIME_COLUMNS
from transforms.secrets import SecretField, redact
from transforms.sinks.base import Destination
from transforms.sinks.staged import BatchFile, LoadOutcome, WriteStagedLoads

_IDENT = r"[A-Za-z_][A-Za-z0-9_$]{0,254}"
MAX_FILES_PER_COPY = 1000      # Snowflake's limit on FILES = (...)
MAX_FILES_PER_INSERT = 5000    # Snowpipe insertFiles limit per request
PRESENT_QUERY_CHUNK = 5000     # event ids per lookup query


class SnowflakeConfig(BaseDestinationConfig):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, populate_by_name=True)

    account: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
    """Identifiers are validated (letters, digits, `_`, `$`) and used as Snowflake resolves them unquoted (upper
    case)"""
    warehouse: str = Field(pattern=rf"^{_IDENT}$")
    """Identifiers are validated (letters, digits, `_`, `$`) and used as Snowflake resolves them unquoted (upper
    case)"""
    database: str = Field(pattern=rf"^{_IDENT}$")
    """Identifiers are validated (letters, digits, `_`, `$`) and used as Snowflake resolves them unquoted (upper
    case)"""
    schema_name: str = Field(alias="schema", pattern=rf"^{_IDENT}$")
    """Identifiers are validated (letters, digits, `_`, `$`) and used as Snowflake resolves them unquoted (upper
    case)"""
    table: str = Field(pattern=rf"^{_IDENT}$")
    """Identifiers are validated (letters, digits, `_`, `$`) and used as Snowflake resolves them unquoted (upper
    case)"""
    stage: str = Field(pattern=rf"^{_IDENT}$")
    """Identifiers are validated (letters, digits, `_`, `$`) and used as Snowflake resolves them unquoted (upper
    case)"""
    pipe: str | None = Field(None, pattern=rf"^{_IDENT}$")
    """Load by Snowpipe (`insertFiles`) instead of `COPY INTO`."""
    user: str = Field(min_length=1, max_length=255)
    """Identifiers are validated (letters, digits, `_`, `$`) and used as Snowflake resolves them unquoted (upper
    case)"""
    private_key: SecretField
    """Key-pair authentication (`SNOWFLAKE_JWT`), PKCS#8 PEM; the only login method."""
    private_key_passphrase: SecretField | None = None
    """Key-pair authentication (`SNOWFLAKE_JWT`), PKCS#8 PEM; the only login method."""
    role: str | None = Field(None, pattern=rf"^{_IDENT}$")
    """Role; other endpoints (private link, emulators)"""
    file_format: typing.Literal["json", "parquet"] = "json"
    """`json` (gzip NDJSON, as in the seed) or `parquet`."""
    stage_prefix: str = Field("beamhouse/", pattern=r"^([A-Za-z0-9_-]+/)*$")
    """Folder on the stage for the batch files."""
    create_table: bool = False
    """Create the seed's table (VARIANT columns) and the internal stage when missing."""
    skip_loaded_events: bool = True
    """Before staging a day, look up which of its `event_id`s the table holds and leave those rows out."""
    endpoint_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(:\d+)?/?$")
    """Role; other endpoints (private link, emulators)"""
    snowpipe_endpoint_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(:\d+)?/?$")
    """Role; other endpoints (private link, emulators)"""
    snowpipe_wait_seconds: float = Field(600, gt=0, le=3600)
    """How long to wait for Snowpipe's load reports of a run's files."""
    stage_url: str | None = Field(None, pattern=r"^(s3|gs)://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^\s]*)?$")
    """An external stage: the files are written to its `s3://bucket/prefix/` (create-only `PutObject`;
    `stage_region` required) or `gs://bucket/prefix/` (create-only upload)"""
    stage_region: str | None = Field(None, pattern=r"^[a-z0-9-]{2,40}$")
    """An external stage: the files are written to its `s3://bucket/prefix/` (create-only `PutObject`;
    `stage_region` required) or `gs://bucket/prefix/` (create-only upload)"""
    stage_endpoint_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    """An external stage: the files are written to its `s3://bucket/prefix/` (create-only `PutObject`;
    `stage_region` required) or `gs://bucket/prefix/` (create-only upload)"""
    stage_access_key_id: SecretField | None = None
    """An external stage: the files are written to its `s3://bucket/prefix/` (create-only `PutObject`;
    `stage_region` required) or `gs://bucket/prefix/` (create-only upload)"""
    stage_secret_access_key: SecretField | None = None
    """An external stage: the files are written to its `s3://bucket/prefix/` (create-only `PutObject`;
    `stage_region` required) or `gs://bucket/prefix/` (create-only upload)"""
    stage_service_account_json: SecretField | None = None
    """An external stage: the files are written to its `s3://bucket/prefix/` (create-only `PutObject`;
    `stage_region` required) or `gs://bucket/prefix/` (create-only upload)"""
    max_attempts: int = Field(5, ge=1, le=20)
    """Attempts per staging request; transient errors are retried with backoff."""

    def destination(self) -> str:
        return f"snowflake:{self.account}/{self.database}.{self.schema_name}.{self.table}".lower()

    @model_validator(mode="after")
    def _consistent(self):
        if self.stage_url is not None and self.stage_url.startswith("s3://") and self.stage_region is None:
            raise ValueError("stage_url (an external S3 stage) needs stage_region")
        if (self.stage_access_key_id is None) != (self.stage_secret_access_key is None):
            raise ValueError("give both stage_access_key_id and stage_secret_access_key, or neither")
        return self

    def preflight(self) -> list[str]:
        """Secrets resolve and the key parses; the table (and stage) exist or are created."""
        for name in ("private_key", "private_key_passphrase", "stage_access_key_id", "stage_secret_access_key",
                     "stage_service_account_json"):
            secret = getattr(self, name)
            if secret is not None and (problem := secret.check()):
                return [f"{name}: {problem}"]
        try:
            load_private_key(self)
            with SnowflakeLoader("preflight", self) as loader:
                return loader.check_target()
        except Exception as exc:  # noqa: BLE001 - one clear line, never a key
            return [redact(f"{self.qualified_table}: {type(exc).__name__}: {getattr(exc, 'msg', None) or exc}")]

    @property
    def qualified_table(self) -> str:
        return qualified(self.database, self.schema_name, self.table)


# -- pure SQL --------------------------------------------------------------------------------------
def quote_ident(name: str) -> str:
    """A config identifier, validated and quoted as Snowflake resolves it unquoted (upper case)."""
    if not re.fullmatch(_IDENT, name):
        raise ValueError(f"invalid Snowflake identifier {name!r}")
    return '"' + name.upper() + '"'


def qualified(*parts: str) -> str:
    return ".".join(quote_ident(p) for p in parts)


def stage_ref(database: str, schema: str, stage: str, path: str = "") -> str:
    """``@DB.SCHEMA.STAGE/path``: validated identifiers unquoted (a stage reference is not a quoted
    identifier context in PUT), upper-cased as Snowflake resolves them; the path is checked too."""
    for part in (database, schema, stage):
        if not re.fullmatch(_IDENT, part):
            raise ValueError(f"invalid Snowflake identifier {part!r}")
    path = path.strip("/")
    if path and not re.fullmatch(r"[A-Za-z0-9_.=/-]+", path):
        raise ValueError(f"invalid stage path {path!r}")
    return f"@{database.upper()}.{schema.upper()}.{stage.upper()}" + (f"/{path}" if path else "")


def quote_string(value: str) -> str:
    """A single-quoted Snowflake string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def create_table_sql(database: str, schema: str, table: str) -> str:
    """The seed's table (``VARIANT`` JSON columns, ``TIMESTAMP_NTZ`` holding UTC)."""
    types = {c: "STRING" for c in COLUMNS}
    types.update({c: "TIMESTAMP_NTZ" for c in TIME_COLUMNS})
    types.update({c: "VARIANT" for c in JSON_COLUMNS})
    cols = ",\n".join(f"  {c} {types[c]}{' NOT NULL' if c == 'event_id' else ''}" for c in COLUMNS)
    return f"CREATE TABLE IF NOT EXISTS {qualified(database, schema, table)} (\n{cols}\n)"


def create_stage_sql(database: str, schema: str, stage: str) -> str:
    return f"CREATE STAGE IF NOT EXISTS {qualified(database, schema, stage)}"


def _select_list(file_format: str) -> str:
    # JSON: each line is one VARIANT ($1); nested objects load as VARIANT objects. Parquet: JSON columns
    # are strings holding JSON, so they are parsed into VARIANT.
    items = []
    for c in COLUMNS:
        item = f"$1:{c}"
        if file_format == "parquet" and c in JSON_COLUMNS:
            item = f"PARSE_JSON({item})"
        items.append(item)
    return ", ".join(items)


def file_format_clause(file_format: str) -> str:
    return "TYPE = JSON COMPRESSION = GZIP" if file_format == "json" else "TYPE = PARQUET"


def copy_into_sql(database: str, schema: str, table: str, stage: str, path: str, files: typing.Sequence[str],
                  file_format: str) -> str:
    """``COPY INTO`` the table from the named files under ``@stage/path``, aborting on any error. Pure."""
    if not files or len(files) > MAX_FILES_PER_COPY:
        raise ValueError(f"COPY names 1 to {MAX_FILES_PER_COPY} files")
    location = stage_ref(database, schema, stage, path)
    names = ", ".join(quote_string(f) for f in files)
    return (f"COPY INTO {qualified(database, schema, table)} ({', '.join(COLUMNS)})\n"
            f"FROM (SELECT {_select_list(file_format)} FROM {location})\n"
            f"FILES = ({names})\n"
            f"FILE_FORMAT = ({file_format_clause(file_format)})\n"
            f"ON_ERROR = ABORT_STATEMENT")


def create_pipe_sql(database: str, schema: str, pipe: str, table: str, stage: str, file_format: str) -> str:
    """A pipe that loads files named by ``insertFiles`` from the stage's root (paths are relative to it)."""
    return (f"CREATE PIPE IF NOT EXISTS {qualified(database, schema, pipe)} AS\n"
            f"COPY INTO {qualified(database, schema, table)} ({', '.join(COLUMNS)})\n"
            f"FROM (SELECT {_select_list(file_format)} FROM {stage_ref(database, schema, stage)})\n"
            f"FILE_FORMAT = ({file_format_clause(file_format)})")


def put_sql(local_dir: str, database: str, schema: str, stage: str, path: str) -> str:
    """Upload every file of ``local_dir`` to ``@stage/path/``; never replaces an existing file. Pure."""
    target = stage_ref(database, schema, stage, path) + "/"
    source = "file://" + local_dir.rstrip("/") + "/*"
    return (f"PUT {quote_string(source)} {target} "
            f"AUTO_COMPRESS = FALSE OVERWRITE = FALSE PARALLEL = 4")


def present_ids_sql(database: str, schema: str, table: str, count: int) -> str:
    """Which of ``count`` bound event ids the table holds within a time range (bounds first). Pure."""
    marks = ", ".join(["%s"] * count)
    return (f"SELECT event_id FROM {qualified(database, schema, table)} "
            f"WHERE timestamp BETWEEN %s AND %s AND event_id IN ({marks})")


def revenue_by_day_sql(database: str, schema: str, table: str, days: int = 30) -> str:
    """Seed 000's revenue-by-day query for the configured table."""
    return (f"SELECT DATE(timestamp) AS day, SUM(properties:total::FLOAT) AS revenue\n"
            f"FROM {qualified(database, schema, table)}\n"
            f"WHERE event = 'Order Completed' AND timestamp >= DATEADD(day, -{int(days)}, CURRENT_TIMESTAMP())\n"
            f"GROUP BY day ORDER BY day DESC")


def is_data_error(exc) -> bool:
    """A COPY refused because of the data (conversion, NULL in a NOT NULL column, parse errors: Snowflake
    errors 100000-100999, SQL states 22xxx/23xxx), as opposed to connection, permission or object errors."""
    errno = getattr(exc, "errno", None) or 0
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return 100000 <= int(errno) < 101000 or sqlstate[:2] in ("22", "23")


# -- connections -----------------------------------------------------------------------------------
def split_endpoint(url: str) -> tuple[str, str, int]:
    """``http://127.0.0.1:8080`` -> ``("http", "127.0.0.1", 8080)``; the port defaults by scheme. Pure."""
    scheme, _, hostport = url.rstrip("/").partition("://")
    host, _, port = hostport.partition(":")
    return scheme, host, int(port or (443 if scheme == "https" else 80))


def load_private_key(config: SnowflakeConfig):
    """The RSA key object from PEM text (PKCS#8, encrypted with ``private_key_passphrase`` or not)."""
    from cryptography.hazmat.primitives import serialization

    pem = config.private_key.get().replace("\\n", "\n").encode()
    passphrase = config.private_key_passphrase.get().encode() if config.private_key_passphrase else None
    try:
        return serialization.load_pem_private_key(pem, password=passphrase)
    except Exception as exc:  # noqa: BLE001 - never echo the key
        raise ValueError(f"private_key is not a usable PEM private key ({type(exc).__name__})") from None


def connect(config: SnowflakeConfig):
    """A Snowflake connection with key-pair authentication, in the configured warehouse/database/schema."""
    import snowflake.connector

    kwargs = dict(account=config.account, user=config.user, authenticator="SNOWFLAKE_JWT",
                  private_key=load_private_key(config), warehouse=config.warehouse, database=config.database,
                  schema=config.schema_name, role=config.role, application="beamhouse",
                  session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
                  login_timeout=60, network_timeout=300)
    if config.endpoint_url:
        scheme, host, port = split_endpoint(config.endpoint_url)
        kwargs.update(protocol=scheme, host=host, port=port)
    return snowflake.connector.connect(**{k: v for k, v in kwargs.items() if v is not None})


class SnowflakeLoader:
    """Stages and loads batch files for one integration (see ``transforms.sinks.staged``)."""

    def __init__(self, integration_id: str, config: SnowflakeConfig):
        self._iid = integration_id
        self._c = config
        self._con = connect(config)
        self._ingest = None
        self._report_mark = None
        self._tmp = tempfile.mkdtemp(prefix="beamhouse-snowflake-")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        shutil.rmtree(self._tmp, ignore_errors=True)
        if self._con is not None:
            self._con.close()
            self._con = None

    def _execute(self, sql: str, params=None):
        return self._con.cursor().execute(sql, params)

    # -- start-up ----------------------------------------------------------------------------------
    def check_target(self) -> list[str]:
        c = self._c

        def columns() -> set[str]:
            cur = self._execute("SELECT column_name FROM information_schema.columns "
                                "WHERE table_schema = %s AND table_name = %s",
                                (c.schema_name.upper(), c.table.upper()))
            return {row[0].lower() for row in cur.fetchall()}

        found = columns()
        if c.create_table:
            # Only when missing: an existing table needs no CREATE privilege, and keeps its load metadata.
            if not found:
                self._execute(create_table_sql(c.database, c.schema_name, c.table))
                found = columns()
            if c.stage_url is None:
                self._execute(create_stage_sql(c.database, c.schema_name, c.stage))
        if not found:
            return [f"table {c.qualified_table} does not exist: set create_table, or create it with the DDL from "
                    f"python -m pipelines.ddl --integrations FILE"]
        missing = [col for col in COLUMNS if col not in found]
        return [f"table {c.qualified_table} has no column {col}" for col in missing]

    # -- the loader protocol -----------------------------------------------------------------------
    def _present_ids(self, rows: pa.Table) -> set[str]:
        """The event ids of ``rows`` the table already holds (looked up within their time range)."""
        import pyarrow.compute as pc

        c = self._c
        ts = rows["timestamp"]
        lo = pc.min(ts).as_py().replace(tzinfo=None)
        hi = pc.max(ts).as_py().replace(tzinfo=None)
        ids = rows["event_id"].to_pylist()
        present: set[str] = set()
        for start in range(0, len(ids), PRESENT_QUERY_CHUNK):
            chunk = ids[start:start + PRESENT_QUERY_CHUNK]
            cur = self._execute(present_ids_sql(c.database, c.schema_name, c.table, len(chunk)), (lo, hi, *chunk))
            present.update(row[0] for row in cur.fetchall())
        return present

    def prepare(self, rows: pa.Table) -> tuple[pa.Table, int]:
        """Leave out rows whose event_id the table already holds (same day, looked up by id)."""
        import pyarrow.compute as pc

        if not self._c.skip_loaded_events or rows.num_rows == 0:
            return rows, 0
        present = self._present_ids(rows)
        if not present:
            return rows, 0
        keep = pc.invert(pc.is_in(rows["event_id"], value_set=pa.array(sorted(present), pa.string())))
        kept = rows.filter(keep)
        return kept, rows.num_rows - kept.num_rows

    def stage(self, files: list[BatchFile]) -> None:
        if self._c.stage_url is not None:
            return self._stage_external(files)
        by_dir: dict[str, list[BatchFile]] = {}
        for f in files:
            by_dir.setdefault(f.name.rsplit("/", 1)[0], []).append(f)
        for directory, group in by_dir.items():
            local = tempfile.mkdtemp(dir=self._tmp)
            for f in group:
                with open(os.path.join(local, f.name.rsplit("/", 1)[1]), "wb") as fh:
                    fh.write(f.data)
            try:
                cur = self._execute(put_sql(local, self._c.database, self._c.schema_name, self._c.stage,
                                            self._c.stage_prefix + directory))
                statuses = {row[0]: row[6] for row in cur.fetchall()}
            finally:
                shutil.rmtree(local, ignore_errors=True)
            failed = {name: status for name, status in statuses.items() if status not in ("UPLOADED", "SKIPPED")}
            if failed:
                raise RuntimeError(f"PUT to stage {self._c.stage} failed: {failed}")

    def _stage_external(self, files: list[BatchFile]) -> None:
        from transforms import commit

        c = self._c
        scheme, _, rest = c.stage_url.partition("://")
        bucket, _, prefix = rest.partition("/")
        if scheme == "s3":
            from transforms.storage.s3 import S3Storage

            storage = S3Storage(bucket, prefix, region=c.stage_region, endpoint_url=c.stage_endpoint_url,
                                access_key_id=c.stage_access_key_id, secret_access_key=c.stage_secret_access_key,
                                max_attempts=c.max_attempts)
        else:
            from transforms.storage.gcs import GCSStorage

            storage = GCSStorage(bucket, prefix, endpoint_url=c.stage_endpoint_url,
                                 service_account_json=c.stage_service_account_json, max_attempts=c.max_attempts)
        for f in files:
            # Create-only: an existing object of that name holds the same batch (content-derived name).
            commit.publish_bytes(storage, c.stage_prefix + f.name, f.data, records=f.rows.num_rows)

    def load(self, files: list[BatchFile]) -> dict[str, LoadOutcome]:
        if self._c.pipe:
            return self._load_snowpipe(files)
        outcomes: dict[str, LoadOutcome] = {}
        by_dir: dict[str, list[BatchFile]] = {}
        for f in files:
            by_dir.setdefault(f.name.rsplit("/", 1)[0], []).append(f)
        for directory, group in by_dir.items():
            for start in range(0, len(group), MAX_FILES_PER_COPY):
                outcomes.update(self._copy(directory, group[start:start + MAX_FILES_PER_COPY]))
        return outcomes

    def _copy(self, directory: str, files: list[BatchFile]) -> dict[str, LoadOutcome]:
        c = self._c
        names = [f.name.rsplit("/", 1)[1] for f in files]
        sql = copy_into_sql(c.database, c.schema_name, c.table, c.stage, c.stage_prefix + directory, names,
                            c.file_format)
        try:
            cur = self._execute(sql)
        except Exception as exc:  # noqa: BLE001 - classified below
            if not is_data_error(exc):
                raise RuntimeError(redact(f"{c.qualified_table}: COPY failed: {getattr(exc, 'msg', exc)}")) from None
            if len(files) == 1:
                return {files[0].name: LoadOutcome(error=f"Snowflake refused the row: {getattr(exc, 'msg', exc)}")}
            # ABORT_STATEMENT refused the whole COPY: load file by file to find the refused ones.
            out = {}
            for f in files:
                out.update(self._copy(directory, [f]))
            return out
        return copy_outcomes(files, cur.description, cur.fetchall())

    # -- Snowpipe ----------------------------------------------------------------------------------
    def _ingest_manager(self):
        if self._ingest is None:
            from cryptography.hazmat.primitives import serialization
            from snowflake.ingest import SimpleIngestManager

            c = self._c
            pem = load_private_key(c).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()).decode()
            kwargs = {}
            if c.snowpipe_endpoint_url:
                scheme, host, port = split_endpoint(c.snowpipe_endpoint_url)
                kwargs = dict(scheme=scheme, host=host, port=port)
            pipe = f"{c.database}.{c.schema_name}.{c.pipe}".upper()
            self._ingest = SimpleIngestManager(account=c.account, user=c.user, pipe=pipe, private_key=pem, **kwargs)
        return self._ingest

    def _load_snowpipe(self, files: list[BatchFile]) -> dict[str, LoadOutcome]:
        from snowflake.ingest import StagedFile

        manager = self._ingest_manager()
        paths = {self._c.stage_prefix + f.name: f for f in files}
        for start in range(0, len(files), MAX_FILES_PER_INSERT):
            chunk = list(paths.items())[start:start + MAX_FILES_PER_INSERT]
            try:
                response = manager.ingest_files([StagedFile(path, f.size) for path, f in chunk])
            except Exception as exc:  # noqa: BLE001 - the client raises IngestResponseError with the body
                raise RuntimeError(redact(f"Snowpipe insertFiles failed: {exc}")) from None
            if response.get("responseCode") != "SUCCESS":
                raise RuntimeError(redact(f"Snowpipe insertFiles answered {response.get('responseCode')}"))
        reports: dict[str, dict] = {}
        deadline = time.monotonic() + self._c.snowpipe_wait_seconds
        delay = 1.0
        while True:
            history = manager.get_history()
            for entry in history.get("files", []):
                if entry.get("path") in paths and entry.get("complete"):
                    reports[entry["path"]] = entry
            if len(reports) == len(paths):
                break
            if time.monotonic() > deadline:
                # Snowpipe reports nothing for a file it loaded before (a retry after a lost answer): such a
                # file's rows are in the table. Anything else unreported is not confirmed: fail the bundle.
                for path, f in paths.items():
                    if path not in reports and len(self._present_ids(f.rows)) == f.rows.num_rows:
                        reports[path] = {"status": "PRESENT"}
                if len(reports) == len(paths):
                    break
                raise RuntimeError(f"Snowpipe reported {len(reports)} of {len(paths)} files within "
                                   f"{self._c.snowpipe_wait_seconds:.0f} s; the rest are staged and queued "
                                   f"(a re-run confirms them without loading anything twice)")
            time.sleep(delay)
            delay = min(delay * 1.5, 10.0)
        return {f.name: snowpipe_outcome(f, reports[path]) for path, f in paths.items()}


def copy_outcomes(files: list[BatchFile], description, rows) -> dict[str, LoadOutcome]:
    """Per-file outcomes from COPY's result. A file absent from the result (``Copy executed with 0 files
    processed``) or reported ``LOAD_SKIPPED`` was loaded before: its rows are already present."""
    names = [d[0].lower() for d in description or []]
    by_name = {}
    if "file" in names:
        for row in rows:
            entry = dict(zip(names, row))
            by_name[entry["file"].rsplit("/", 1)[-1]] = entry
    out = {}
    for f in files:
        entry = by_name.get(f.name.rsplit("/", 1)[1])
        if entry is None or entry["status"] == "LOAD_SKIPPED":
            out[f.name] = LoadOutcome(present=f.rows.num_rows)
        elif entry["status"] == "LOADED" and int(entry["rows_loaded"]) == f.rows.num_rows:
            out[f.name] = LoadOutcome(loaded=f.rows.num_rows)
        elif entry["status"] in ("LOAD_FAILED",):
            out[f.name] = LoadOutcome(error=f"Snowflake refused the row: {entry.get('first_error')}")
        else:
            # PARTIALLY_LOADED or a row count that does not match cannot happen with ABORT_STATEMENT;
            # never guess which rows landed.
            raise RuntimeError(f"COPY reported {entry['status']} with {entry.get('rows_loaded')} of "
                               f"{f.rows.num_rows} rows for {f.name}")
    return out


def snowpipe_outcome(f: BatchFile, report: dict) -> LoadOutcome:
    status = report.get("status")
    if status == "PRESENT":  # not reported, but every row is in the table (loaded by an earlier attempt)
        return LoadOutcome(present=f.rows.num_rows)
    if status == "LOADED":
        return LoadOutcome(loaded=int(report.get("rowsInserted", f.rows.num_rows)))
    if status == "LOAD_FAILED":
        return LoadOutcome(error=f"Snowflake refused the row: {report.get('firstError')}")
    raise RuntimeError(f"Snowpipe reported {status} for {f.name}: the pipe must use ON_ERROR = SKIP_FILE or "
                       f"ABORT_STATEMENT so a file loads whole or not at all")


def open_loader(integration_id: str, config: SnowflakeConfig) -> SnowflakeLoader:
    return SnowflakeLoader(integration_id, config)


class WriteEventsToSnowflake(WriteStagedLoads):
    """Prepared event batches -> files on the stage, loaded by COPY or Snowpipe."""

    def __init__(self, integration):
        super().__init__(integration, open_loader, integration.config.file_format)


def ddl(c: SnowflakeConfig) -> str:
    """The table, the internal stage (unless an external ``stage_url`` is used) and, with ``pipe``, the pipe."""
    parts = [create_table_sql(c.database, c.schema_name, c.table)]
    if c.stage_url is None:
        parts.append(create_stage_sql(c.database, c.schema_name, c.stage))
    if c.pipe:
        parts.append(create_pipe_sql(c.database, c.schema_name, c.pipe, c.table, c.stage, c.file_format))
    return ";\n\n".join(parts) + ";"


DESTINATION = Destination(SnowflakeConfig, WriteEventsToSnowflake, ddl=ddl)
