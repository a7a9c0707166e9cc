"""Streaming from the Pub/Sub emulator (started by the session fixture) on the BundleBasedDirectRunner, in
real time: published events, with re-sends, arrive once each in the lake and the DuckDB warehouse, in
batches of at most batch_size, the last one flushed by the batch interval."""
from __future__ import annotations

import gzip
import sys
import time
from pathlib import Path

import apache_beam as beam
import duckdb
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import deliver
from tests.eventgen import generate
from transforms.integrations import validate_integrations
from transforms.parse import ParseSettings
from transforms.streaming import ReadStream

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from publish_pubsub import publish

pytestmark = pytest.mark.timeout(600)
PROJECT = "test-proj"


@pytest.fixture
def subscription(pubsub_server, monkeypatch):
    from google.cloud import pubsub_v1

    host = pubsub_server.url[len("http://"):]
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, "events-topic")
    sub = subscriber.subscription_path(PROJECT, "beamhouse-sub")
    # The quickstart's publisher creates the topic and the subscription.
    publish(topic, [], create_subscription="beamhouse-sub")
    yield publisher, topic, sub
    subscriber.delete_subscription(subscription=sub)
    publisher.delete_topic(topic=topic)


def test_published_events_reach_the_lake_and_duckdb_once(tmp_path, subscription):
    publisher, topic, sub = subscription
    lines, truth = generate(n=120, seed=71, tenants=2, bad=False, source_id="src")
    want = {k for k, v in truth["unique"].items() if v["consented"]}
    integrations, errors = validate_integrations([
        {"source_id": "src", "vendor": "files", "name": "Lake", "config": {
            "path": str(tmp_path / "lake"), "file_format": "json", "batch_size": 25, "batch_interval_seconds": 3,
            "consent": {"require": ["analytics"]}}},
        {"source_id": "src", "vendor": "duckdb", "name": "Warehouse", "config": {
            "path": str(tmp_path / "wh.duckdb"), "batch_size": 25, "batch_interval_seconds": 3,
            "consent": {"require": ["analytics"]}}}])
    assert not errors
    settings = ParseSettings(source_id="src", consent_purposes=("analytics",))
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    p = beam.Pipeline(options=options)
    deliver.build_pipeline(p, [], integrations, settings, str(tmp_path / "dead"), stream={
        "source": ReadStream(subscription=sub), "dedup_window_seconds": 3600, "allowed_lateness_seconds": 10 * 86400})
    result = p.run()
    try:
        (tmp_path / "events.ndjson").write_bytes(b"\n".join(lines) + b"\n")  # with exact re-sends of some events
        assert publish(topic, [str(tmp_path / "events.ndjson")]) == len(lines)
        deadline = time.monotonic() + 240
        landed: list[str] = []
        while time.monotonic() < deadline:
            landed = [orjson.loads(x)["event_id"] for f in (tmp_path / "lake").rglob("*.json.gz")
                      for x in gzip.decompress(f.read_bytes()).splitlines()] if (tmp_path / "lake").exists() else []
            if len(landed) >= len(want):
                break
            time.sleep(1)
        time.sleep(5)  # anything extra (a duplicate) would show up by now
        files = list((tmp_path / "lake").rglob("*.json.gz"))
        landed = [orjson.loads(x)["event_id"] for f in files for x in gzip.decompress(f.read_bytes()).splitlines()]
    finally:
        result.cancel()
    assert sorted(landed) == sorted(want)
    assert all(len(gzip.decompress(f.read_bytes()).splitlines()) <= 25 for f in files)
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    assert sorted(r[0] for r in con.execute("SELECT event_id FROM events").fetchall()) == sorted(want)
