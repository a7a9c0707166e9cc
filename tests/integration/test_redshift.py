"""Redshift delivery end to end on the FnApiRunner: staging in S3 (moto server), COPY ... MANIFEST and the
merge in a real PostgreSQL 15 transaction.

EMULATION: no Redshift runs here. ``tests.servers.redshift_shim`` stands between ``redshift_connector``
and PostgreSQL for what PostgreSQL cannot do (the connector's startup packet, COPY from S3, Redshift
DDL keywords and SUPER navigation); see its docstring. What these tests prove is the loader's protocol:
staged files, one transaction per load, the load record, deletion only after commit, retries and
rejected rows. The SQL text itself is checked with sqlglot's Redshift dialect in
tests/unit/test_warehouse_sql.py.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from decimal import Decimal

import boto3
import orjson
import pytest

from pipelines import deliver, validate
from tests.eventgen import consented_ids, prepare_run
from tests.servers.redshift_shim import RedshiftShim
from transforms.sinks.redshift import revenue_by_day_sql

RUNNER = "--runner=FnApiRunner"
PASSWORD = "Redshift-Passw0rd-for-tests"
S3_SECRET = "s3-secret-key-for-redshift-staging"
SEED_BODY = {
    "source_id": "src_abc123", "vendor": "redshift", "name": "Redshift Events", "enabled": True,
    "config": {"host": "my-cluster.abc123.us-east-1.redshift.amazonaws.com", "port": 5439, "database": "analytics",
               "schema": "datafly", "table": "events", "user": "datafly_service", "password": "your_password",
               "s3_bucket": "my-redshift-staging", "s3_prefix": "datafly/staging/", "s3_region": "us-east-1",
               "iam_role_arn": "arn:aws:iam::123456789012:role/RedshiftS3Access",
               "batch_size": 1000, "batch_interval_seconds": 120}}


@pytest.fixture(scope="module")
def env(moto_server, postgres_server, monkeypatch_module):
    s3 = boto3.client("s3", endpoint_url=moto_server.url, aws_access_key_id="x", aws_secret_access_key="x",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="my-redshift-staging")
    shim = RedshiftShim(postgres_server.port, s3)
    psql(postgres_server, "CREATE DOMAIN super AS jsonb")
    psql(postgres_server, "CREATE ROLE datafly_service LOGIN SUPERUSER")  # trust auth: the password is not checked
    monkeypatch_module.setenv("TEST_REDSHIFT_PASSWORD", PASSWORD)
    yield {"s3": s3, "shim": shim, "pg": postgres_server, "moto": moto_server}
    shim.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def psql(pg, sql: str, params=None):
    """Talk to PostgreSQL directly (not through the shim): the tests' view of the warehouse."""
    import redshift_connector  # the driver works against PostgreSQL itself once startup is clean

    con = redshift_connector.connect(host="127.0.0.1", port=SHIM_PORTS[pg.port], database="analytics",
                                     user="postgres", password="x", ssl=False)
    con.autocommit = True
    try:
        cur = con.cursor()
        cur.execute(sql, params)
        if cur.description is None:
            return None
        return [tuple(r) for r in cur.fetchall()]
    finally:
        con.close()


SHIM_PORTS: dict[int, int] = {}


@pytest.fixture(scope="module", autouse=True)
def _direct_shim(postgres_server, moto_server):
    # A second, fault-free shim for the tests' own queries, so fault injection never hits them.
    s3 = boto3.client("s3", endpoint_url=moto_server.url, aws_access_key_id="x", aws_secret_access_key="x",
                      region_name="us-east-1")
    shim = RedshiftShim(postgres_server.port, s3)
    SHIM_PORTS[postgres_server.port] = shim.port
    yield
    shim.stop()


def integration(env, schema: str, **config) -> dict:
    body = orjson.loads(orjson.dumps(SEED_BODY))
    body["config"].update({"host": "127.0.0.1", "port": env["shim"].port, "ssl": False, "schema": schema,
                           "password": "env:TEST_REDSHIFT_PASSWORD", "s3_endpoint_url": env["moto"].url,
                           "s3_access_key_id": "AKIAREDSHIFTSTAGING", "s3_secret_access_key": S3_SECRET,
                           "s3_prefix": f"staging/{schema}/", "consent": {"require": ["analytics"]}, **config})
    return body


def run(tmp_path, integ, n=400, seed=31, name="run"):
    root = tmp_path / name
    truth, argv = prepare_run(root, [integ], n, seed, runner=RUNNER)
    return root, truth, argv


def rows(env, schema: str) -> list[tuple]:
    return psql(env["pg"], f'SELECT event_id, type, "timestamp", context->>\'tenant_id\', properties FROM '
                           f'{schema}.events ORDER BY event_id')


def staged_keys(env, schema: str) -> list[str]:
    listing = env["s3"].list_objects_v2(Bucket="my-redshift-staging", Prefix=f"staging/{schema}/")
    return [o["Key"] for o in listing.get("Contents", [])]


def test_seed_body_validates_as_is(tmp_path):
    (tmp_path / "seed.json").write_bytes(orjson.dumps(SEED_BODY))
    assert validate.main([str(tmp_path / "seed.json")]) == 0


def test_delivers_unique_consented_events_once_and_deletes_staging(env, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    psql(env["pg"], "CREATE SCHEMA s1")
    root, truth, argv = run(tmp_path, integration(env, "s1", create_table=True))
    assert deliver.run(argv) == 0
    got = rows(env, "s1")
    want = consented_ids(truth)
    assert [r[0] for r in got] == sorted(want)
    for event_id, kind, ts, tenant, _ in got:
        assert kind == truth["unique"][event_id]["type"]
        assert ts == truth["unique"][event_id]["timestamp"].replace(tzinfo=None)
        assert tenant == truth["unique"][event_id]["tenant"]
    # Only after the commit: every staged file and manifest is gone.
    assert staged_keys(env, "s1") == []
    loads = psql(env["pg"], "SELECT rows_staged, rows_inserted FROM s1._beamhouse_loads")
    assert sum(r[1] for r in loads) == len(want)
    # Every COPY named a manifest of mandatory entries, with the IAM role (never keys).
    assert env["shim"].copies and all("MANIFEST" in c and "IAM_ROLE" in c and S3_SECRET not in c
                                      for c in env["shim"].copies)
    summary = orjson.loads((root / "summary.json").read_bytes())
    entry = summary["integrations"]["redshift_events"]
    assert summary["balanced"] and entry["rows_inserted"] == len(want) and entry["delivered"] == len(want)
    # The seed's revenue-by-day query (window widened: the generated events are from January 2026).
    got_revenue = {r[0]: round(Decimal(str(r[1])), 2) for r in psql(env["pg"], revenue_by_day_sql("s1", "events", 3650))}
    want_revenue = defaultdict(Decimal)
    for k in want:
        if truth["unique"][k]["total"] is not None:
            want_revenue[truth["unique"][k]["timestamp"].date()] += truth["unique"][k]["total"]
    assert got_revenue == dict(want_revenue)
    # Secrets never reach logs, summaries or dead letters.
    text = caplog.text + (root / "summary.json").read_text()
    text += "".join(p.read_text() for p in (root / "dead").rglob("*") if p.is_file())
    assert PASSWORD not in text and S3_SECRET not in text
    # A re-run loads nothing twice: the same files, the same load ids, already recorded.
    assert deliver.run(argv) == 0
    assert [r[0] for r in rows(env, "s1")] == sorted(want)
    again = orjson.loads((root / "summary.json").read_bytes())["integrations"]["redshift_events"]
    assert again["rows_inserted"] == 0 and again["rows_already_present"] == len(want)
    assert staged_keys(env, "s1") == []


def test_copy_failing_mid_way_leaves_no_partial_load_and_keeps_staged_files(env, tmp_path, capsys):
    psql(env["pg"], "CREATE SCHEMA s2")
    root, truth, argv = run(tmp_path, integration(env, "s2", create_table=True), n=120, seed=32)
    env["shim"].fail_copy_after_rows = 5
    assert deliver.run(argv) == 1
    assert env["shim"].fail_copy_after_rows is None  # the fault fired
    assert "injected mid-way failure" in capsys.readouterr().err
    assert rows(env, "s2") == []
    assert psql(env["pg"], "SELECT count(*) FROM s2._beamhouse_loads") == [(0,)]
    kept = staged_keys(env, "s2")
    assert any(k.endswith(".json.gz") for k in kept) and any(k.endswith(".manifest") for k in kept)
    # The next run loads everything exactly once and only then removes the staging files.
    assert deliver.run(argv) == 0
    assert [r[0] for r in rows(env, "s2")] == sorted(consented_ids(truth))
    assert staged_keys(env, "s2") == []


def test_retry_after_lost_commit_acknowledgement_loads_nothing_twice(env, tmp_path):
    psql(env["pg"], "CREATE SCHEMA s3")
    root, truth, argv = run(tmp_path, integration(env, "s3", create_table=True), n=150, seed=33)
    env["shim"].drop_after_commit = True
    assert deliver.run(argv) == 0
    assert env["shim"].drop_after_commit is False  # the connection was dropped after a commit
    assert [r[0] for r in rows(env, "s3")] == sorted(consented_ids(truth))
    entry = orjson.loads((root / "summary.json").read_bytes())["integrations"]["redshift_events"]
    # The retried load found its own record: its rows count as already present, none inserted twice.
    assert entry["rows_inserted"] + entry["rows_already_present"] == len(consented_ids(truth))
    assert entry["rows_already_present"] > 0
    assert staged_keys(env, "s3") == []


def test_rows_redshift_refuses_become_dead_letters_with_its_reason(env, tmp_path):
    psql(env["pg"], "CREATE SCHEMA s4")
    root, truth, argv = run(tmp_path, integration(env, "s4"), n=200, seed=34)
    refused = sorted(consented_ids(truth))[:2]
    psql(env["pg"], "CREATE TABLE s4.events (event_id VARCHAR(64) NOT NULL, type VARCHAR(20), event VARCHAR(256), "
                    "anonymous_id VARCHAR(64), user_id VARCHAR(256), timestamp TIMESTAMP, received_at TIMESTAMP, "
                    "sent_at TIMESTAMP, context SUPER, properties SUPER, traits SUPER, source_id VARCHAR(64), "
                    "integration_id VARCHAR(64), CONSTRAINT refuse_two CHECK (event_id NOT IN "
                    f"('{refused[0]}', '{refused[1]}')))")
    assert deliver.run(argv) == 0
    landed = [r[0] for r in rows(env, "s4")]
    assert landed == sorted(consented_ids(truth) - set(refused))
    dead = [orjson.loads(line) for p in (root / "dead").rglob("*.ndjson") for line in p.read_bytes().splitlines()]
    sink = [d for d in dead if d["reason"] == "sink_rejected"]
    assert sorted(d["event_id"] for d in sink) == refused
    assert all("refuse_two" in d["error"] and d["integration_id"] == "redshift_events" for d in sink)
    summary = orjson.loads((root / "summary.json").read_bytes())
    assert summary["balanced"]


def test_missing_table_without_create_table_fails_at_start(env, tmp_path, capsys):
    psql(env["pg"], "CREATE SCHEMA s5")
    root, truth, argv = run(tmp_path, integration(env, "s5"), n=10, seed=35)
    assert deliver.run(argv) == 2
    err = capsys.readouterr().err
    assert "s5.events does not exist" in err and "pipelines.ddl" in err and PASSWORD not in err
