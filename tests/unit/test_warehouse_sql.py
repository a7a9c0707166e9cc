"""Every statement the Snowflake and Redshift loaders send, parsed with sqlglot in that warehouse's
dialect (the local servers are emulations, so the exact text is checked here), plus identifier
validation, manifests and the deterministic batch files."""
from __future__ import annotations

import gzip
import logging
from datetime import datetime, timezone

import orjson
import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from transforms.integrations import validate_integrations
from transforms.profiles.warehouse import COLUMNS, SCHEMA
from transforms.sinks import redshift as rs
from transforms.sinks import snowflake as sf
from transforms.sinks import staged


def parse(sql: str, dialect: str, caplog) -> exp.Expression:
    """Parse strictly; sqlglot logs (and returns a bare Command) when it does not understand a statement."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sqlglot"):
        tree = sqlglot.parse_one(sql.replace("%s", "'x'"), read=dialect, error_level=sqlglot.ErrorLevel.RAISE)
    assert not isinstance(tree, exp.Command), f"not understood by sqlglot ({dialect}): {sql}"
    assert "unsupported syntax" not in caplog.text
    return tree


SNOWFLAKE = [
    sf.create_table_sql("ANALYTICS", "DATAFLY", "EVENTS"),
    sf.create_stage_sql("ANALYTICS", "DATAFLY", "DATAFLY_STAGE"),
    sf.copy_into_sql("ANALYTICS", "DATAFLY", "EVENTS", "DATAFLY_STAGE", "beamhouse/2026-01-28",
                     ["a-1.json.gz", "a-2.json.gz"], "json"),
    sf.copy_into_sql("ANALYTICS", "DATAFLY", "EVENTS", "DATAFLY_STAGE", "beamhouse/2026-01-28", ["a.parquet"], "parquet"),
    sf.create_pipe_sql("ANALYTICS", "DATAFLY", "DATAFLY_PIPE", "EVENTS", "DATAFLY_STAGE", "json").split(" AS\n", 1)[1],
    sf.put_sql("/tmp/beamhouse-x", "ANALYTICS", "DATAFLY", "DATAFLY_STAGE", "beamhouse/2026-01-28"),
    sf.present_ids_sql("ANALYTICS", "DATAFLY", "EVENTS", 3),
    sf.revenue_by_day_sql("ANALYTICS", "DATAFLY", "EVENTS"),
]
REDSHIFT = [
    rs.create_table_sql("datafly", "events"),
    rs.create_loads_table_sql("datafly"),
    rs.create_stage_sql("beamhouse_stage_0123", "datafly", "events"),
    rs.copy_sql("beamhouse_stage_0123", "s3://my-redshift-staging/datafly/staging/_manifests/x.manifest",
                "arn:aws:iam::123456789012:role/RedshiftS3Access", "us-east-1"),
    rs.load_recorded_sql("datafly"),
    rs.merge_sql("datafly", "events", "beamhouse_stage_0123"),
    rs.record_load_sql("datafly"),
    rs.drop_stage_sql("beamhouse_stage_0123"),
    rs.load_errors_sql(),
    rs.revenue_by_day_sql("datafly", "events"),
]


@pytest.mark.parametrize("sql", SNOWFLAKE)
def test_snowflake_statements_parse(sql, caplog):
    parse(sql, "snowflake", caplog)


@pytest.mark.parametrize("sql", REDSHIFT)
def test_redshift_statements_parse(sql, caplog):
    parse(sql, "redshift", caplog)


def test_redshift_lock_statement_shape():
    # sqlglot has no LOCK: the statement is checked by shape (LOCK table_name [, ...] in Redshift's grammar).
    assert rs.lock_sql("datafly", "events") == 'LOCK "datafly"."events"'


def test_snowflake_copy_names_files_and_aborts(caplog):
    tree = parse(SNOWFLAKE[2], "snowflake", caplog)
    params = {p.this.name.upper(): p for p in tree.args.get("params", [])}
    assert params["ON_ERROR"].expression.name.upper() == "ABORT_STATEMENT"
    files = [e.name for e in params["FILES"].expression.expressions] if isinstance(params["FILES"].expression, exp.Tuple) \
        else [e.name for e in params["FILES"].expressions]
    assert files == ["a-1.json.gz", "a-2.json.gz"]
    select = tree.find(exp.Select)
    assert len(select.expressions) == len(COLUMNS)
    assert "PARSE_JSON" not in SNOWFLAKE[2] and SNOWFLAKE[3].count("PARSE_JSON") == 3


def test_redshift_copy_is_a_manifest_of_mandatory_files_with_a_role(caplog):
    sql = REDSHIFT[3]
    parse(sql, "redshift", caplog)
    for option in ("MANIFEST", "GZIP", "FORMAT AS JSON 'auto'", "IAM_ROLE 'arn:aws:iam::123456789012:role/",
                   "REGION 'us-east-1'", "TIMEFORMAT 'auto'"):
        assert option in sql
    assert "ACCESS_KEY_ID" not in sql and "CREDENTIALS" not in sql
    entries = orjson.loads(rs.manifest([("s3://b/k1.json.gz", 10), ("s3://b/k2.json.gz", 20)]))["entries"]
    assert entries == [{"url": "s3://b/k1.json.gz", "mandatory": True, "meta": {"content_length": 10}},
                       {"url": "s3://b/k2.json.gz", "mandatory": True, "meta": {"content_length": 20}}]


def test_redshift_table_is_the_seeds(caplog):
    tree = parse(REDSHIFT[0], "redshift", caplog)
    types = {c.name: c.args["kind"].sql("redshift") for c in tree.find_all(exp.ColumnDef)}
    assert list(types) == list(COLUMNS)
    assert types["context"] == "SUPER" and types["event_id"].startswith("VARCHAR(64)")
    assert "DISTKEY(anonymous_id)" in REDSHIFT[0] and "SORTKEY(timestamp)" in REDSHIFT[0]


@pytest.mark.parametrize("bad", ['events"; DROP TABLE x; --', "a b", "", "1abc", "x" * 300, "ev'ents"])
def test_identifiers_are_validated(bad):
    with pytest.raises(ValueError):
        sf.quote_ident(bad)
    with pytest.raises(ValueError):
        rs.quote_ident(bad)


def test_identifiers_are_quoted_as_the_warehouse_folds_them():
    assert sf.qualified("analytics", "Datafly", "EVENTS") == '"ANALYTICS"."DATAFLY"."EVENTS"'
    assert rs.qualified("Datafly", "EVENTS") == '"datafly"."events"'
    assert sf.quote_string("it's") == "'it\\'s'" and rs.quote_string("it's") == "'it''s'"


def test_configs_refuse_injected_identifiers():
    body = {"source_id": "s", "vendor": "snowflake", "name": "sf", "config": {
        "account": "a1", "warehouse": "W", "database": "D", "schema": "S", "table": "T; DROP TABLE X",
        "stage": "ST", "user": "U", "private_key": "env:SF_KEY"}}
    _, errors = validate_integrations([body])
    assert [e.split(":")[0] for e in errors] == ["$[0].config.table"]
    body = {"source_id": "s", "vendor": "redshift", "name": "rs", "config": {
        "host": "h", "database": "d", "schema": "s", "table": "t", "user": "u", "password": "env:P",
        "s3_bucket": "bkt", "s3_region": "us-east-1", "iam_role_arn": "arn:aws:iam::123456789012:role/x' --"}}
    _, errors = validate_integrations([body])
    assert [e.split(":")[0] for e in errors] == ["$[0].config.iam_role_arn"]


def _rows(n: int) -> pa.Table:
    ts = [datetime(2026, 1, 28, 12, 0, i % 60, 123456, tzinfo=timezone.utc) for i in range(n)]
    return pa.table({
        "event_id": [f"e{i:03d}" for i in range(n)], "type": ["track"] * n, "event": ["Order Completed"] * n,
        "anonymous_id": ["a"] * n, "user_id": [None] * n, "timestamp": ts, "received_at": ts, "sent_at": [None] * n,
        "context": ['{"ip":"10.0.0.1"}'] * n, "properties": ['{"total":12.50}'] * n, "traits": [None] * n,
        "source_id": ["s"] * n, "integration_id": ["i"] * n}).cast(SCHEMA)


def test_batch_files_are_deterministic_and_carry_nested_json():
    rows = _rows(5)
    a = staged.make_file("wh", "2026-01-28", rows, "json")
    b = staged.make_file("wh", "2026-01-28", rows, "json")
    assert a.name == b.name and a.data == b.data and a.name.startswith("2026-01-28/wh-") and a.name.endswith(".json.gz")
    first = orjson.loads(gzip.decompress(a.data).splitlines()[0])
    assert first["properties"] == {"total": 12.50} and first["timestamp"] == "2026-01-28 12:00:00.123456"
    assert first["user_id"] is None
    other = staged.make_file("wh", "2026-01-28", rows.slice(0, 4), "json")
    assert other.name != a.name


def test_split_batches_sorts_and_cuts():
    rows = _rows(7)
    shuffled = rows.take([6, 2, 0, 5, 1, 4, 3])
    batches = staged.split_batches(shuffled, 3)
    assert [b.num_rows for b in batches] == [3, 3, 1]
    assert sum((b["event_id"].to_pylist() for b in batches), []) == rows["event_id"].to_pylist()


class _FakeLoader:
    """A loader that refuses files containing given event ids (to check the isolation of refused rows)."""

    def __init__(self, refuse):
        self.refuse = set(refuse)
        self.loads = 0

    def stage(self, files):
        pass

    def load(self, files):
        self.loads += 1
        return {f.name: staged.LoadOutcome(error="refused: bad row") if self.refuse & set(f.event_ids)
                else staged.LoadOutcome(loaded=f.rows.num_rows) for f in files}


def test_refused_rows_are_isolated_and_the_rest_lands():
    rows = _rows(64)
    loader = _FakeLoader({"e007", "e040"})
    loaded, present, rejected = staged.load_isolating_rejects(loader, "wh", "2026-01-28",
                                                             staged.split_batches(rows, 32), "json")
    assert loaded == 62 and present == 0
    assert sorted(r["event_id"] for r, _ in rejected) == ["e007", "e040"]
    assert all(msg == "refused: bad row" for _, msg in rejected)
    assert loader.loads <= 1 + 2 * 5  # one round per halving level


@pytest.mark.parametrize("loader", [rs.RedshiftLoader, sf.SnowflakeLoader])
def test_each_staged_warehouse_implements_the_loader_protocol_with_its_signatures(loader):
    import inspect

    for name in ("check_target", "prepare", "stage", "load", "close"):
        ours, theirs = inspect.signature(getattr(staged.Loader, name)), inspect.signature(getattr(loader, name))
        assert list(ours.parameters) == list(theirs.parameters), name
    assert issubclass(loader, staged.Loader)


def test_copy_outcomes_read_snowflake_results():
    files = [staged.make_file("wh", "2026-01-28", _rows(3), "json"),
             staged.make_file("wh", "2026-01-28", _rows(2), "json")]
    desc = [(n,) for n in ("file", "status", "rows_parsed", "rows_loaded", "error_limit", "errors_seen",
                           "first_error", "first_error_line", "first_error_character", "first_error_column_name")]
    base = files[0].name.rsplit("/", 1)[1]
    out = sf.copy_outcomes(files, desc, [(f"stage/{base}", "LOADED", 3, 3, 1, 0, None, None, None, None)])
    assert out[files[0].name].loaded == 3
    assert out[files[1].name].present == 2  # not in the result: loaded before
    # "Copy executed with 0 files processed." has a single status column.
    out = sf.copy_outcomes(files, [("status",)], [("Copy executed with 0 files processed.",)])
    assert all(o.present == f.rows.num_rows for o, f in zip(out.values(), files))
    with pytest.raises(RuntimeError, match="PARTIALLY_LOADED"):
        sf.copy_outcomes(files[:1], desc, [(f"s/{base}", "PARTIALLY_LOADED", 3, 2, 1, 1, "x", 1, 1, "C")])


def test_ddl_command_prints_the_snowflake_and_redshift_objects(tmp_path, capsys):
    from pipelines import ddl

    (tmp_path / "i.json").write_bytes(orjson.dumps([
        {"source_id": "s", "vendor": "snowflake", "name": "sf", "config": {
            "account": "a1", "warehouse": "W", "database": "ANALYTICS", "schema": "DATAFLY", "table": "EVENTS",
            "stage": "DATAFLY_STAGE", "pipe": "DATAFLY_PIPE", "user": "U", "private_key": "env:SF_KEY"}},
        {"source_id": "s", "vendor": "redshift", "name": "rs", "config": {
            "host": "h", "database": "d", "schema": "datafly", "table": "events", "user": "u", "password": "env:P",
            "s3_bucket": "bkt", "s3_region": "us-east-1", "iam_role_arn": "arn:aws:iam::123456789012:role/R"}}]))
    assert ddl.main(["--integrations", str(tmp_path / "i.json")]) == 0
    out = capsys.readouterr().out
    snow, red = out.split("-- rs (redshift)")
    assert snow.count("CREATE ") == 3 and "CREATE PIPE" in snow and "VARIANT" in snow
    assert red.count("CREATE TABLE") == 2 and "SUPER" in red and "_beamhouse_loads" in red
