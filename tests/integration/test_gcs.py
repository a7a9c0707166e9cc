"""GCS delivery end to end on the FnApiRunner against gcp-storage-emulator (through the suite's launcher,
which adds GCS's create-only precondition and CMEK behaviour) with the fault proxy in front of it."""
from __future__ import annotations

import hashlib
import re
from collections import Counter

import orjson
import pyarrow.dataset as pads
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from pipelines import deliver
from tests.conftest import GCS_UNUSABLE_KEY
from tests.eventgen import generate
from tests.servers.faultproxy import FaultProxy

RUNNER = "--runner=FnApiRunner"
DEFAULT_KEY = "projects/test-proj/locations/global/keyRings/ring/cryptoKeys/lake-key"
T2_KEY = "projects/test-proj/locations/global/keyRings/ring/cryptoKeys/tenant-2"


def gcs_client(server):
    return storage.Client(project="test-proj", credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": server.url})


def blobs(client, bucket):
    return {b.name: b for b in client.list_blobs(bucket)}


@pytest.fixture(scope="module")
def gcs_lake(gcs_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("gcs")
    client = gcs_client(gcs_server)
    for name in ("gcs-lake", "gcs-tenant2"):
        client.create_bucket(name)
    proxy = FaultProxy(gcs_server.url).start()
    proxy.add_rule(method="POST", path_contains="/upload/", status=503, code="backendError", times=2)
    proxy.add_rule(method="POST", path_contains="/upload/", status=503, code="backendError", times=2,
                   after_forward=True)
    integration = {"source_id": "src_gcs", "vendor": "gcs", "name": "GCS lake", "config": {
        "bucket": "gcs-lake", "prefix": "events/", "endpoint_url": proxy.url, "kms_key_name": DEFAULT_KEY,
        "file_format": "parquet", "batch_size": 50, "partition_by": "date={date}/hour={HH}/min={min30}",
        "routing": {"tenants": {"tenant-1": {"kms_key_name": GCS_UNUSABLE_KEY},
                                "tenant-2": {"bucket": "gcs-tenant2", "prefix": "", "kms_key_name": T2_KEY}}}}}
    (root / "i.json").write_bytes(orjson.dumps([integration]))
    lines, truth = generate(n=600, seed=9, tenants=3, source_id="src_gcs")
    (root / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    argv = [f"--integrations={root / 'i.json'}", f"--input={root / 'in.ndjson'}", f"--dead_letter={root / 'dead'}",
            f"--summary={root / 'summary.json'}", RUNNER]
    try:
        assert deliver.run(argv) == 0
        before = {b: {n: o.generation for n, o in blobs(client, b).items()} for b in ("gcs-lake", "gcs-tenant2")}
        assert deliver.run(argv[:-2] + [f"--summary={root / 'summary2.json'}", RUNNER]) == 0
        after = {b: {n: o.generation for n, o in blobs(client, b).items()} for b in ("gcs-lake", "gcs-tenant2")}
    finally:
        proxy.stop()
    return {"root": root, "truth": truth, "client": client, "before": before, "after": after, "proxy": proxy,
            "summary": orjson.loads((root / "summary.json").read_bytes()),
            "summary2": orjson.loads((root / "summary2.json").read_bytes())}


def test_layout_keys_and_contents(gcs_lake):
    client, truth = gcs_lake["client"], gcs_lake["truth"]
    pattern = re.compile(r"^(events/)?date=\d{4}-\d\d-\d\d/hour=\d\d/min=(00-30|30-60)/events-\d+-[0-9a-f]{16}\.parquet$")
    mirror = gcs_lake["root"] / "mirror"
    by_tenant = Counter()
    for bucket, key in (("gcs-lake", DEFAULT_KEY), ("gcs-tenant2", T2_KEY)):
        for name, blob in blobs(client, bucket).items():
            if "/_reports/" in f"/{name}":
                continue
            if "/_ledger/" in f"/{name}":  # the delivery ledger (event ids): under the route's key too
                assert blob.kms_key_name == key, (name, blob.kms_key_name)
                continue
            assert pattern.match(name), name
            assert blob.kms_key_name == key, (name, blob.kms_key_name)
            path = mirror / bucket / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.bucket(bucket).blob(name).download_as_bytes())
    for bucket in ("gcs-lake", "gcs-tenant2"):
        table = pads.dataset(str(mirror / bucket), format="parquet", partitioning="hive").to_table()
        for row in table.select(["event_id", "timestamp", "date", "hour", "min"]).to_pylist():
            ts = row["timestamp"]
            start = int(row["min"][:2])
            assert str(row["date"]) == ts.strftime("%Y-%m-%d") and int(row["hour"]) == ts.hour
            assert start <= ts.minute < start + 30
            by_tenant[truth["unique"][row["event_id"]]["tenant"]] += 1
    want = Counter(v["tenant"] for v in truth["unique"].values())
    assert by_tenant == {"tenant-0": want["tenant-0"], "tenant-2": want["tenant-2"]}  # tenant-1: key unusable


def test_unusable_key_fails_closed(gcs_lake):
    records = [orjson.loads(line) for p in (gcs_lake["root"] / "dead").glob("*.ndjson")
               for line in p.read_bytes().splitlines()]
    sink = [r for r in records if r.get("integration_id") == "gcs_lake"]
    t1 = {k for k, v in gcs_lake["truth"]["unique"].items() if v["tenant"] == "tenant-1"}
    assert {r["event_id"] for r in sink} == t1 and len(sink) == len(t1)
    assert all(r["reason"] == "encryption_key_unusable" and "payload" not in r for r in sink)
    assert gcs_lake["summary"]["integrations"]["gcs_lake"]["balanced"]


def test_retries_and_rerun_never_overwrite(gcs_lake):
    statuses = Counter(s for _, _, s in gcs_lake["proxy"].seen)
    assert statuses[503] == 4 and statuses[412] >= 1  # a lost response was answered 412 on retry
    assert gcs_lake["after"] == gcs_lake["before"]  # same objects, same generations: nothing rewritten
    e = gcs_lake["summary2"]["integrations"]["gcs_lake"]
    assert "files" not in e and e["already_delivered"] == e["delivered"] > 0  # the ledger: nothing cut again


def test_reports_match_objects(gcs_lake):
    client = gcs_lake["client"]
    for bucket, prefix in (("gcs-lake", "events/"), ("gcs-tenant2", "")):
        objects = blobs(client, bucket)
        listed = {}
        for name, blob in objects.items():
            if name.startswith(prefix + "_reports/"):
                assert blob.kms_key_name == (DEFAULT_KEY if bucket == "gcs-lake" else T2_KEY)
                for f in orjson.loads(client.bucket(bucket).blob(name).download_as_bytes())["files"]:
                    listed[f["path"]] = f
        data = {n[len(prefix):] for n in objects if not n.startswith((prefix + "_reports/", prefix + "_ledger/"))}
        assert set(listed) == data
        for rel, f in listed.items():
            body = client.bucket(bucket).blob(prefix + rel).download_as_bytes()
            assert hashlib.sha256(body).hexdigest() == f["sha256"] and len(body) == f["bytes"]
            # tenant-2 has its own route, so its files name it; tenant-0 uses the shared route
            assert f.get("tenant") == ("tenant-2" if bucket == "gcs-tenant2" else None)


def test_service_account_by_reference(gcs_server, tmp_path, caplog):
    """A service-account key given as ``file:`` is used for real: google-auth signs a JWT grant with it
    and exchanges it at the key's token_uri (a token endpoint of the test's own), and the key never
    reaches the logs."""
    import json
    import logging

    from tests.servers.oauth import TokenServer

    server = TokenServer()
    sa = server.service_account()
    (tmp_path / "sa.json").write_text(json.dumps(sa))
    gcs_client(gcs_server).create_bucket("gcs-sa")
    integration = {"source_id": "src_gcs", "vendor": "gcs", "name": "SA", "config": {
        "bucket": "gcs-sa", "prefix": "", "endpoint_url": gcs_server.url,
        "service_account_json": f"file:{tmp_path / 'sa.json'}"}}
    (tmp_path / "i.json").write_bytes(orjson.dumps([integration]))
    lines, truth = generate(n=40, seed=4, tenants=1, bad=False, source_id="src_gcs")
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    caplog.set_level(logging.DEBUG)
    try:
        assert deliver.run([f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
                            f"--dead_letter={tmp_path / 'dead'}", RUNNER]) == 0
    finally:
        server.stop()
    assert server.jwt_grants >= 1
    assert [n for n in blobs(gcs_client(gcs_server), "gcs-sa") if "_reports/" not in n]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "BEGIN PRIVATE KEY" not in text and "kid-0123456789abcdef" not in text


def test_completion_markers_on_gcs(gcs_server, tmp_path):
    """The completion bookkeeping on GCS (list, read, create-only writes, delete): hourly _SUCCESS markers
    only once received data passed the hour's end plus the lateness, across two runs."""
    client = gcs_client(gcs_server)
    client.create_bucket("gcs-complete")
    integration = {"source_id": "src_gcs", "vendor": "gcs", "name": "Hourly", "config": {
        "bucket": "gcs-complete", "prefix": "lake/", "endpoint_url": gcs_server.url,
        "partition_by": "date={date}/hour={HH}", "completion_marker": "_SUCCESS", "completion_lateness_seconds": 600}}
    (tmp_path / "i.json").write_bytes(orjson.dumps([integration]))

    def run(name, events):
        lines = [orjson.dumps({"type": "track", "event": "E", "userId": "u", "messageId": f"m-{n}",
                               "timestamp": ts, "receivedAt": received}) for n, ts, received in events]
        (tmp_path / f"{name}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
        assert deliver.run([f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / name}.ndjson",
                            f"--dead_letter={tmp_path / name / 'dead'}", RUNNER]) == 0
        dead = [orjson.loads(x) for p in (tmp_path / name).rglob("*.ndjson") for x in p.read_bytes().splitlines()]
        names = blobs(client, "gcs-complete")
        return sorted((d["reason"], d["event_id"]) for d in dead), names

    dead, names = run("r1", [(1, "2026-01-29T05:00:00Z", "2026-01-29T05:00:01Z"),
                             (2, "2026-01-29T08:20:00Z", "2026-01-29T08:30:00Z")])
    assert dead == [] and sorted(n for n in names if n.endswith("_SUCCESS")) == ["lake/date=2026-01-29/hour=05/_SUCCESS"]
    pending = [orjson.loads(names[n].download_as_bytes()) for n in names if n.startswith("lake/_pending/")]
    assert [p["partition"] for p in pending] == ["date=2026-01-29/hour=08"]
    assert pending[0]["end_us"] == 1769677200_000000  # 09:00Z

    dead, names = run("r2", [(3, "2026-01-29T05:10:00Z", "2026-01-29T09:30:00Z"),  # hour 05 is complete
                             (4, "2026-01-29T09:30:00Z", "2026-01-29T09:30:00Z")])
    assert dead == [("partition_complete", "m-3")]
    assert sorted(n for n in names if n.endswith("_SUCCESS")) == [
        "lake/date=2026-01-29/hour=05/_SUCCESS", "lake/date=2026-01-29/hour=08/_SUCCESS"]
    manifest = orjson.loads(names["lake/date=2026-01-29/hour=08/_SUCCESS"].download_as_bytes())
    assert [f"lake/date=2026-01-29/hour=08/{f}" for f in manifest["files"]] == sorted(
        n for n in names if n.startswith("lake/date=2026-01-29/hour=08/") and not n.endswith("_SUCCESS"))
    assert [orjson.loads(names[n].download_as_bytes())["partition"] for n in names
            if n.startswith("lake/_pending/")] == ["date=2026-01-29/hour=09"]  # hour 08's was deleted
