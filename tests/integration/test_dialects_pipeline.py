"""Every input dialect through the whole job on the FnApiRunner: SDK-captured Snowplow, CloudEvents,
OTLP and Segment records in one file land once each, partitioned by data type, in a lake and DuckDB."""
import duckdb
import orjson
import pyarrow.dataset as ds
import pytest

from pipelines import deliver
from tests.servers import capture
from transforms.dialects import cloudevents

RUNNER = "--runner=FnApiRunner"


@pytest.fixture(scope="module")
def lines():
    with capture.CaptureServer() as server:
        snowplow = [r.body for r in capture.snowplow_requests(server)]
        snowplow_get = [r.path.encode() for r in capture.snowplow_requests(server, "get")]
        otlp = capture.otlp_json(capture.otel_export(server).body)
        segment = [r.body for r in capture.segment_batch(server)]
    _, structured, binary, _ = capture.cloudevents_messages()
    resent = cloudevents.binary_to_structured(binary.headers, binary.body, "ce-")  # the same event again
    return snowplow + snowplow_get + [otlp, structured.body, resent] + segment + snowplow[:1]


def test_mixed_dialects_land_once_each_by_type(tmp_path, lines):
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    integrations = [
        {"source_id": "src", "vendor": "files", "name": "Lake", "config": {
            "path": str(tmp_path / "lake"), "file_format": "parquet",
            "partition_by": "type={dialect}/tenant_id={tenant_id}/{date}"}},
        {"source_id": "src", "vendor": "duckdb", "name": "Warehouse", "config": {
            "path": str(tmp_path / "wh.duckdb"), "table": "events", "consent": {"require": ["analytics"]}}},
    ]
    (tmp_path / "i.json").write_bytes(orjson.dumps(integrations))
    argv = [f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
            f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}", RUNNER]
    assert deliver.run(argv) == 0
    rows = ds.dataset(tmp_path / "lake", format="parquet", partitioning="hive").to_table().to_pylist()
    by_type = {}
    for row in rows:
        by_type.setdefault(row["type"], []).append(row)
    # 3 Snowplow POST + 3 GET, 3 OTel records, 1 CloudEvent (sent twice), 2 Segment; the repeated POST dedups
    assert {k: len(v) for k, v in by_type.items()} == {"snowplow": 6, "otel": 3, "cloudevents": 1, "segment": 2}
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids))
    assert {r["tenant_id"] for r in rows} == {"acme"}
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    consented = sorted(r[0] for r in con.execute("SELECT event FROM events").fetchall())
    # consent: the Snowplow purchase (no consent entity), the OTel cart view and plain log carry none
    assert consented == sorted(["Page Viewed", "add", "Page Viewed", "add", "order.placed",
                                "com.acme.order.created", "Order Completed", "Identify"])
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["balanced"] and summary["input"] == 14 and summary["duplicates"] == 2
    assert not list((tmp_path / "dead").rglob("*.ndjson"))


def test_http_captures_traces_and_metrics_through_the_command(tmp_path):
    """CloudEvents in HTTP captures (structured, and binary mode: ce-* headers and the data as body), OTLP
    traces (spans and span events) and OTLP metrics from the real SDKs, through python -m pipelines.deliver:
    captures and spans are delivered, metrics are one dead letter that names the signal."""
    from tests.guarantees.invariants import check_conservation
    from tests.guarantees.invariants import deliver as run_command

    with capture.CaptureServer() as server:
        traces = [capture.otlp_json(r.body, "traces") for r in capture.otel_trace_export(server)]
        metrics = capture.otlp_json(capture.otel_metrics_export(server).body, "metrics")
    _, structured, binary, _ = capture.cloudevents_messages()
    http = [orjson.dumps({"method": "POST", "path": "/events", "headers": dict(m.headers),
                          "body": m.body.decode()}) for m in (structured, binary)]
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(http + traces + [metrics]) + b"\n")
    (tmp_path / "i.json").write_bytes(orjson.dumps([{"source_id": "src", "vendor": "files", "name": "Lake",
                                                     "config": {"path": str(tmp_path / "lake"),
                                                                "file_format": "parquet"}}]))
    done = run_command(f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
                       f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    check_conservation(summary, input_events=2 + 3 + 1)  # 2 captures, 2 spans + 1 span event, 1 metrics export
    rows = ds.dataset(tmp_path / "lake", format="parquet", partitioning="hive").to_table().to_pylist()
    events = sorted(r["event"] for r in rows)
    # the two captures carry the same CloudEvent: one delivered, one duplicate
    assert events == sorted(["com.acme.order.created", "POST /checkout", "charge card", "payment.authorized"])
    assert summary["duplicates"] == 1
    spans = {r["event"]: r for r in rows}
    server_span = spans["POST /checkout"]
    props = orjson.loads(server_span["properties"])
    assert props["span.kind"] == "server" and props["duration_ms"] == 9.0 and props["http.status_code"] == 201
    context = orjson.loads(server_span["context"])
    assert context["otel"]["signal"] == "trace" and context["app_id"] == "checkout" and context["tenant_id"] == "acme"
    assert server_span["user_id"] == "user-1" and str(server_span["timestamp"]).startswith("2026-01-29 14:30:00.123456")
    child = orjson.loads(spans["charge card"]["context"])["otel"]
    assert child["parent_span_id"] == context["otel"]["span_id"] and child["trace_id"] == context["otel"]["trace_id"]
    event = spans["payment.authorized"]
    assert orjson.loads(event["properties"])["amount"] == 12.5
    assert orjson.loads(event["context"])["consent"] == {"analytics": True}
    dead = [orjson.loads(x) for p in (tmp_path / "dead").rglob("*.ndjson") for x in p.read_bytes().splitlines()]
    assert [d["reason"] for d in dead] == ["unsupported_signal"] and "metrics" in dead[0]["error"]


def test_a_record_of_another_shape_is_named_in_its_dead_letter(tmp_path):
    """Declared OTLP, given something else: the dead letter says what it is, not 'a object is not a otel record'."""
    from tests.guarantees.invariants import deliver as run_command

    _, structured, _, _ = capture.cloudevents_messages()
    (tmp_path / "in.ndjson").write_bytes(b'{"foo": 1, "bar": 2}\n' + structured.body + b"\n")
    (tmp_path / "i.json").write_bytes(orjson.dumps([{"source_id": "src", "vendor": "files", "name": "Lake",
                                                     "config": {"path": str(tmp_path / "lake")}}]))
    done = run_command(f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
                       f"--dead_letter={tmp_path / 'dead'}", "--input_dialect=otel")
    assert done.returncode == 1  # nothing from the input yielded an event
    errors = sorted(orjson.loads(x)["error"] for p in (tmp_path / "dead").rglob("*.ndjson")
                    for x in p.read_bytes().splitlines())
    assert errors == ["a CloudEvent record is not an OpenTelemetry (OTLP JSON) export record (--input_dialect otel)",
                      "an object with keys bar, foo is not an OpenTelemetry (OTLP JSON) export record "
                      "(--input_dialect otel)"]
