"""Snowflake delivery end to end on the FnApiRunner against fakesnow's server (started by the session
fixture, with the emulation fixes in tests/servers/fakesnow_server.py), through the real Snowflake
connector: key-pair login, PUT to an internal stage, COPY INTO with FILES and load history, VARIANT
queries.

Snowpipe is exercised against tests/servers/snowpipe.py, a CONTRACT TEST server implementing the
documented insertFiles/insertReport shapes and JWT checks, loading into fakesnow. fakesnow does not
emulate external stages or CREATE PIPE; those statements are checked with sqlglot only
(tests/unit/test_warehouse_sql.py).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from decimal import Decimal

import orjson
import pytest
import snowflake.connector
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pipelines import deliver, validate
from tests.eventgen import consented_ids, prepare_run
from tests.servers.faultproxy import FaultProxy
from tests.servers.snowpipe import SnowpipeContractServer
from transforms.sinks import snowflake as sf

RUNNER = "--runner=FnApiRunner"
SEED_BODY = {
    "source_id": "src_abc123", "vendor": "snowflake", "name": "Snowflake Events", "enabled": True,
    "config": {"account": "abc12345.us-east-1", "warehouse": "DATAFLY_WH", "database": "ANALYTICS",
               "schema": "DATAFLY", "table": "EVENTS", "stage": "DATAFLY_STAGE", "pipe": "DATAFLY_PIPE",
               "user": "DATAFLY_SERVICE",
               "private_key": "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
               "batch_size": 1000, "batch_interval_seconds": 60}}


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    path = tmp_path_factory.mktemp("keys") / "rsa_key.p8"
    path.write_text(pem)
    return {"pem": pem, "ref": f"file:{path}", "public": private.public_key()}


def fs_connect(server, schema=None):
    host, port = server.url[len("http://"):].split(":")
    return snowflake.connector.connect(user="fake", password="snow", account="fakesnow", host=host, port=int(port),
                                       protocol="http", database="ANALYTICS", schema=schema,
                                       session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False})


def query(server, sql, params=None):
    con = fs_connect(server)
    try:
        return con.cursor().execute(sql, params).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def snow(fakesnow_server):
    con = fs_connect(fakesnow_server)
    con.cursor().execute("CREATE DATABASE IF NOT EXISTS ANALYTICS")
    con.close()
    return fakesnow_server


def integration(server, key, schema: str, endpoint=None, name="Snowflake Events", **config) -> dict:
    body = orjson.loads(orjson.dumps(SEED_BODY))
    body["name"] = name
    body["config"].pop("pipe")
    body["config"].update({"account": "fakesnow", "schema": schema, "private_key": key["ref"],
                           "endpoint_url": endpoint or server.url, "create_table": True,
                           "consent": {"require": ["analytics"]}, **config})
    return body


def make_schema(server, schema):
    query(server, f"CREATE SCHEMA IF NOT EXISTS ANALYTICS.{schema}")


def run_files(tmp_path, integ, n=300, seed=41, name="run"):
    root = tmp_path / name
    truth, argv = prepare_run(root, [integ], n, seed, runner=RUNNER)
    return root, truth, argv


def event_ids(server, schema) -> list[str]:
    return [r[0] for r in query(server, f"SELECT event_id FROM ANALYTICS.{schema}.EVENTS ORDER BY event_id")]


def summary(root) -> dict:
    return orjson.loads((root / "summary.json").read_bytes())


def test_seed_body_validates_as_is(tmp_path):
    (tmp_path / "seed.json").write_bytes(orjson.dumps(SEED_BODY))
    assert validate.main([str(tmp_path / "seed.json")]) == 0


def test_copy_delivers_unique_consented_events_once_with_variant_columns(snow, key, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    make_schema(snow, "S1")
    root, truth, argv = run_files(tmp_path, integration(snow, key, "S1", batch_size=120))
    assert deliver.run(argv) == 0
    want = consented_ids(truth)
    assert event_ids(snow, "S1") == sorted(want)
    got = query(snow, "SELECT event_id, type, timestamp, context:tenant_id::STRING FROM ANALYTICS.S1.EVENTS")
    for event_id, kind, ts, tenant in got:
        assert (kind, ts, tenant) == (truth["unique"][event_id]["type"],
                                      truth["unique"][event_id]["timestamp"].replace(tzinfo=None),
                                      truth["unique"][event_id]["tenant"])
    # Seed 000's revenue query (its window widened: the generated events are from January 2026).
    revenue = {r[0]: round(Decimal(str(r[1])), 2) for r in query(snow, sf.revenue_by_day_sql("ANALYTICS", "S1", "EVENTS",
                                                                                              3650))}
    want_revenue = defaultdict(Decimal)
    for k in want:
        if truth["unique"][k]["total"] is not None:
            want_revenue[truth["unique"][k]["timestamp"].date()] += truth["unique"][k]["total"]
    assert revenue == dict(want_revenue)
    s = summary(root)["integrations"]["snowflake_events"]
    assert summary(root)["balanced"] and s["rows_inserted"] == len(want) and s["delivered"] == len(want)
    # The private key never reaches logs, summaries or dead letters.
    body = key["pem"].splitlines()[1]
    text = caplog.text + (root / "summary.json").read_text()
    text += "".join(p.read_text() for p in (root / "dead").rglob("*") if p.is_file())
    assert body not in text
    # A re-run finds every event already loaded: nothing staged, nothing loaded twice.
    assert deliver.run(argv) == 0
    assert event_ids(snow, "S1") == sorted(want)
    again = summary(root)["integrations"]["snowflake_events"]
    assert again["rows_inserted"] == 0 and again["rows_already_present"] == len(want)


def test_parquet_files_load_the_same_rows(snow, key, tmp_path):
    make_schema(snow, "S2")
    root, truth, argv = run_files(tmp_path, integration(snow, key, "S2", file_format="parquet"), n=150, seed=42)
    assert deliver.run(argv) == 0
    assert event_ids(snow, "S2") == sorted(consented_ids(truth))
    [(kind,)] = query(snow, "SELECT DISTINCT typeof(properties) FROM ANALYTICS.S2.EVENTS WHERE properties IS NOT NULL")
    assert kind in ("OBJECT", "JSON")  # parsed into VARIANT objects, not strings


def test_load_history_keeps_a_reloaded_file_from_loading_twice(snow, key, tmp_path):
    """Without the event-id lookup, a re-run stages the same files and COPY names them again: Snowflake's
    load metadata skips them (LOAD_SKIPPED) and the rows count as already present."""
    make_schema(snow, "S3")
    root, truth, argv = run_files(tmp_path, integration(snow, key, "S3", skip_loaded_events=False), n=120, seed=43)
    assert deliver.run(argv) == 0
    assert deliver.run(argv) == 0
    assert event_ids(snow, "S3") == sorted(consented_ids(truth))
    again = summary(root)["integrations"]["snowflake_events"]
    assert again["rows_inserted"] == 0 and again["rows_already_present"] == len(consented_ids(truth))


def test_retry_after_lost_copy_answer_loads_nothing_twice(snow, key, tmp_path):
    """The first COPY runs but its answer is lost (503 after the server executed it); the connector
    retries the request and Snowflake's load history answers LOAD_SKIPPED for the loaded files."""
    make_schema(snow, "S4")
    proxy = FaultProxy(snow.url).start()
    try:
        root, truth, argv = run_files(tmp_path, integration(snow, key, "S4", endpoint=proxy.url, skip_loaded_events=False),
                                      n=100, seed=44)
        rule = proxy.add_rule(method="POST", path_contains="/queries/v1/query-request", status=503, times=1,
                              after_forward=True)
        # Only COPY statements: the rule matches requests in order, so arm it once staging is done.
        original = sf.SnowflakeLoader._copy

        def copy_with_fault(self, directory, files):
            rule.hits = 0
            return original(self, directory, files)

        rule.hits = rule.times  # disarmed until the first COPY
        sf.SnowflakeLoader._copy = copy_with_fault
        try:
            assert deliver.run(argv) == 0
        finally:
            sf.SnowflakeLoader._copy = original
    finally:
        proxy.stop()
    assert rule.hits >= 1
    assert event_ids(snow, "S4") == sorted(consented_ids(truth))
    s = summary(root)["integrations"]["snowflake_events"]
    assert s["rows_inserted"] + s["rows_already_present"] == len(consented_ids(truth))


def test_rows_snowflake_refuses_become_dead_letters_with_its_message(snow, key, tmp_path):
    make_schema(snow, "S5")
    # A table of the user's own where traits may not be NULL: only identify/group events carry traits.
    cols = ", ".join(f"{c} {t}" for c, t in [
        ("event_id", "STRING NOT NULL"), ("type", "STRING"), ("event", "STRING"), ("anonymous_id", "STRING"),
        ("user_id", "STRING"), ("timestamp", "TIMESTAMP_NTZ"), ("received_at", "TIMESTAMP_NTZ"),
        ("sent_at", "TIMESTAMP_NTZ"), ("context", "VARIANT"), ("properties", "VARIANT"), ("traits", "VARIANT NOT NULL"),
        ("source_id", "STRING"), ("integration_id", "STRING")])
    query(snow, f"CREATE TABLE ANALYTICS.S5.EVENTS ({cols})")
    root, truth, argv = run_files(tmp_path, integration(snow, key, "S5", create_table=False, batch_size=16), n=60,
                                  seed=45)
    query(snow, "CREATE STAGE IF NOT EXISTS ANALYTICS.S5.DATAFLY_STAGE")
    assert deliver.run(argv) == 0
    want = consented_ids(truth)
    with_traits = {k for k in want if truth["unique"][k]["type"] in ("identify", "group")}
    assert with_traits and with_traits != want
    assert event_ids(snow, "S5") == sorted(with_traits)
    dead = [orjson.loads(line) for p in (root / "dead").rglob("*.ndjson") for line in p.read_bytes().splitlines()]
    refused = [d for d in dead if d["reason"] == "sink_rejected"]
    assert sorted(d["event_id"] for d in refused) == sorted(want - with_traits)
    assert all("NULL result in a non-nullable column" in d["error"] for d in refused)
    assert summary(root)["balanced"]


@pytest.fixture
def snowpipe(snow, key):
    make_schema(snow, "S6")
    query(snow, sf.create_table_sql("ANALYTICS", "S6", "EVENTS"))
    query(snow, sf.create_stage_sql("ANALYTICS", "S6", "DATAFLY_STAGE"))
    # The pipe's COPY as CREATE PIPE would define it (fakesnow has no pipes: the contract server runs it).
    pipe_sql = sf.create_pipe_sql("ANALYTICS", "S6", "DATAFLY_PIPE", "EVENTS", "DATAFLY_STAGE", "json")
    copy = pipe_sql.split(" AS\n", 1)[1]
    server = SnowpipeContractServer("fakesnow", "DATAFLY_SERVICE", key["public"], "ANALYTICS.S6.DATAFLY_PIPE", copy,
                                    lambda: fs_connect(snow, "S6"))
    yield server
    server.stop()


def test_snowpipe_insert_files_with_key_pair_jwt_loads_every_file_once(snow, key, snowpipe, tmp_path):
    integ = integration(snow, key, "S6", pipe="DATAFLY_PIPE", snowpipe_endpoint_url=snowpipe.url, batch_size=100,
                        snowpipe_wait_seconds=60)
    root, truth, argv = run_files(tmp_path, integ, n=250, seed=46)
    assert deliver.run(argv) == 0
    assert snowpipe.rejected_auth == 0 and snowpipe.requests
    staged = [f["path"] for r in snowpipe.requests for f in r["files"]]
    assert len(staged) == len(set(staged)) and all(p.startswith("beamhouse/") for p in staged)
    assert all(f["size"] > 0 for r in snowpipe.requests for f in r["files"])
    assert event_ids(snow, "S6") == sorted(consented_ids(truth))
    assert summary(root)["integrations"]["snowflake_events"]["rows_inserted"] == len(consented_ids(truth))
    # A re-run: every event is already in the table, so no file is sent to the pipe again.
    requests = len(snowpipe.requests)
    assert deliver.run(argv) == 0
    assert len(snowpipe.requests) == requests
    assert event_ids(snow, "S6") == sorted(consented_ids(truth))


def test_snowpipe_refuses_a_wrong_key_and_the_run_fails_clearly(snow, key, snowpipe, tmp_path, capsys):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    integ = integration(snow, key, "S6", pipe="DATAFLY_PIPE", snowpipe_endpoint_url=snowpipe.url,
                        private_key=other, name="Snowflake Wrong Key")
    root, truth, argv = run_files(tmp_path, integ, n=20, seed=47)
    assert deliver.run(argv) == 1
    err = capsys.readouterr().err
    assert "Snowpipe insertFiles failed" in err and snowpipe.rejected_auth >= 1
    assert other.splitlines()[1] not in err


def test_external_s3_stage_gets_the_batch_files_create_only(snow, key, moto_server):
    """External stages cannot be loaded from in fakesnow; the staging half runs against moto: the files land
    under the stage URL with their deterministic names, and staging again changes nothing."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server.url, aws_access_key_id="x", aws_secret_access_key="x",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="snowflake-ext-stage")
    s3.put_bucket_versioning(Bucket="snowflake-ext-stage", VersioningConfiguration={"Status": "Enabled"})
    make_schema(snow, "S7")
    config = sf.SnowflakeConfig.model_validate(integration(
        snow, key, "S7", stage_url="s3://snowflake-ext-stage/events/", stage_region="us-east-1",
        stage_endpoint_url=moto_server.url, stage_access_key_id="AKIAEXT", stage_secret_access_key="ext-secret")["config"])
    from tests.unit.test_warehouse_sql import _rows
    from transforms.sinks import staged

    files = [staged.make_file("sf", "2026-01-28", _rows(4), "json")]
    with sf.SnowflakeLoader("sf", config) as loader:
        loader.stage(files)
        loader.stage(files)
    listing = s3.list_object_versions(Bucket="snowflake-ext-stage")
    keys = [v["Key"] for v in listing.get("Versions", [])]
    assert keys == [f"events/beamhouse/{files[0].name}"]
    body = s3.get_object(Bucket="snowflake-ext-stage", Key=keys[0])["Body"].read()
    assert body == files[0].data


def test_external_gcs_stage_gets_the_batch_files_create_only(snow, key, gcs_server):
    """The GCS variant of the external stage, against the GCS emulator (create-only via ifGenerationMatch=0)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from tests.unit.test_warehouse_sql import _rows
    from transforms.sinks import staged

    client = storage.Client(project="test-proj", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs_server.url})
    client.create_bucket("snowflake-gcs-stage")
    make_schema(snow, "S8")
    config = sf.SnowflakeConfig.model_validate(integration(
        snow, key, "S8", stage_url="gs://snowflake-gcs-stage/events/", stage_endpoint_url=gcs_server.url)["config"])
    files = [staged.make_file("sf", "2026-01-28", _rows(3), "parquet")]
    with sf.SnowflakeLoader("sf", config) as loader:
        loader.stage(files)
        loader.stage(files)  # again: the existing object is this batch; nothing is replaced
    blobs = list(client.list_blobs("snowflake-gcs-stage"))
    assert [b.name for b in blobs] == [f"events/beamhouse/{files[0].name}"]
    assert blobs[0].download_as_bytes() == files[0].data
