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
