"""Retention plans (pure) and their application as lifecycle rules on moto and the GCS emulator."""
from __future__ import annotations

import boto3
import orjson
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from pipelines import retention
from transforms.integrations import validate_integrations
from transforms.sinks import s3 as s3_sink

ARCHIVE = {"archive_after_days": 30, "archive_storage_class": "GLACIER", "delete_after_days": 365}


def s3_integration(endpoint, **config):
    return {"source_id": "s", "vendor": "s3", "name": "Lake", "config": {
        "bucket": "retention-lake", "prefix": "events/", "region": "us-east-1", "endpoint_url": endpoint,
        "access_key_id": "x", "secret_access_key": "x",
        "partition_by": "tenant_id={tenant_id}/{yyyy}/{MM}/{dd}/{HH}", **config}}


def validated(items):
    integrations, errors = validate_integrations(items)
    assert errors == []
    return integrations


def test_plan_rules_for_integration_tenants_and_routes():
    integ = s3_integration("http://127.0.0.1:1", retention=ARCHIVE, routing={
        "by_type": {"otel": {"bucket": "otel-lake"}},
        "tenants": {"acme": {"retention": {"delete_after_days": 90}},
                    "globex": {"bucket": "globex-lake", "prefix": "g/",
                               "retention": {"archive_after_days": 7, "archive_storage_class": "DEEP_ARCHIVE"}},
                    "initech": {"kms_key_id": "k"}}})
    rules, errors = retention.plan(validated([integ]))
    assert errors == []
    got = {(r.bucket, r.prefix): (r.archive_after_days, r.archive_storage_class, r.delete_after_days) for r in rules}
    assert got == {("retention-lake", "events/"): (30, "GLACIER", 365),
                   ("otel-lake", "events/"): (30, "GLACIER", 365),
                   ("retention-lake", "events/tenant_id=acme/"): (None, None, 90),
                   ("globex-lake", "g/"): (7, "DEEP_ARCHIVE", None)}
    assert s3_sink.s3_rule(rules[0])["Filter"] == {"Prefix": "events/"}


def test_plan_refuses_what_a_bucket_cannot_do():
    longer = s3_integration("http://127.0.0.1:1", retention=ARCHIVE,
                            routing={"tenants": {"acme": {"retention": {"delete_after_days": 4000}}}})
    wrong_class = s3_integration("http://127.0.0.1:1", retention={"archive_after_days": 3,
                                                                  "archive_storage_class": "COLDLINE"})
    _, errors = retention.plan(validated([longer]))
    assert errors and "longer retention needs the tenant's own bucket or prefix" in errors[0]
    _, errors = retention.plan(validated([wrong_class]))
    assert errors and "storage class COLDLINE" in errors[0]
    # a tenant retention without a prefix of its own and a layout not starting with the tenant
    _, errors = validate_integrations([s3_integration("http://127.0.0.1:1", partition_by="{date}",
                                                      routing={"tenants": {"acme": {"retention": ARCHIVE}}})])
    assert errors and "own bucket or prefix" in errors[0]


def test_apply_on_moto_keeps_other_rules(moto_server, tmp_path, capsys):
    s3 = boto3.client("s3", endpoint_url=moto_server.url, aws_access_key_id="x", aws_secret_access_key="x",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="retention-lake")
    foreign = {"ID": "someone-else", "Filter": {"Prefix": "other/"}, "Status": "Enabled", "Expiration": {"Days": 3}}
    s3.put_bucket_lifecycle_configuration(Bucket="retention-lake", LifecycleConfiguration={"Rules": [foreign]})
    integ = s3_integration(moto_server.url, retention=ARCHIVE,
                           routing={"tenants": {"acme": {"retention": {"delete_after_days": 90}}}})
    path = tmp_path / "i.json"
    path.write_bytes(orjson.dumps([integ]))
    assert retention.main([f"--integrations={path}"]) == 0  # plan only
    assert "plan only" in capsys.readouterr().out
    assert s3.get_bucket_lifecycle_configuration(Bucket="retention-lake")["Rules"] == [foreign]
    for _ in range(2):  # applying twice gives the same rules
        assert retention.main([f"--integrations={path}", "--apply"]) == 0
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket="retention-lake")["Rules"]}
    assert len(rules) == 3 and rules["someone-else"]["Expiration"] == {"Days": 3}
    ours = sorted((r["Filter"]["Prefix"], r.get("Transitions"), r["Expiration"]) for i, r in rules.items()
                  if i.startswith("beamhouse-lake-"))
    assert ours == [("events/", [{"Days": 30, "StorageClass": "GLACIER"}], {"Days": 365}),
                    ("events/tenant_id=acme/", None, {"Days": 90})]


def test_apply_on_gcs_emulator(gcs_server, tmp_path):
    client = storage.Client(project="test-proj", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs_server.url})
    client.create_bucket("retention-gcs")
    integ = {"source_id": "s", "vendor": "gcs", "name": "G", "config": {
        "bucket": "retention-gcs", "prefix": "events/", "endpoint_url": gcs_server.url,
        "retention": {"archive_after_days": 30, "archive_storage_class": "ARCHIVE", "delete_after_days": 400}}}
    path = tmp_path / "i.json"
    path.write_bytes(orjson.dumps([integ]))
    assert retention.main([f"--integrations={path}", "--apply"]) == 0
    rules = list(client.get_bucket("retention-gcs").lifecycle_rules)
    assert {"action": {"type": "SetStorageClass", "storageClass": "ARCHIVE"},
            "condition": {"age": 30, "matchesPrefix": ["events/"]}} in rules
    assert {"action": {"type": "Delete"}, "condition": {"age": 400, "matchesPrefix": ["events/"]}} in rules


@pytest.mark.parametrize("bad", [{"archive_after_days": 30}, {"delete_after_days": 10, "archive_after_days": 20,
                                                             "archive_storage_class": "GLACIER"}, {}])
def test_retention_model_rejects_inconsistent(bad):
    _, errors = validate_integrations([s3_integration("http://127.0.0.1:1", retention=bad)])
    assert errors and errors[0].startswith("$[0].config.retention")


def test_bundled_object_store_example_is_valid():
    from pathlib import Path

    from transforms.integrations import load_integrations

    integrations, errors = load_integrations(str(Path(__file__).resolve().parents[2] / "examples" /
                                                 "integrations-object-stores.json"))
    assert errors == [] and [i.vendor for i in integrations] == ["s3", "s3", "gcs"]
    rules, errors = retention.plan(integrations)
    assert errors == [] and len(rules) == 4
