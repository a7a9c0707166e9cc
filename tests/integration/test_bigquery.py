"""BigQuery streaming inserts end to end on the FnApiRunner against bqemulator (its own virtualenv,
started by the session fixture).

bqemulator does not apply insert-id de-duplication and answers type errors with HTTP 500 instead of
per-row ``insertErrors``. The suite's proxy stands in for those two BigQuery behaviours on the insertAll
path: it drops rows whose ``insertId`` it has already accepted (BigQuery's best-effort de-duplication)
and rejects the rows a test names with BigQuery's response shape (``skipInvalidRows``: the others land).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date
from decimal import Decimal

import orjson
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from pipelines import deliver, validate
from tests.eventgen import generate
from tests.seed000 import BODIES
from tests.servers.faultproxy import FaultProxy

RUNNER = "--runner=FnApiRunner"
SEED_BODY = BODIES[0].encode()  # seed 000's BigQuery body, exactly as the seed writes it
FIXED_NOW = "TIMESTAMP '2026-02-01 00:00:00+00'"  # the generated events span 2026-01-28 .. 01-31


class InsertAllStandIn:
    """The proxy's rewrite hook: insert-id de-duplication and per-row rejection, as BigQuery does them."""

    def __init__(self, reject_ids):
        self.reject_ids = set(reject_ids)
        self.accepted: set[str] = set()
        self.requests: list[list[tuple[str, str]]] = []  # per request: (insertId, json.event_id)

    def __call__(self, method, path, body):
        if method != "POST" or not path.split("?", 1)[0].endswith("/insertAll"):
            return None
        request = orjson.loads(body)
        rows = request.get("rows", [])
        self.requests.append([(r.get("insertId"), r["json"].get("event_id")) for r in rows])
        errors, forward = [], []
        for index, row in enumerate(rows):
            if row["json"]["event_id"] in self.reject_ids:
                errors.append({"index": index, "errors": [{"reason": "invalid", "location": "properties",
                                                           "message": "This field: properties is not a record."}]})
            elif row.get("insertId") not in self.accepted:
                forward.append(row)
        self.accepted.update(r.get("insertId") for r in forward)
        response = {"kind": "bigquery#tableDataInsertAllResponse", **({"insertErrors": errors} if errors else {})}
        if not forward:
            return None, 200, orjson.dumps(response)
        return orjson.dumps({**request, "rows": forward}), lambda status, data: orjson.dumps(response) \
            if status == 200 else data


def bq_client(url):
    return bigquery.Client(project="test-proj", credentials=AnonymousCredentials(),
                           client_options=ClientOptions(api_endpoint=url))


def integration(endpoint, **config):
    return {"source_id": "src_abc123", "vendor": "bigquery", "name": "BigQuery Events", "config": {
        "project_id": "test-proj", "dataset": "datafly_events", "table": "events", "endpoint_url": endpoint,
        "batch_size": 500, "batch_interval_seconds": 60, "consent": {"require": ["analytics"]}, **config}}


@pytest.fixture(scope="module")
def bq_run(bq_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("bq")
    client = bq_client(bq_server.url)
    client.create_dataset("test-proj.datafly_events", exists_ok=True)
    lines, truth = generate(n=900, seed=21, tenants=2, source_id="src_abc123")
    consented = sorted(k for k, v in truth["unique"].items() if v["consented"])
    reject = consented[:3]
    stand_in = InsertAllStandIn(reject)
    proxy = FaultProxy(bq_server.url, rewrite=stand_in).start()
    # The first insertAll reaches BigQuery but its answer is lost: the client must resend the same ids.
    proxy.add_rule(method="POST", path_contains="/insertAll", status=503, code="backendError", times=1,
                   after_forward=True)
    (root / "i.json").write_bytes(orjson.dumps([integration(proxy.url, create_table=True, batch_size=200)]))
    (root / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    argv = [f"--integrations={root / 'i.json'}", f"--input={root / 'in.ndjson'}", f"--dead_letter={root / 'dead'}",
            f"--summary={root / 'summary.json'}", RUNNER]
    try:
        assert deliver.run(argv) == 0
    finally:
        proxy.stop()
    return {"root": root, "truth": truth, "client": client, "reject": reject, "consented": consented,
            "stand_in": stand_in, "summary": orjson.loads((root / "summary.json").read_bytes())}


def test_rows_land_once_with_the_canonical_schema(bq_run):
    client = bq_run["client"]
    table = client.get_table("test-proj.datafly_events.events")
    assert [f.name for f in table.schema][:3] == ["event_id", "type", "event"]
    assert table.time_partitioning.field == "timestamp" and table.clustering_fields == ["type", "event"]
    ids = [r["event_id"] for r in client.query("SELECT event_id FROM `test-proj.datafly_events.events`").result()]
    assert len(ids) == len(set(ids))  # the retried request did not double a row
    assert set(ids) == set(bq_run["consented"]) - set(bq_run["reject"])
    s = bq_run["summary"]["integrations"]["bigquery_events"]
    assert s["balanced"] and s["delivered"] == len(ids) and s["sink_dead_letters"] == {"sink_rejected": 3}


def test_insert_ids_are_event_ids_and_repeat_on_retry(bq_run):
    requests = bq_run["stand_in"].requests
    assert all(insert_id == event_id for req in requests for insert_id, event_id in req)
    assert requests[0] == requests[1]  # the lost answer was retried with identical ids
    assert max(len(r) for r in requests) <= 200  # batch_size caps each request


def test_rejected_rows_are_dead_letters_with_bigquerys_reason(bq_run):
    records = [orjson.loads(line) for p in (bq_run["root"] / "dead").glob("*.ndjson")
               for line in p.read_bytes().splitlines()]
    sink = [r for r in records if r.get("integration_id") == "bigquery_events"]
    assert sorted(r["event_id"] for r in sink) == sorted(bq_run["reject"])
    assert all(r["reason"] == "sink_rejected" and "invalid" in r["error"] and "properties" in r["error"]
               and orjson.loads(r["payload"])["event_id"] == r["event_id"] for r in sink)


def test_seed_queries(bq_run):
    client, truth = bq_run["client"], bq_run["truth"]
    landed = set(bq_run["consented"]) - set(bq_run["reject"])
    revenue = client.query(f"""
        SELECT DATE(timestamp) AS day, SUM(CAST(JSON_VALUE(properties, '$.total') AS FLOAT64)) AS revenue
        FROM `test-proj.datafly_events.events`
        WHERE event = 'Order Completed' AND timestamp >= TIMESTAMP_SUB({FIXED_NOW}, INTERVAL 30 DAY)
        GROUP BY day ORDER BY day DESC""").result()
    want = defaultdict(Decimal)
    for k in landed:
        if truth["unique"][k]["total"] is not None:
            want[truth["unique"][k]["timestamp"].date()] += truth["unique"][k]["total"]
    got = {(r["day"] if isinstance(r["day"], date) else date.fromisoformat(str(r["day"]))): round(Decimal(r["revenue"]), 2)
           for r in revenue}
    assert got == dict(want)
    pages = client.query(f"""
        SELECT JSON_VALUE(context, '$.page.url') AS page_url, COUNT(*) AS views
        FROM `test-proj.datafly_events.events`
        WHERE type = 'page' AND timestamp >= TIMESTAMP_SUB({FIXED_NOW}, INTERVAL 7 DAY)
        GROUP BY page_url ORDER BY views DESC LIMIT 20""").result()
    want_pages = defaultdict(int)
    for k in landed:
        if truth["unique"][k]["type"] == "page":
            want_pages[truth["unique"][k]["page_url"]] += 1
    assert {r["page_url"]: r["views"] for r in pages} == dict(want_pages)


def test_seed_body_validates_as_is(tmp_path, capsys):
    (tmp_path / "seed.json").write_bytes(SEED_BODY)
    assert validate.main([str(tmp_path / "seed.json")]) == 0
    assert "..." not in capsys.readouterr().out  # the (placeholder) key is never printed


def test_fail_fast_on_missing_dataset_table_and_bad_schema(bq_server, tmp_path, capsys):
    client = bq_client(bq_server.url)
    client.create_dataset("test-proj.checks", exists_ok=True)
    client.create_table(bigquery.Table("test-proj.checks.wrong", schema=[
        bigquery.SchemaField("event_id", "INT64"), bigquery.SchemaField("type", "STRING")]))
    lines, _ = generate(n=5, seed=1, tenants=1, bad=False, source_id="src_abc123")
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    denied = FaultProxy(bq_server.url, allow=lambda method, path: False).start()
    cases = [({"dataset": "no_such_dataset"}, "dataset test-proj.no_such_dataset does not exist"),
             ({"dataset": "checks", "endpoint_url": denied.url}, "access to dataset test-proj.checks denied"),
             ({"dataset": "checks", "table": "missing"}, "does not exist: set create_table"),
             ({"dataset": "checks", "table": "wrong"}, "column event_id is INT64, expected STRING")]
    for override, message in cases:
        (tmp_path / "i.json").write_bytes(orjson.dumps([integration(bq_server.url, **override)]))
        assert deliver.run([f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}", RUNNER]) == 2
        assert message in capsys.readouterr().err
    denied.stop()


def test_service_account_by_env_reference(bq_server, tmp_path, monkeypatch, caplog):
    """The key from ``env:``: google-auth signs a JWT grant with it (token endpoint of the suite's own)
    and the rows land; neither the key nor its id reaches the logs or the summary."""
    from tests.servers.oauth import TokenServer

    tokens = TokenServer()
    sa = tokens.service_account(key_id="kid-bq-0123456789")
    monkeypatch.setenv("BQ_SA_JSON", orjson.dumps(sa).decode())
    bq_client(bq_server.url).create_dataset("test-proj.sa_check", exists_ok=True)
    config = integration(bq_server.url, dataset="sa_check", create_table=True, service_account_json="env:BQ_SA_JSON")
    (tmp_path / "i.json").write_bytes(orjson.dumps([config]))
    lines, truth = generate(n=30, seed=5, tenants=1, bad=False, source_id="src_abc123")
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    caplog.set_level(logging.DEBUG)
    try:
        assert deliver.run([f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
                            f"--summary={tmp_path / 's.json'}", f"--dead_letter={tmp_path / 'dead'}", RUNNER]) == 0
    finally:
        tokens.stop()
    assert tokens.jwt_grants >= 1
    rows = list(bq_client(bq_server.url).query("SELECT COUNT(*) n FROM `test-proj.sa_check.events`").result())
    assert rows[0]["n"] == sum(1 for v in truth["unique"].values() if v["consented"])
    text = caplog.text + (tmp_path / "s.json").read_text()
    assert "PRIVATE KEY" not in text and "kid-bq-0123456789" not in text


def test_key_never_logged(bq_server, tmp_path, caplog, capsys):
    secret_key = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nNOTAKEY\\n", "client_email": "x@y"}'
    (tmp_path / "i.json").write_bytes(orjson.dumps([integration(bq_server.url, service_account_json=secret_key)]))
    lines, _ = generate(n=5, seed=1, tenants=1, bad=False, source_id="src_abc123")
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    caplog.set_level(logging.DEBUG)
    assert deliver.run([f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}", RUNNER]) == 2
    err = capsys.readouterr().err
    assert "not a usable service account key" in err
    assert "NOTAKEY" not in err and "NOTAKEY" not in caplog.text


@pytest.fixture(scope="module")
def load_run(bq_server, tmp_path_factory):
    """method file_loads, twice; the first load job is refused as invalid so its batch falls back to
    streaming inserts, where the stand-in rejects every row (to see exactly which rows took that path)."""
    root = tmp_path_factory.mktemp("bqload")
    client = bq_client(bq_server.url)
    client.create_dataset("test-proj.loads", exists_ok=True)
    lines, truth = generate(n=700, seed=22, tenants=2, source_id="src_abc123")
    consented = {k for k, v in truth["unique"].items() if v["consented"]}
    stand_in = InsertAllStandIn(consented)
    proxy = FaultProxy(bq_server.url, rewrite=stand_in).start()
    proxy.add_rule(method="POST", path_contains="/upload/bigquery/", status=400, code="invalid", times=1)
    config = integration(proxy.url, dataset="loads", create_table=True, method="file_loads", batch_size=150)
    (root / "i.json").write_bytes(orjson.dumps([config]))
    (root / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    summaries, tables = [], []
    try:
        for n in range(2):
            argv = [f"--integrations={root / 'i.json'}", f"--input={root / 'in.ndjson'}",
                    f"--dead_letter={root / 'dead'}", f"--summary={root / f's{n}.json'}", RUNNER]
            assert deliver.run(argv) == 0
            summaries.append(orjson.loads((root / f"s{n}.json").read_bytes())["integrations"]["bigquery_events"])
            tables.append([r["event_id"] for r in client.query("SELECT event_id FROM `test-proj.loads.events`").result()])
    finally:
        proxy.stop()
    return {"root": root, "client": client, "consented": consented, "stand_in": stand_in, "summaries": summaries,
            "tables": tables}


def test_file_loads_exactly_once_across_reruns(load_run):
    client = load_run["client"]
    first_ids, second_ids = load_run["tables"]
    streamed = {e for req in load_run["stand_in"].requests for _, e in req}
    assert streamed and len(streamed) <= 150  # one batch fell back to streaming inserts (run 1 only)
    assert len(first_ids) == len(set(first_ids)) and set(first_ids) == load_run["consented"] - streamed
    # run 2: that batch's load now succeeds; everything else is already there and is not inserted again
    assert len(second_ids) == len(set(second_ids)) and set(second_ids) == load_run["consented"]
    first, second = load_run["summaries"]
    assert first["balanced"] and first["rows_inserted"] == len(first_ids)
    assert second["balanced"] and second["rows_inserted"] == len(streamed)
    assert second["rows_already_present"] == len(first_ids)
    tables = [t.table_id for t in client.list_tables("test-proj.loads")]
    assert tables == ["events"]  # staging tables are dropped


def test_file_loads_fallback_rows_are_dead_letters(load_run):
    records = [orjson.loads(line) for p in (load_run["root"] / "dead").glob("*.ndjson")
               for line in p.read_bytes().splitlines()]
    sink = {r["event_id"] for r in records if r.get("integration_id") == "bigquery_events"}
    streamed = {e for req in load_run["stand_in"].requests for _, e in req}
    assert sink == streamed


def test_merge_sql_parses_as_bigquery():
    import sqlglot

    from transforms.sinks.bigquery import create_table_ddl, merge_sql

    sql = merge_sql("p-1.d.events", "p-1.d._beamhouse_load_ab12", 1, 2)
    assert sqlglot.parse_one(sql, read="bigquery").key == "merge"
    assert sqlglot.parse_one(create_table_ddl("p-1", "d", "events"), read="bigquery").key == "create"
    with pytest.raises(ValueError):
        merge_sql("p.d.events`; DROP TABLE x; --", "p.d.s", 1, 2)


def test_storage_write_builds_up_to_the_java_expansion_step():
    """What can be checked offline: the Python side builds (schema conversion included, JSON columns sent
    as text) and stops at Beam's Java expansion service, which needs its jar from Maven Central."""
    import apache_beam as beam

    from transforms.integrations import validate_integrations
    from transforms.sinks.bigquery import WriteEventsToBigQuery

    (integ,), errors = validate_integrations([integration("http://127.0.0.1:1", method="storage_write")])
    assert errors == []
    p = beam.Pipeline(runner="FnApiRunner")
    try:
        _ = p | beam.Create([]) | WriteEventsToBigQuery(integ)
    except RuntimeError as exc:
        assert "expansion-service" in str(exc)  # offline: the jar cannot be fetched


def test_ddl_printer(tmp_path, capsys):
    from pipelines import ddl

    items = [integration("http://127.0.0.1:1"), {"source_id": "s", "vendor": "duckdb", "name": "WH",
                                                 "config": {"path": str(tmp_path / "w.duckdb")}}]
    (tmp_path / "i.json").write_bytes(orjson.dumps(items))
    assert ddl.main([f"--integrations={tmp_path / 'i.json'}"]) == 0
    out = capsys.readouterr().out
    assert "CREATE TABLE `test-proj.datafly_events.events`" in out and "CLUSTER BY type, event;" in out
    assert 'CREATE TABLE IF NOT EXISTS "events"' in out
