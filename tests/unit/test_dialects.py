"""Snowplow, CloudEvents, OpenTelemetry and Segment-batch records, as the vendors' real SDKs send them
(captured by a local HTTP endpoint, ``tests/servers/capture.py``), through the parse stage's DoFn."""
from datetime import datetime, timezone

import orjson
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.pvalue import TaggedOutput

from tests.servers import capture
from transforms.dialects import cloudevents, snowplow
from transforms.parse import ParseSettings, _ParseBatchFn
from transforms.streaming import kafka_lines, pubsub_lines

T0_US = 1_769_697_000_123_456  # 2026-01-29T14:30:00.123456Z


def parse(lines, **kw):
    # one shard keeps the input order (rows are split by dedup shard otherwise)
    fn = _ParseBatchFn(ParseSettings(source_id="src", consent_purposes=("analytics",), shards=1, **kw))
    fn.setup()
    rows, dead = [], []
    for out in fn.process(lines):
        if isinstance(out, TaggedOutput):
            dead.append(out.value)
        else:
            rows.extend(out[1].to_pylist())
    return rows, dead


def us(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=timezone.utc)) // __import__("datetime").timedelta(microseconds=1)


@pytest.fixture(scope="module")
def server():
    with capture.CaptureServer() as srv:
        yield srv


def test_snowplow_tracker_post_and_get_map_column_by_column(server):
    for method in ("post", "get"):
        requests = capture.snowplow_requests(server, method)
        lines = [r.body if method == "post" else r.path.encode() for r in requests]
        rows, dead = parse(lines)
        assert dead == []
        params = [snowplow.tracker_records(orjson.loads(r.body))[0] if method == "post"
                  else snowplow.query_params(r.path) for r in requests]
        assert [r["event_id"] for r in rows] == [p["eid"] for p in params]
        assert [(r["type"], r["event"]) for r in rows] == [("page", "Page Viewed"), ("track", "add"),
                                                           ("track", "purchase")]
        assert {(r["anonymous_id"], r["user_id"], r["_dialect"], r["_app_id"], r["_tenant_id"]) for r in rows} == {
            ("duid-1", "user-1", "snowplow", "shop", "acme")}
        assert [us(r["timestamp"]) for r in rows] == [int(p["dtm"]) * 1000 for p in params]
        assert [us(r["sent_at"]) for r in rows] == [int(p["stm"]) * 1000 for p in params]
        page, struct, purchase = (orjson.loads(r["properties"]) for r in rows)
        assert page == {"url": "https://shop.example/p/1", "title": "Product 1", "referrer": "https://search.example/"}
        assert struct == {"category": "basket", "action": "add", "label": "sku-1", "property": "size-m", "value": 2.5}
        assert purchase == {"amount": 12.5, "Currency": "EUR"}
        # consent comes from the attached consent entity; the purchase carried none
        assert [r["_consent.analytics"] for r in rows] == [True, True, False]
        context = orjson.loads(rows[2]["context"])
        assert context["snowplow"]["event_schema"] == "iglu:com.acme/purchase/jsonschema/1-0-0"
        assert context["snowplow"]["v_tracker"].startswith("py-")  # original fields kept


def enriched_tsv(params: dict) -> str:
    """An enriched event as Snowplow Enrich writes it for a tracker payload (collector and ETL fields
    added the way Enrich adds them), in the 131-field order."""
    fields = {name: "" for name in snowplow.ENRICHED_FIELDS}
    ms = int(params["dtm"])
    stamp = lambda m: datetime.fromtimestamp(m / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]  # noqa: E731
    ue = snowplow._b64_json(params["ue_px"], "ue_px") if "ue_px" in params else None
    fields.update({
        "app_id": params["aid"], "platform": params["p"], "etl_tstamp": stamp(ms + 2000),
        "collector_tstamp": stamp(ms + 500), "dvce_created_tstamp": stamp(ms), "dvce_sent_tstamp": stamp(int(params["stm"])),
        "derived_tstamp": stamp(ms), "event": snowplow.EVENT_CODES[params["e"]], "event_id": params["eid"],
        "name_tracker": params["tna"], "v_tracker": params["tv"], "v_collector": "ssc-3.2.0-kinesis",
        "v_etl": "snowplow-enrich-kinesis-5.0.0", "user_id": params.get("uid", ""),
        "user_ipaddress": "203.0.113.9", "domain_userid": params.get("duid", ""),
        "network_userid": "5b1e0c6e-7a1a-4f5c-9d7e-2f3c4b5a6d7e", "geo_latitude": "52.52", "geo_longitude": "13.405",
        "page_url": params.get("url", ""), "page_title": params.get("page", ""), "page_referrer": params.get("refr", ""),
        "se_category": params.get("se_ca", ""), "se_action": params.get("se_ac", ""), "se_label": params.get("se_la", ""),
        "se_property": params.get("se_pr", ""), "se_value": params.get("se_va", ""),
        "contexts": orjson.dumps(snowplow._b64_json(params["cx"], "cx")).decode() if "cx" in params else "",
        "unstruct_event": orjson.dumps(ue).decode() if ue else "",
        "br_cookies": "1", "dvce_ismobile": "0", "br_viewwidth": "1280",
        "event_vendor": "com.acme" if ue else "com.google.analytics",
        "event_name": ue["data"]["schema"].split("/")[1] if ue else {"pv": "page_view", "se": "event"}[params["e"]],
        "event_format": "jsonschema", "event_version": "1-0-0",
    })
    return "\t".join(fields[name] for name in snowplow.ENRICHED_FIELDS)


def test_snowplow_enriched_tsv_and_its_json_form_agree_with_the_analytics_sdk(server):
    from snowplow_analytics_sdk.event_transformer import transform

    params = [snowplow.tracker_records(orjson.loads(r.body))[0] for r in capture.snowplow_requests(server)]
    tsv = [enriched_tsv(p) for p in params]
    json_form = [orjson.dumps(transform(line)) for line in tsv]  # the real SDK's JSON form of the same lines
    from_tsv, dead_tsv = parse([line.encode() for line in tsv])
    from_json, dead_json = parse(json_form)
    assert dead_tsv == dead_json == []
    core = ("event_id", "type", "event", "anonymous_id", "user_id", "timestamp", "received_at", "sent_at",
            "properties", "_tenant_id", "_app_id", "_dialect", "_consent.analytics")
    assert [{k: r[k] for k in core} for r in from_tsv] == [{k: r[k] for k in core} for r in from_json]
    assert [r["event_id"] for r in from_tsv] == [p["eid"] for p in params]
    assert [us(r["received_at"]) - us(r["timestamp"]) for r in from_tsv] == [500_000] * 3  # collector_tstamp
    assert [r["_dialect"] for r in from_tsv] == ["snowplow"] * 3
    # every field the TSV carried is in the context (typed as the SDK types it)
    context = orjson.loads(from_tsv[0]["context"])["snowplow"]
    assert context["geo_latitude"] == 52.52 and context["br_cookies"] is True and context["br_viewwidth"] == 1280
    short, dead = parse([b"a\tb\tc"])
    assert rows_and_reasons(short, dead) == (0, ["invalid_field"]) and "131" in dead[0]["error"]


def rows_and_reasons(rows, dead):
    return len(rows), [d["reason"] for d in dead]


def test_cloudevents_structured_binary_kafka_and_batch_are_one_event():
    event, structured, binary, kafka_message = capture.cloudevents_messages()
    lines = [structured.body,
             cloudevents.binary_to_structured(binary.headers, binary.body, "ce-"),
             cloudevents.binary_to_structured(kafka_message.headers, kafka_message.value, "ce_"),
             b"[" + structured.body + b"]"]
    rows, dead = parse(lines)
    assert dead == [] and len(rows) == 4
    assert len({orjson.dumps({k: v for k, v in r.items() if k != "received_at"}, default=str) for r in rows}) == 1
    row = rows[0]
    assert row["type"] == "track" and row["event"] == "com.acme.order.created" and row["_dialect"] == "cloudevents"
    assert us(row["timestamp"]) == T0_US and row["user_id"] == "user-1" and row["_tenant_id"] == "acme"
    assert row["_consent.analytics"] is True
    assert orjson.loads(row["properties"])["orderId"] == "o-1"
    assert orjson.loads(row["context"])["cloudevents"]["id"] == event.get_id()
    # the Pub/Sub binding: ce-* attributes and the data as the message body
    message = PubsubMessage(binary.body, {k: v for k, v in binary.headers.items()})
    assert parse(pubsub_lines(message))[0][0]["event_id"] == row["event_id"]
    assert pubsub_lines(PubsubMessage(b'{"a":1}\n{"b":2}\n', {})) == [b'{"a":1}', b'{"b":2}']
    assert parse(kafka_lines((None, kafka_message.value)))[1][0]["reason"] in ("unknown_type", "missing_identity")


def test_a_bad_cloudevent_in_a_batch_costs_only_itself():
    _, structured, _, _ = capture.cloudevents_messages()
    bad = orjson.loads(structured.body)
    del bad["source"]
    rows, dead = parse([orjson.dumps([orjson.loads(structured.body), bad])])
    assert len(rows) == 1 and [d["reason"] for d in dead] == ["invalid_field"]
    assert "source" in dead[0]["error"] and orjson.loads(dead[0]["payload"]) == bad


def test_a_cloudevent_of_another_spec_version_says_which_it_is():
    _, structured, _, _ = capture.cloudevents_messages()
    old = {**orjson.loads(structured.body), "specversion": "0.3"}
    rows, dead = parse([orjson.dumps(old)])
    assert not rows and dead[0]["error"] == """specversion is '0.3': only CloudEvents 1.0 ("1.0") is supported"""


def test_otlp_log_records_from_the_sdk(server):
    export = capture.otlp_json(capture.otel_export(server).body)
    rows, dead = parse([export])
    assert dead == []
    assert [r["event"] for r in rows] == ["order.placed", "cart.viewed", "Log Record"]
    assert [us(r["timestamp"]) for r in rows] == [T0_US, T0_US + 1_000_000, T0_US + 2_000_000]  # ns truncated
    placed = rows[0]
    assert placed["user_id"] == "user-1" and placed["_app_id"] == "checkout" and placed["_tenant_id"] == "acme"
    assert placed["_dialect"] == "otel" and placed["_consent.analytics"] is True
    assert orjson.loads(placed["properties"]) == {"user.id": "user-1", "amount": 12.5, "count": 3, "gift": True,
                                                  "tags": ["a", "b"], "consent.analytics": True,
                                                  "body": {"order_id": "o-1"}}
    context = orjson.loads(placed["context"])["otel"]
    assert context["resource"]["service.name"] == "checkout" and context["scope"]["name"] == "shop.events"
    assert rows[1]["anonymous_id"] == "dev-9" and rows[1]["_consent.analytics"] is False
    assert orjson.loads(rows[2]["properties"]) == {"body": "plain log line"}
    again, _ = parse([export])
    assert [r["event_id"] for r in again] == [r["event_id"] for r in rows]  # a re-sent export dedups
    # one bad record costs only itself
    obj = orjson.loads(export)
    obj["resourceLogs"][0]["scopeLogs"][0]["logRecords"][1]["timeUnixNano"] = "soon"
    rows, dead = parse([orjson.dumps(obj)])
    assert len(rows) == 2 and [d["reason"] for d in dead] == ["invalid_timestamp"]
    assert orjson.loads(dead[0]["payload"])["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["timeUnixNano"] == "soon"


def test_segment_batch_body_from_analytics_python(server):
    bodies = [r.body for r in capture.segment_batch(server)]
    rows, dead = parse(bodies)
    assert dead == [] and [(r["type"], r["event"]) for r in rows] == [("track", "Order Completed"),
                                                                       ("identify", "Identify")]
    assert all(r["_dialect"] == "segment" and r["sent_at"] is not None and r["_consent.analytics"] for r in rows)
    assert not any(b"write-key-secret" in orjson.dumps(r, default=str) for r in rows)


def test_declared_dialect_and_oversize_envelopes(server):
    _, structured, _, _ = capture.cloudevents_messages()
    segment_line = b'{"type":"track","event":"A","userId":"u","messageId":"m1"}'
    rows, dead = parse([segment_line, structured.body], dialect="cloudevents")
    assert len(rows) == 1 and rows[0]["_dialect"] == "cloudevents"
    assert [d["reason"] for d in dead] == ["invalid_field"]
    export = capture.otlp_json(capture.otel_export(server).body)
    rows, dead = parse([export], max_event_bytes=300)  # the export is larger; each record is checked alone
    assert len(rows) + len(dead) == 3 and {d["reason"] for d in dead} <= {"too_large"}
    rows, dead = parse([export], max_event_bytes=300, max_envelope_bytes=400)
    assert rows == [] and [d["reason"] for d in dead] == ["too_large"]
