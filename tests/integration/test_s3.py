"""S3 delivery end to end on the FnApiRunner against moto server (started by the session fixture), with
the suite's fault proxy in front of it for throttling, dropped responses and an IAM-policy stand-in.

Ends with the delivery invariants: every consented unique event exactly once, reports match the
objects, one version per key after retries and a re-run, tenants isolated with their own keys."""
from __future__ import annotations

import gzip
import hashlib
import logging
import re
from collections import Counter, defaultdict
from pathlib import Path

import boto3
import duckdb
import orjson
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest

from pipelines import deliver
from tests.eventgen import generate
from tests.servers.faultproxy import FaultProxy
from transforms.partitioning import decode_path_value

RUNNER = "--runner=FnApiRunner"
SEED_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SEED_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EVIL_TENANTS = ["../../etc", "a/b", "_hidden", ".."]


def seed_s3_config(endpoint: str) -> dict:
    """Seed 000's S3 integration body, unchanged except for the local endpoint."""
    return {"source_id": "src_abc123", "vendor": "s3", "name": "S3 Event Archive", "enabled": True,
            "config": {"bucket": "my-analytics-bucket", "prefix": "datafly/events/", "region": "us-east-1",
                       "access_key_id": SEED_KEY_ID, "secret_access_key": SEED_SECRET,
                       "file_format": "json", "compression": "gzip", "batch_size": 1000,
                       "batch_interval_seconds": 300, "endpoint_url": endpoint}}


def client(server, service="s3", region="us-east-1"):
    return boto3.client(service, endpoint_url=server.url, aws_access_key_id="x", aws_secret_access_key="x",
                        region_name=region)


def all_keys(s3, bucket: str, ledger: bool = False) -> list[str]:
    """The bucket's keys; without the delivery ledger's bookkeeping objects (``_ledger/``) unless ``ledger``."""
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", []) if ledger or "_ledger/" not in o["Key"]]
    return keys


def versions_per_key(s3, bucket: str) -> Counter:
    counts = Counter()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            counts[v["Key"]] += 1
    return counts


def reports(s3, bucket: str, prefix: str) -> list[dict]:
    return [orjson.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read())
            for k in all_keys(s3, bucket) if k.startswith(prefix + "_reports/")]


def least_privilege(method: str, path: str) -> bool:
    """The seed's IAM policy: s3:PutObject on the prefix and s3:GetBucketLocation; nothing else."""
    if method == "GET" and path.endswith("?location"):
        return True
    return method == "PUT" and path.startswith("/my-analytics-bucket/datafly/events/")


def write_input(root: Path, lines: list[bytes]) -> str:
    (root / "in").mkdir(exist_ok=True)
    (root / "in" / "events.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    return str(root / "in" / "*.ndjson")


def evil_lines() -> list[bytes]:
    return [orjson.dumps({"type": "track", "event": "Evil", "anonymousId": "e", "messageId": f"evil-{n}",
                          "timestamp": "2026-01-29T10:00:00Z", "receivedAt": "2026-01-29T10:00:01Z",
                          "context": {"tenant_id": t, "app_id": "app0", "consent": {"analytics": True}}})
            for n, t in enumerate(EVIL_TENANTS)]


@pytest.fixture(scope="module")
def lake(moto_server, tmp_path_factory):
    """Buckets, KMS keys and one delivery run with four S3 integrations, then a second run."""
    root = tmp_path_factory.mktemp("s3")
    s3, s3_eu = client(moto_server), client(moto_server, region="eu-west-1")
    kms, kms_eu = client(moto_server, "kms"), client(moto_server, "kms", "eu-west-1")
    for bucket in ("my-analytics-bucket", "tenant-lake", "tenant2-lake", "exports"):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3_eu.create_bucket(Bucket="lake-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3_eu.put_bucket_versioning(Bucket="lake-eu", VersioningConfiguration={"Status": "Enabled"})
    meta = {name: kms.create_key(Description=name)["KeyMetadata"] for name in ("default", "t1", "t3")}
    kms.disable_key(KeyId=meta["t3"]["KeyId"])
    keys = {name: m["Arn"] for name, m in meta.items()}
    keys["eu"] = kms_eu.create_key(Description="eu")["KeyMetadata"]["Arn"]

    # The seed integration goes through a proxy that throttles, drops responses after the write and
    # refuses everything the seed's IAM policy does not allow.
    proxy = FaultProxy(moto_server.url, allow=least_privilege).start()
    proxy.add_rule(method="PUT", path_contains="/hour=", status=503, code="SlowDown", times=3)
    proxy.add_rule(method="PUT", path_contains="/hour=", status=500, code="InternalError", times=2,
                   after_forward=True)
    integrations = [
        seed_s3_config(proxy.url),
        {"source_id": "src_abc123", "vendor": "s3", "name": "Tenant lake", "config": {
            "bucket": "tenant-lake", "prefix": "", "region": "us-east-1", "endpoint_url": moto_server.url,
            "access_key_id": "env:TEST_S3_KEY_ID", "secret_access_key": "env:TEST_S3_SECRET",
            "file_format": "parquet", "batch_size": 25, "kms_key_id": keys["default"],
            "partition_by": "tenant_id={tenant_id}/app_id={app_id}/{yyyy}/{MM}/{dd}/{HH}",
            "file_name": "data_{yyyy}_{MM}_{dd}_{HH}_{mm}_{ss}",
            "consent": {"require": ["analytics"]},
            "quota": {"daily_bytes": 10**12, "tenants": {"tenant-1": 1000}, "action": "warn"},
            "routing": {
                "unknown_tenant": "dead_letter",
                "residency": {"tenants": {"tenant-0": "eu-west-1"},
                              "regions": {"eu-west-1": {"bucket": "lake-eu", "kms_key_id": keys["eu"]}}},
                "tenants": {"tenant-1": {"kms_key_id": keys["t1"]},
                            "tenant-2": {"bucket": "tenant2-lake", "prefix": "t2/"},
                            "tenant-3": {"kms_key_id": keys["t3"]}}}}},
        {"source_id": "src_abc123", "vendor": "s3", "name": "Quarter hours", "config": {
            "bucket": "exports", "prefix": "myFolder/myExport/data", "region": "us-east-1",
            "endpoint_url": moto_server.url, "access_key_id": "x", "secret_access_key": "x",
            "file_format": "csv", "csv_separator": ";", "partition_by": "date={date}/hour={HH}/min={min15}",
            "routing": {"by_type": {"segment": {"prefix": "myFolder/segment/data"}}}}},
        {"source_id": "src_abc123", "vendor": "s3", "name": "Daily", "config": {
            "bucket": "exports", "prefix": "daily", "region": "us-east-1", "endpoint_url": moto_server.url,
            "access_key_id": "x", "secret_access_key": "x", "file_format": "parquet", "compression": "zstd",
            "partition_by": "{date}", "partition_time": "received_at"}},
        {"source_id": "src_abc123", "vendor": "s3", "name": "App first", "config": {
            "bucket": "exports", "prefix": "apps", "region": "us-east-1", "endpoint_url": moto_server.url,
            "access_key_id": "x", "secret_access_key": "x", "file_format": "json", "compression": "none",
            "partition_by": "app_id={app_id}/tenant_id={tenant_id}/{yyyy}/{MM}/{dd}/{HH}",
            "file_name": "data_{yyyy}_{MM}_{dd}_{HH}_{mm}_{ss}"}},
    ]
    lines, truth = generate(n=1200, seed=5, tenants=4, source_id="src_abc123")
    lines += evil_lines()
    argv = [f"--integrations={root / 'integrations.json'}", f"--input={write_input(root, lines)}",
            f"--dead_letter={root / 'dead'}", f"--summary={root / 'summary.json'}", RUNNER]
    (root / "integrations.json").write_bytes(orjson.dumps(integrations))
    env = pytest.MonkeyPatch()
    env.setenv("TEST_S3_KEY_ID", "tenant-lake-key-id")
    env.setenv("TEST_S3_SECRET", "tenant-lake-secret-value")
    try:
        assert deliver.run(argv) == 0
        summary = orjson.loads((root / "summary.json").read_bytes())
        buckets = ("my-analytics-bucket", "tenant-lake", "tenant2-lake", "exports", "lake-eu")
        before = {b: versions_per_key(s3, b) for b in buckets}
        assert deliver.run(argv[:-2] + [f"--summary={root / 'summary2.json'}", RUNNER]) == 0
        summary2 = orjson.loads((root / "summary2.json").read_bytes())
        after = {b: versions_per_key(s3, b) for b in buckets}
    finally:
        env.undo()
        proxy.stop()
    return {"root": root, "truth": truth, "summary": summary, "summary2": summary2, "s3": s3, "keys": keys,
            "before": before, "after": after, "proxy": proxy}


def consented(truth) -> dict:
    return {k: v for k, v in truth["unique"].items() if v["consented"]}


def read_ndjson_gz(s3, bucket, key) -> list[dict]:
    return [orjson.loads(line) for line in gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).splitlines()]


def test_seed_body_keys_and_contents(lake):
    s3, truth = lake["s3"], lake["truth"]
    keys = all_keys(s3, "my-analytics-bucket")
    data = [k for k in keys if "/_reports/" not in k]
    pattern = re.compile(r"^datafly/events/year=\d{4}/month=\d\d/day=\d\d/hour=\d\d/events-\d{10}-[0-9a-f]{16}\.json\.gz$")
    assert data and all(pattern.match(k) for k in data), data[:3]
    rows = [r for k in data for r in read_ndjson_gz(s3, "my-analytics-bucket", k)]
    ids = [r["event_id"] for r in rows]
    expected = set(truth["unique"]) | {f"evil-{n}" for n in range(len(EVIL_TENANTS))}
    assert len(ids) == len(set(ids)) and set(ids) == expected  # no consent rule: every unique event once
    for r, key in ((r, k) for k in data for r in read_ndjson_gz(s3, "my-analytics-bucket", k)):
        ts = r["timestamp"]
        assert f"year={ts[:4]}/month={ts[5:7]}/day={ts[8:10]}/hour={ts[11:13]}/" in key
        break


def test_least_privilege_and_faults(lake):
    seen = lake["proxy"].seen
    methods = Counter(m for m, _, _ in seen)
    assert set(methods) <= {"PUT", "GET", "HEAD"}, methods
    assert all(p.endswith("?location") or ("list-type=2" in p and status == 403) for m, p, status in seen
               if m == "GET")  # the ledger's listing was refused: the run delivered by names and said so
    # the re-run could not read what the names it found hold: refused, so it claims no digest for them
    assert all(status == 403 for m, _, status in seen if m == "HEAD")
    for summary in (lake["summary"], lake["summary2"]):
        assert summary["integrations"]["s3_event_archive"]["ledger_unavailable"] > 0
    statuses = Counter(s for _, _, s in seen)
    assert statuses[503] == 3 and statuses[500] == 2  # the injected faults happened and were retried
    # re-run: every PutObject answered 412 and nothing was listed or read
    assert statuses[412] >= len([k for k in all_keys(lake["s3"], "my-analytics-bucket") if "/_reports/" not in k])


def test_one_version_per_key_after_retries_and_rerun(lake):
    for bucket, counts in lake["after"].items():
        assert counts, bucket
        assert set(counts.values()) == {1}, (bucket, [k for k, n in counts.items() if n > 1][:3])
        assert counts == lake["before"][bucket]  # the second run changed nothing
    for iid, e in lake["summary2"]["integrations"].items():
        if e.get("ledger_unavailable"):  # PutObject only: the re-run goes by names, and finds every file there
            assert e["files"] == e["files_already_present"], iid
            assert e.get("tenants") and all(u["bytes_written"] == 0 for u in e["tenants"].values()), iid
        else:  # the ledger: nothing is cut into files again
            assert "files" not in e and e["already_delivered"] == e["delivered"] > 0, iid


def test_reports_match_objects(lake):
    s3 = lake["s3"]
    for bucket, prefix in (("my-analytics-bucket", "datafly/events/"), ("tenant-lake", ""),
                           ("tenant2-lake", "t2/"), ("lake-eu", ""), ("exports", "daily/"), ("exports", "apps/")):
        listed = {}
        for report in reports(s3, bucket, prefix):
            for f in report["files"]:
                assert f["path"] not in listed
                listed[f["path"]] = f
        objects = {k[len(prefix):] for k in all_keys(s3, bucket)
                   if k.startswith(prefix) and not k[len(prefix):].startswith("_reports/")}
        assert objects, bucket
        assert set(listed) == objects, bucket
        for rel, f in listed.items():
            body = s3.get_object(Bucket=bucket, Key=prefix + rel)["Body"].read()
            assert len(body) == f["bytes"] and hashlib.sha256(body).hexdigest() == f["sha256"]


def test_seed003_layout_routing_and_keys(lake):
    s3, keys, truth = lake["s3"], lake["keys"], lake["truth"]
    layout = re.compile(r"^(?P<prefix>(t2/)?)tenant_id=(?P<t>[^/]+)/app_id=(?P<a>[^/]+)/(?P<y>\d{4})/(?P<m>\d\d)/"
                        r"(?P<d>\d\d)/(?P<h>\d\d)/data_(?P=y)_(?P=m)_(?P=d)_(?P=h)_\d\d_\d\d(_\d+)?\.parquet$")
    # tenant-2's own bucket still uses the integration's key; residency brings the region's own key
    expected_key = {"tenant-lake": keys["default"], "lake-eu": keys["eu"], "tenant2-lake": keys["default"]}
    seen_tenants = defaultdict(set)
    for bucket in ("tenant-lake", "lake-eu", "tenant2-lake"):
        for key in all_keys(s3, bucket):
            if "_reports/" in key:
                continue
            m = layout.match(key)
            assert m, key
            tenant = decode_path_value(m["t"])
            seen_tenants[bucket].add(tenant)
            head = s3.head_object(Bucket=bucket, Key=key)
            want = keys["t1"] if tenant == "tenant-1" else expected_key[bucket]
            assert head.get("SSEKMSKeyId") == want, (key, head.get("SSEKMSKeyId"))
    # residency, tenant bucket, tenant key in the shared bucket; tenant-3's key is disabled: nowhere
    assert seen_tenants == {"tenant-lake": {"tenant-1"}, "lake-eu": {"tenant-0"}, "tenant2-lake": {"tenant-2"}}
    dataset = pads.dataset("tenant-lake", filesystem=pafs.S3FileSystem(
        endpoint_override=lake["s3"].meta.endpoint_url, access_key="x", secret_key="x", scheme="http",
        region="us-east-1"), format="parquet", partitioning="hive", exclude_invalid_files=True)
    table = dataset.to_table(columns=["event_id", "tenant_id", "timestamp"])
    want_ids = {k for k, v in consented(truth).items() if v["tenant"] == "tenant-1"}
    assert sorted(table["event_id"].to_pylist()) == sorted(want_ids)
    assert set(table["tenant_id"].to_pylist()) == {"tenant-1"}


def test_unknown_and_unusable_tenants_dead_lettered(lake):
    records = [orjson.loads(line) for p in (lake["root"] / "dead").glob("*.ndjson")
               for line in p.read_bytes().splitlines()]
    mine = [r for r in records if r.get("integration_id") == "tenant_lake"]
    by_reason = Counter(r["reason"] for r in mine)
    truth = lake["truth"]
    t3 = {k for k, v in consented(truth).items() if v["tenant"] == "tenant-3"}
    assert by_reason["unknown_tenant"] == len(EVIL_TENANTS)
    assert by_reason["encryption_key_unusable"] == len(t3)
    for r in mine:
        if r["reason"] == "encryption_key_unusable":
            assert "payload" not in r and "payload_base64" not in r and r["event_id"] in t3
    s = lake["summary"]["integrations"]["tenant_lake"]
    assert s["balanced"] and s["sink_dead_letters"] == {"encryption_key_unusable": len(t3),
                                                         "unknown_tenant": len(EVIL_TENANTS)}
    # traversal attempts never became keys anywhere
    for bucket in ("my-analytics-bucket", "tenant-lake", "exports"):
        for key in all_keys(lake["s3"], bucket):
            assert ".." not in key.split("/") and "/_hidden" not in key


def test_usage_and_quota(lake):
    s = lake["summary"]["integrations"]["tenant_lake"]
    usage = s["tenants"]
    truth = consented(lake["truth"])
    for tenant in ("tenant-0", "tenant-1", "tenant-2"):
        assert usage[tenant]["events"] == sum(1 for v in truth.values() if v["tenant"] == tenant)
        assert usage[tenant]["bytes"] == usage[tenant]["bytes_written"] > 0
    assert "tenant-3" not in usage
    assert s["quota"] == {"action": "warn", "exceeded": [
        {"tenant": "tenant-1", "bytes_written": usage["tenant-1"]["bytes_written"], "daily_bytes": 1000}]}
    # bytes per tenant equal the objects' sizes
    s3 = lake["s3"]
    sizes = sum(s3.head_object(Bucket="tenant2-lake", Key=k)["ContentLength"]
                for k in all_keys(s3, "tenant2-lake") if "_reports/" not in k)
    assert sizes == usage["tenant-2"]["bytes"]


def test_seed002_quarter_hours_and_daily(lake):
    s3, truth = lake["s3"], lake["truth"]
    keys = [k for k in all_keys(s3, "exports") if "_reports/" not in k]
    quarter = [k for k in keys if k.startswith("myFolder/")]
    daily = [k for k in keys if k.startswith("daily/")]
    q = re.compile(r"^myFolder/segment/data/date=\d{4}-\d\d-\d\d/hour=\d\d/min=(00-15|15-30|30-45|45-60)/"
                   r"events-\d+-[0-9a-f]{16}\.csv\.gz$")
    assert quarter and all(q.match(k) for k in quarter), quarter[:3]
    assert daily and all(re.match(r"^daily/\d{4}-\d\d-\d\d/events-\d+-[0-9a-f]{16}\.parquet$", k) for k in daily)
    # every event sits in the quarter of its timestamp, and DuckDB reads the CSV back
    mirror = lake["root"] / "mirror"
    for k in quarter:
        path = mirror / k
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s3.get_object(Bucket="exports", Key=k)["Body"].read())
    con = duckdb.connect()
    rows = con.execute(f"""SELECT event_id, "timestamp", date, hour, min FROM read_csv('{mirror}/**/*.csv.gz',
                           delim=';', header=true, hive_partitioning=true)""").fetchall()
    assert len(rows) == len(truth["unique"]) + len(EVIL_TENANTS)
    for _event_id, ts, date, hour, minute in rows:
        start = int(str(minute)[:2])
        assert str(date) == ts.strftime("%Y-%m-%d") and int(hour) == ts.hour and start <= ts.minute < start + 15


def test_app_first_layout_encodes_hostile_tenants(lake):
    s3, truth = lake["s3"], lake["truth"]
    layout = re.compile(r"^apps/app_id=(?P<a>[^/]+)/tenant_id=(?P<t>[^/]+)/(?P<y>\d{4})/(?P<m>\d\d)/(?P<d>\d\d)/"
                        r"(?P<h>\d\d)/data_(?P=y)_(?P=m)_(?P=d)_(?P=h)_\d\d_\d\d(_\d+)?\.json$")
    found = Counter()
    for key in all_keys(s3, "exports"):
        if not key.startswith("apps/") or "/_reports/" in key:
            continue
        m = layout.match(key)
        assert m, key
        assert all(part not in ("", ".", "..") and not part.startswith(("_", ".")) for part in key.split("/"))
        for line in s3.get_object(Bucket="exports", Key=key)["Body"].read().splitlines():
            row = orjson.loads(line)
            found[(decode_path_value(m["a"]), decode_path_value(m["t"]))] += 1
            assert row["context"]["tenant_id"] == decode_path_value(m["t"])
    want = Counter((v["app"], v["tenant"]) for v in truth["unique"].values())
    want.update(("app0", t) for t in EVIL_TENANTS)
    assert found == want


def test_permanent_failure_fails_run_without_report(moto_server, tmp_path):
    s3 = client(moto_server)
    s3.create_bucket(Bucket="failing-bucket")
    proxy = FaultProxy(moto_server.url).start()
    proxy.add_rule(method="PUT", path_contains="/hour=", status=403, code="AccessDenied", times=10**6)
    config = seed_s3_config(proxy.url)
    config["config"]["bucket"] = "failing-bucket"
    (tmp_path / "integrations.json").write_bytes(orjson.dumps([config]))
    lines, _ = generate(n=50, seed=2, tenants=1, bad=False)
    argv = [f"--integrations={tmp_path / 'integrations.json'}", f"--input={write_input(tmp_path, lines)}",
            f"--dead_letter={tmp_path / 'dead'}", RUNNER]
    try:
        assert deliver.run(argv) == 1
    finally:
        proxy.stop()
    assert all_keys(s3, "failing-bucket") == []  # no report lists data that is not there


def test_preflight_fails_fast(moto_server, tmp_path, capsys):
    config = seed_s3_config(moto_server.url)
    config["config"]["bucket"] = "no-such-bucket"
    config["config"]["secret_access_key"] = "env:BEAMHOUSE_TEST_UNSET_SECRET"
    (tmp_path / "i.json").write_bytes(orjson.dumps([config]))
    lines, _ = generate(n=5, seed=2, tenants=1, bad=False)
    argv = [f"--integrations={tmp_path / 'i.json'}", f"--input={write_input(tmp_path, lines)}", RUNNER]
    assert deliver.run(argv) == 2
    err = capsys.readouterr().err
    assert "env:BEAMHOUSE_TEST_UNSET_SECRET is not set" in err
    config["config"]["secret_access_key"] = SEED_SECRET
    (tmp_path / "i.json").write_bytes(orjson.dumps([config]))
    assert deliver.run(argv) == 2
    err = capsys.readouterr().err
    assert "bucket 'no-such-bucket' does not exist" in err and SEED_SECRET not in err


def test_no_secret_in_debug_logs_errors_or_outputs(moto_server, tmp_path, caplog):
    s3 = client(moto_server)
    s3.create_bucket(Bucket="secret-check")
    config = seed_s3_config(moto_server.url)
    config["config"]["bucket"] = "secret-check"
    (tmp_path / "i.json").write_bytes(orjson.dumps([config]))
    lines, _ = generate(n=30, seed=3, tenants=1)
    argv = [f"--integrations={tmp_path / 'i.json'}", f"--input={write_input(tmp_path, lines)}",
            f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}", RUNNER]
    caplog.set_level(logging.DEBUG)
    assert deliver.run(argv) == 0
    assert any(r.name.startswith("botocore") for r in caplog.records)  # DEBUG logging really was on
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Credential=***/" in text or "Authorization" not in text  # the header was logged, redacted
    outputs = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != "i.json"]
    outputs += [s3.get_object(Bucket="secret-check", Key=k)["Body"].read()
                for k in all_keys(s3, "secret-check", ledger=True)]
    for secret in (SEED_SECRET, SEED_KEY_ID):
        assert secret not in text
        assert all(secret.encode() not in blob for blob in outputs)


def test_default_credential_chain_and_files_vendor_on_s3(moto_server, tmp_path, monkeypatch):
    """Keys omitted: boto3's default chain (here the environment) is used; a ``files`` destination on an
    ``s3://`` path uses the same conditional-write storage."""
    s3 = client(moto_server)
    s3.create_bucket(Bucket="chain-bucket")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "chain-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.url)  # for the files vendor, which has no endpoint key
    items = [{"source_id": "src_abc123", "vendor": "s3", "name": "Chain", "config": {
                 "bucket": "chain-bucket", "prefix": "vendor/", "region": "us-east-1", "endpoint_url": moto_server.url}},
             {"source_id": "src_abc123", "vendor": "files", "name": "Files on S3", "config": {
                 "path": "s3://chain-bucket/files", "file_format": "parquet"}}]
    (tmp_path / "i.json").write_bytes(orjson.dumps(items))
    lines, truth = generate(n=60, seed=6, tenants=2, bad=False, source_id="src_abc123")
    argv = [f"--integrations={tmp_path / 'i.json'}", f"--input={write_input(tmp_path, lines)}",
            f"--dead_letter={tmp_path / 'dead'}", RUNNER]
    assert deliver.run(argv) == 0
    keys = all_keys(s3, "chain-bucket")
    for prefix in ("vendor/", "files/"):
        data = [k for k in keys if k.startswith(prefix) and "/_reports/" not in k]
        assert data and any(k.startswith(prefix + "_reports/") for k in keys)
    table = pads.dataset("chain-bucket/files", filesystem=pafs.S3FileSystem(
        endpoint_override=moto_server.url, access_key="x", secret_key="x", scheme="http", region="us-east-1"),
        format="parquet", partitioning="hive", exclude_invalid_files=True).to_table(columns=["event_id", "year"])
    assert sorted(table["event_id"].to_pylist()) == sorted(truth["unique"])


def test_statsig_days_and_completion_markers_on_s3(moto_server, tmp_path):
    """Completion reads back what it wrote (list, get and delete in the bucket): Statsig's metrics and day
    signal, and a _SUCCESS marker per hour, appear on S3 only once received data passed the end plus the
    lateness; the bookkeeping markers end up as ``_complete/`` only; a late event is a dead letter."""
    import pyarrow.parquet as pq

    s3 = client(moto_server)
    s3.create_bucket(Bucket="complete-bucket")
    base = {k: v for k, v in seed_s3_config(moto_server.url)["config"].items()
            if k not in ("file_format", "compression", "prefix")}
    base["bucket"] = "complete-bucket"
    items = [{"source_id": "src_abc123", "vendor": "s3", "name": "Statsig", "config": {
                 **base, "prefix": "statsig/", "profile": "statsig", "statsig": {
                     "metrics": [{"name": "orders", "event": "Order Completed", "aggregate": "count"}]}}},
             {"source_id": "src_abc123", "vendor": "s3", "name": "Hourly", "config": {
                 **base, "prefix": "hourly/", "partition_by": "date={date}/hour={HH}",
                 "completion_marker": "_SUCCESS", "completion_lateness_seconds": 600}}]
    (tmp_path / "i.json").write_bytes(orjson.dumps(items))

    def line(n, ts, received):
        return orjson.dumps({"type": "track", "event": "Order Completed", "userId": f"u{n % 2}",
                             "messageId": f"m-{n}", "timestamp": ts, "receivedAt": received})

    def run(name, lines):
        (tmp_path / name).mkdir()
        argv = [f"--integrations={tmp_path / 'i.json'}", f"--input={write_input(tmp_path / name, lines)}",
                f"--dead_letter={tmp_path / name / 'dead'}", RUNNER]
        assert deliver.run(argv) == 0
        return sorted(orjson.loads(x)["reason"] for p in (tmp_path / name / "dead").rglob("*.ndjson")
                      for x in p.read_bytes().splitlines())

    # The 28th (Pacific) ends 08:00Z on the 29th: 08:30Z is past the end, not past the end + 1 h.
    assert run("r1", [line(1, "2026-01-29T05:00:00Z", "2026-01-29T05:00:01Z"),
                      line(2, "2026-01-29T06:00:00Z", "2026-01-29T06:00:01Z"),
                      line(3, "2026-01-29T08:20:00Z", "2026-01-29T08:30:00Z")]) == []
    keys = all_keys(s3, "complete-bucket")
    assert not [k for k in keys if "/signals/" in k or "/metrics/" in k]
    # hours 05 and 06 ended by 07:00Z (+10 min): complete; hour 08 is not
    assert sorted(k for k in keys if k.endswith("_SUCCESS")) == [
        "hourly/date=2026-01-29/hour=05/_SUCCESS", "hourly/date=2026-01-29/hour=06/_SUCCESS"]
    assert len([k for k in keys if k.startswith("hourly/_pending/")]) == 1       # hour 08 waits
    assert len([k for k in keys if k.startswith("statsig/_pending/")]) == 2      # the 28th and the 29th

    assert run("r2", [line(4, "2026-01-29T07:00:00Z", "2026-01-29T08:40:00Z"),  # joins the 28th and hour 07
                      line(5, "2026-01-29T09:30:00Z", "2026-01-29T09:30:00Z"),
                      line(6, "2026-01-29T05:30:00Z", "2026-01-29T09:30:00Z")]) == ["partition_complete"]
    keys = all_keys(s3, "complete-bucket")
    signals = [k for k in keys if k.startswith("statsig/signals/")]
    assert signals == ["statsig/signals/2026-01-28/finished_date-2026-01-28.parquet"]
    metrics_key = next(k for k in keys if k.startswith("statsig/metrics/2026-01-28/"))
    body = s3.get_object(Bucket="complete-bucket", Key=metrics_key)["Body"].read()
    metrics = pq.read_table(pa_buffer(body)).to_pylist()
    # the run's data is all written before its completion: m-6 (hour 05 already complete) is in the day
    assert sorted((r["unit_id"], r["metric_value"]) for r in metrics) == [("u0", 3.0), ("u1", 1.0)]
    marker = orjson.loads(s3.get_object(Bucket="complete-bucket",
                                        Key="hourly/date=2026-01-29/hour=05/_SUCCESS")["Body"].read())
    assert marker["files"] and all(f"hourly/date=2026-01-29/hour=05/{f}" in keys for f in marker["files"])
    pending = [orjson.loads(s3.get_object(Bucket="complete-bucket", Key=k)["Body"].read())["partition"]
               for k in keys if k.startswith("statsig/_pending/")]
    assert pending == ["events/2026-01-29"]  # the 28th's pending marker was removed once complete
    assert len([k for k in keys if k.startswith("statsig/_complete/")]) == 1
    assert sorted(k for k in keys if k.endswith("_SUCCESS")) == [
        "hourly/date=2026-01-29/hour=05/_SUCCESS", "hourly/date=2026-01-29/hour=06/_SUCCESS",
        "hourly/date=2026-01-29/hour=07/_SUCCESS", "hourly/date=2026-01-29/hour=08/_SUCCESS"]


def pa_buffer(body: bytes):
    import pyarrow as pa

    return pa.BufferReader(body)
