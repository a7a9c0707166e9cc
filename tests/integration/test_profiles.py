"""Importer profiles end to end on the FnApiRunner: Hackle's and Statsig's Parquet contracts read back with
pyarrow, and Statsig's finished_date signal only once a day is complete."""
from decimal import Decimal

import orjson
import pyarrow.parquet as pq

from pipelines import deliver
from tests.servers.capture import CaptureServer
from transforms.profiles import hackle, statsig

RUNNER = "--runner=FnApiRunner"


def event(n, ts, received, user="u1", event="Order Completed", **props):
    return orjson.dumps({"type": "track", "event": event, "userId": user, "anonymousId": f"anon-{user}",
                         "messageId": f"m-{n}", "timestamp": ts, "receivedAt": received,
                         "properties": props,
                         "traits": {"Plan": "pro", "plan": "basic", "Grade": "GOLD"},
                         "context": {"device": {"id": "dev-1", "manufacturer": "samsung", "model": "SM-S908N"},
                                     "os": {"name": "Android", "version": "12"}, "app": {"version": "6.9.0"},
                                     "locale": "ko", "session_id": "s-1"}})


def run(root, lines, config, name="Out"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    (root / "i.json").write_bytes(orjson.dumps([{"source_id": "src", "vendor": "files", "name": name,
                                                 "config": config}]))
    argv = [f"--integrations={root / 'i.json'}", f"--input={root / 'in.ndjson'}", f"--dead_letter={root / 'dead'}",
            f"--summary={root / 'summary.json'}", RUNNER]
    assert deliver.run(argv) == 0
    return orjson.loads((root / "summary.json").read_bytes())


def dead_reasons(root):
    return sorted(orjson.loads(line)["reason"] for p in (root / "dead").rglob("*.ndjson")
                  for line in p.read_bytes().splitlines() if line)


def test_hackle_parquet_matches_the_contract(tmp_path):
    lines = [event(1, "2026-01-29T14:30:00.123456Z", "2026-01-29T14:30:01Z", revenue=12.3456789, Product_ID="p1"),
             event(2, "2026-01-30T01:00:00Z", "2026-01-30T01:00:01Z", user="u2", event="View")]
    out = tmp_path / "lake"
    run(tmp_path / "a", lines, {"path": str(out), "profile": "hackle"})
    files = sorted(out.rglob("*.parquet"))
    assert [f.parent.name for f in files] == ["2026-01-29", "2026-01-30"]  # stored by day
    table = pq.read_table(files[0])
    assert table.schema.equals(hackle.SCHEMA)
    row = table.to_pylist()[0]
    assert row["event_key"] == "Order Completed" and row["insert_id"] == hackle.insert_id("m-1")
    assert row["ts"].isoformat() == "2026-01-29T14:30:00.123000+00:00"  # sub-millisecond truncated
    assert row["metric_value"] == Decimal("12.345678")
    assert dict(row["identifiers"]) == {"id": "anon-u1", "user_id": "u1", "device_id": "dev-1", "session_id": "s-1"}
    assert dict(row["event_properties"]) == {"revenue": "12.3456789", "product_id": "p1"}
    # "plan" (already lower case) keeps the key; "Plan" is kept under plan__2, never dropped
    assert dict(row["user_properties"]) == {"plan": "basic", "plan__2": "pro", "grade": "GOLD"}
    assert dict(row["platform_properties"])["osname"] == "Android"
    assert dict(row["platform_properties"])["appversion"] == "6.9.0"
    for r in table.to_pylist():
        for column in ("identifiers", "event_properties", "user_properties", "platform_properties"):
            assert all(k == k.lower() for k, _ in r[column])
    second = pq.read_table(files[1]).to_pylist()[0]
    assert second["metric_value"] == Decimal("0.000000")  # no revenue: 0.0
    before = {f: f.read_bytes() for f in files}
    run(tmp_path / "b", lines, {"path": str(out), "profile": "hackle"})  # a re-run: same files, same ids
    assert {f: f.read_bytes() for f in sorted(out.rglob("*.parquet"))} == before


STATSIG = {"profile": "statsig", "statsig": {"allowed_lateness_seconds": 3600, "metrics": [
    {"name": "purchases", "event": "Order Completed", "aggregate": "count"},
    {"name": "revenue", "event": "Order Completed", "aggregate": "sum", "property": "revenue"},
    {"name": "aov", "event": "Order Completed", "aggregate": "ratio", "property": "revenue", "id_type": "stable_id"}]}}


def test_statsig_days_are_signalled_only_when_complete(tmp_path):
    out = tmp_path / "statsig"
    config = {"path": str(out), **STATSIG}
    # 2026-01-29 05:00Z is 2026-01-28 21:00 in Los Angeles: it belongs to the 28th.
    first = [event(1, "2026-01-29T05:00:00Z", "2026-01-29T05:00:01Z", revenue=10),
             event(2, "2026-01-29T06:00:00Z", "2026-01-29T06:00:01Z", revenue=5.5),
             event(3, "2026-01-29T07:00:00Z", "2026-01-29T07:00:01Z", user="u2", revenue=1),
             event(4, "2026-01-29T20:00:00Z", "2026-01-29T20:00:01Z", revenue=2),  # the 29th, still open
             event(5, "2026-01-29T21:00:00Z", "2026-01-29T21:00:00Z", event="x" * 200)]  # too long for Statsig
    summary = run(tmp_path / "r1", first, config)
    assert summary["integrations"]["out"]["partitions_completed"] == 1
    assert sorted(p.parent.name for p in (out / "events").rglob("*.parquet")) == ["2026-01-28", "2026-01-29"]
    # The 28th ended 08:00Z on the 29th; + 1 h lateness = 09:00Z, passed by the data (20:00Z). The 29th has not.
    assert sorted(p.parent.name for p in (out / "signals").rglob("*.parquet")) == ["2026-01-28"]
    signal = pq.read_table(next((out / "signals").rglob("*.parquet")))
    assert signal.schema.equals(statsig.SIGNALS_SCHEMA) and signal.to_pylist() == [{"finished_date": "2026-01-28"}]
    events = pq.read_table(next((out / "events" / "2026-01-28").glob("*.parquet")))
    assert events.schema.equals(statsig.EVENTS_SCHEMA)
    row = events.to_pylist()[0]
    assert row["event_name"] == "Order_Completed" and row["timestamp"] == 1769662800000
    assert orjson.loads(row["user"]) == {"userID": "u1", "customIDs": {"stableID": "anon-u1"},
                                         "custom": {"Plan": "pro", "plan": "basic", "Grade": "GOLD"}}
    assert orjson.loads(row["event_metadata"]) == {"revenue": "10"}
    metrics = pq.read_table(next((out / "metrics" / "2026-01-28").glob("*.parquet")))
    assert metrics.schema.equals(statsig.METRICS_SCHEMA)
    got = {(r["metric_name"], r["unit_id"]): (r["metric_value"], r["numerator"], r["denominator"])
           for r in metrics.to_pylist()}
    assert got == {("purchases", "u1"): (2.0, None, None), ("purchases", "u2"): (1.0, None, None),
                   ("revenue", "u1"): (15.5, None, None), ("revenue", "u2"): (1.0, None, None),
                   ("aov", "anon-u1"): (None, 15.5, 2.0), ("aov", "anon-u2"): (None, 1.0, 1.0)}
    assert {r["date"] for r in metrics.to_pylist()} == {"2026-01-28"}
    assert not (out / "metrics" / "2026-01-29").exists()
    assert dead_reasons(tmp_path / "r1") == ["profile_rejected"]
    # Next run: a late event of the finished 28th is a dead letter (Statsig would never read it); data of
    # the 31st moves the watermark past the 29th (and the empty 30th), which is finished now.
    second = [event(6, "2026-01-29T07:30:00Z", "2026-01-31T10:00:00Z"),
              event(7, "2026-01-31T18:00:00Z", "2026-01-31T18:00:01Z", revenue=3)]
    run(tmp_path / "r2", second, config)
    assert dead_reasons(tmp_path / "r2") == ["day_already_finished"]
    assert sorted(p.parent.name for p in (out / "signals").rglob("*.parquet")) == ["2026-01-28", "2026-01-29"]
    metrics29 = pq.read_table(next((out / "metrics" / "2026-01-29").glob("*.parquet"))).to_pylist()
    assert {(r["metric_name"], r["metric_value"]) for r in metrics29 if r["metric_name"] != "aov"} == {
        ("purchases", 1.0), ("revenue", 2.0)}


def test_statsig_mark_data_ready_call(tmp_path, monkeypatch):
    monkeypatch.setenv("STATSIG_TEST_KEY", "secret-statsig-server-key")
    with CaptureServer() as server:
        config = {"path": str(tmp_path / "out"), "profile": "statsig", "statsig": {
            "signal": "mark_data_ready", "api_key": "env:STATSIG_TEST_KEY", "allowed_lateness_seconds": 0,
            "mark_data_ready_url": f"http://127.0.0.1:{server.port}/v1/mark_data_ready"}}
        lines = [event(1, "2026-01-29T05:00:00Z", "2026-01-29T05:00:01Z"),
                 event(2, "2026-01-29T09:00:00Z", "2026-01-29T09:00:01Z")]
        run(tmp_path / "r", lines, config)
        calls = [r for r in server.requests if r.path == "/v1/mark_data_ready"]
    headers = {k.lower(): v for k, v in calls[0].headers.items()}
    assert len(calls) == 1 and headers["statsig-api-key"] == "secret-statsig-server-key"
    assert orjson.loads(calls[0].body) == {"timestamp": 1769673600, "type": "metrics"}  # end of the 28th, Pacific
    assert not (tmp_path / "out" / "signals").exists()
    assert b"secret-statsig-server-key" not in (tmp_path / "r" / "summary.json").read_bytes()
