"""Pure parts of object-store delivery: routes, secrets, file-name templates, collision handling."""
from __future__ import annotations

import hashlib
import logging
import pickle
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from transforms import commit, partitioning, routes, secrets
from transforms.integrations import validate_integrations
from transforms.routes import Route, RouteOverride, Routing, UnknownTenant
from transforms.sinks.files.keying import partition_time_seconds
from transforms.storage import local as local_storage
from transforms.storage.local import TMP_DIR, LocalStorage

BASE = RouteOverride(bucket="lake", prefix="events/", region="us-east-1", kms_key="k-default")


def routing(**kw) -> Routing:
    return Routing.model_validate(kw)


def test_resolution_order_type_then_residency_then_tenant():
    r = routing(by_type={"otel": {"bucket": "otel-lake"}},
                residency={"tenants": {"eu1": "eu-west-1"},
                           "regions": {"eu-west-1": {"bucket": "lake-eu", "kms_key_id": "k-eu"}}},
                tenants={"eu1": {"prefix": "eu1/"}, "acme": {"kms_key_id": "k-acme"}})
    assert routes.resolve(BASE, r, "new-tenant", "segment") == Route("lake", "events/", "us-east-1", "k-default")
    assert routes.resolve(BASE, r, "new-tenant", "otel") == Route("otel-lake", "events/", "us-east-1", "k-default")
    assert routes.resolve(BASE, r, "eu1", "otel") == Route("lake-eu", "eu1/", "eu-west-1", "k-eu", "eu1")
    assert routes.resolve(BASE, r, "acme", "segment") == Route("lake", "events/", "us-east-1", "k-acme", "acme")
    assert routes.resolve(BASE, r, None, "segment").tenant is None


def test_unknown_tenant_dead_letter_mode():
    r = routing(unknown_tenant="dead_letter", tenants={"acme": {}}, residency={"tenants": {"b": "r1"}, "regions": {"r1": {}}})
    assert routes.resolve(BASE, r, "acme", None).tenant == "acme"
    assert routes.resolve(BASE, r, "b", None).region == "r1"
    for tenant in ("other", None):
        with pytest.raises(UnknownTenant):
            routes.resolve(BASE, r, tenant, None)


@pytest.mark.parametrize("bad", [
    {"by_type": {"xml": {}}},
    {"residency": {"tenants": {"a": "mars-1"}, "regions": {}}},
    {"tenants": {"a": {"bucket": "Bad_Bucket!"}}},
    {"tenants": {"a": {"prefix": "../up"}}},
    {"unknown_tenant": "drop"},
])
def test_routing_validation(bad):
    with pytest.raises(ValueError):
        Routing.model_validate(bad)


def test_route_key_round_trip():
    route = Route("b", "p/", None, "k", "t")
    assert Route.from_key(route.key()) == route


def test_prefix_normalisation():
    assert routes.normalise_prefix("datafly/events") == "datafly/events/"
    assert routes.normalise_prefix("") == ""
    for bad in ("/abs", "a//b", "a/../b", "a\\b"):
        with pytest.raises(ValueError):
            routes.normalise_prefix(bad)


def test_secret_references_masking_and_redaction(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("BH_TEST_SECRET", "s3cr3t-from-env")
    (tmp_path / "key").write_text("s3cr3t-from-file\n")
    env, file = secrets.Secret("env:BH_TEST_SECRET"), secrets.Secret(f"file:{tmp_path / 'key'}")
    inline = secrets.Secret("inline-s3cr3t")
    assert (env.get(), file.get(), inline.get()) == ("s3cr3t-from-env", "s3cr3t-from-file", "inline-s3cr3t")
    assert "inline-s3cr3t" not in repr(inline) and "inline-s3cr3t" not in str(inline)
    assert repr(env) == "Secret(env:BH_TEST_SECRET)"
    assert pickle.loads(pickle.dumps(env)) == env  # a reference stays a reference in the pipeline graph
    with pytest.raises(secrets.SecretError, match="env:BH_UNSET is not set"):
        secrets.Secret("env:BH_UNSET").get()
    secrets.install_log_redaction()
    caplog.set_level(logging.DEBUG)
    logging.getLogger("somelib").debug("header Authorization: %s / %s", "s3cr3t-from-env", "inline-s3cr3t")
    assert "s3cr3t" not in caplog.text and "***" in caplog.text


def test_config_dump_never_shows_secret_values():
    items = [{"source_id": "s", "vendor": "s3", "name": "A", "config": {
        "bucket": "bkt", "region": "us-east-1", "access_key_id": "AKIAEXAMPLEKEYID", "secret_access_key": "env:X"}}]
    (integ,), errors = validate_integrations(items)
    assert errors == []
    dumped = integ.model_dump_json()
    assert "AKIAEXAMPLEKEYID" not in dumped and "env:X" in dumped
    _, errors = validate_integrations([{**items[0], "config": {**items[0]["config"], "secret_access_key": None,
                                                               "access_key_id": "AKIAEXAMPLEKEYID"}}])
    assert errors and all("AKIAEXAMPLEKEYID" not in e for e in errors)


def test_file_templates():
    t = partitioning.parse_file_template("data_{yyyy}_{MM}_{dd}_{HH}_{mm}_{ss}")
    us = int(datetime(2026, 1, 29, 14, 30, 5, 123456, tzinfo=timezone.utc).timestamp() * 1_000_000)
    assert partitioning.render_file_name(t, us, "abc", ".parquet") == "data_2026_01_29_14_30_05.parquet"
    assert partitioning.render_file_name(t, us, "abc", ".parquet", collision=2) == "data_2026_01_29_14_30_05_2.parquet"
    assert not t.content_addressed and partitioning.parse_file_template("events-{epoch}-{id}").content_addressed
    for bad in ("_hidden-{id}", "no-placeholder", "a/b-{id}", "x-{nope}", "sp ace-{id}"):
        with pytest.raises(ValueError):
            partitioning.parse_file_template(bad)


def test_minute_ranges_and_seconds():
    assert partitioning.minute_range_labels(15) == ["00-15", "15-30", "30-45", "45-60"]
    assert partitioning.minute_range_labels(30) == ["00-30", "30-60"]
    t = partitioning.parse_template("date={date}/hour={HH}/min={min15}")
    assert t.fields == ("_min15",)
    ts = pa.chunked_array([pa.array([1769697005123456], pa.timestamp("us", tz="UTC"))])
    import pyarrow.compute as pc
    assert pc.strftime(partition_time_seconds(ts), format="%S").to_pylist() == ["05"]


class MemoryStorage:
    """A storage with object-store semantics (create-only, metadata), in memory."""

    def __init__(self):
        self.objects = {}

    def put_if_absent(self, relative, data, metadata):
        if relative in self.objects:
            return False
        self.objects[relative] = (data, dict(metadata))
        return True

    def lookup(self, relative):
        if relative not in self.objects:
            return None
        data, meta = self.objects[relative]
        return {"bytes": len(data), "sha256": meta.get(commit.META_SHA256, ""), "batch": meta.get(commit.META_BATCH)}


def test_time_named_files_take_the_next_name_on_collision_and_retries_find_theirs():
    store = MemoryStorage()
    names = lambda n: "p/data_2026_01_29_14_30_05" + (f"_{n}" if n else "") + ".parquet"  # noqa: E731
    a = commit.publish_batch(store, names, b"A", 1, batch="a", content_addressed=False)
    b = commit.publish_batch(store, names, b"B", 1, batch="b", content_addressed=False)
    assert (a["path"], a["status"]) == ("p/data_2026_01_29_14_30_05.parquet", "published")
    assert (b["path"], b["status"]) == ("p/data_2026_01_29_14_30_05_1.parquet", "published")
    again = commit.publish_batch(store, names, b"B", 1, batch="b", content_addressed=False)
    assert (again["path"], again["status"]) == (b["path"], "already_present")
    assert len(store.objects) == 2


def test_an_existing_content_addressed_file_is_reported_as_the_store_holds_it():
    # Readable: the stored size and digest, flagged when other settings wrote other bytes for these events.
    store = MemoryStorage()
    commit.publish_batch(store, lambda n: "p/x-1-abc.json.gz", b"X", 1, batch="abc", content_addressed=True)
    again = commit.publish_batch(store, lambda n: "p/x-1-abc.json.gz", b"X", 1, batch="abc", content_addressed=True)
    assert again["status"] == "already_present" and again["sha256"] == hashlib.sha256(b"X").hexdigest()
    assert "differs" not in again
    other = commit.publish_batch(store, lambda n: "p/x-1-abc.json.gz", b"Y!", 1, batch="abc", content_addressed=True)
    assert other["differs"] and other["sha256"] == hashlib.sha256(b"X").hexdigest() and other["bytes"] == 1
    assert store.objects["p/x-1-abc.json.gz"][0] == b"X"  # never rewritten

    # Not readable (an S3 PutObject-only policy): no digest claimed at all, rather than this run's.
    class NoRead(MemoryStorage):
        def lookup(self, relative):
            raise commit.LookupDenied(relative)
    store = NoRead()
    commit.publish_batch(store, lambda n: "p/x-1-abc.json.gz", b"X", 1, batch="abc", content_addressed=True)
    again = commit.publish_batch(store, lambda n: "p/x-1-abc.json.gz", b"Y!", 1, batch="abc", content_addressed=True)
    assert again["status"] == "already_present" and again["verified"] is False
    assert "sha256" not in again and "bytes" not in again


def test_time_named_collision_without_read_access_is_a_clear_error():
    class Denied(MemoryStorage):
        def lookup(self, relative):
            raise commit.LookupDenied(relative)
    store = Denied()
    commit.publish_batch(store, lambda n: "p/data.parquet", b"A", 1, batch="a", content_addressed=False)
    with pytest.raises(commit.PublishError, match="needs read access"):
        commit.publish_batch(store, lambda n: "p/data.parquet", b"B", 1, batch="b", content_addressed=False)


def test_local_time_named_collision(tmp_path):
    store = LocalStorage(str(tmp_path))
    names = lambda n: "p/data_x" + (f"_{n}" if n else "") + ".json"  # noqa: E731
    commit.publish_batch(store, names, b"A", 1, batch="a", content_addressed=False)
    second = commit.publish_batch(store, names, b"B", 1, batch="b", content_addressed=False)
    assert second["path"] == "p/data_x_1.json" and (tmp_path / "p" / "data_x_1.json").read_bytes() == b"B"


def test_local_storage_makes_folders_once_and_again_when_removed(tmp_path, monkeypatch):
    import os
    import shutil

    store = LocalStorage(str(tmp_path))
    made = []
    real = os.makedirs
    monkeypatch.setattr(local_storage.os, "makedirs", lambda p, **kw: (made.append(p), real(p, **kw))[1])
    for n in range(5):
        assert store.put_if_absent(f"a/b/f{n}", b"x", {})
    # the temp folder and the partition folder once each (makedirs itself also makes the parent "a")
    assert sorted(made) == sorted(str(tmp_path / p) for p in (TMP_DIR, "a/b", "a"))
    assert not store.put_if_absent("a/b/f0", b"y", {}) and (tmp_path / "a" / "b" / "f0").read_bytes() == b"x"
    shutil.rmtree(tmp_path / "a")  # removed underneath (e.g. by a retention job): made again
    shutil.rmtree(tmp_path / TMP_DIR)
    assert store.put_if_absent("a/b/f9", b"z", {}) and (tmp_path / "a" / "b" / "f9").read_bytes() == b"z"
    assert list((tmp_path / TMP_DIR).iterdir()) == []  # no temp file left behind


def test_apportion_sums_exactly():
    from transforms.sinks.files.writing import apportion

    assert apportion({"a": 1, "b": 1, "c": 1}, 100) == {"a": (1, 34), "b": (1, 33), "c": (1, 33)}
    shares = apportion({"a": 7, "b": 2, "(none)": 1}, 12345)
    assert sum(b for _, b in shares.values()) == 12345 and shares["a"][1] > shares["b"][1] > shares["(none)"][1]


def test_bigquery_request_chunks_respect_rows_and_bytes():
    from transforms.sinks.bigquery import SCHEMA, chunk_rows, schema_problems

    rows = [{}] * 10
    assert chunk_rows(rows, [10] * 10, max_rows=4, max_bytes=10**6) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_rows(rows, [10] * 10, max_rows=100, max_bytes=35) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert chunk_rows(rows[:2], [500, 1], max_rows=100, max_bytes=100) == [(0, 1), (1, 2)]  # an oversize row alone
    assert schema_problems(SCHEMA) == []
    assert schema_problems([(n, "STRING" if t == "JSON" else t, m) for n, t, m in SCHEMA]) == []
