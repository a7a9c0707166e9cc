"""Real SDK output for the dialect tests: each vendor's own client sends to a local HTTP endpoint, which
records the requests as they arrive; the helpers turn them into the input lines a collector would write.

Nothing here is hand-written JSON: the bodies, headers and query strings are what snowplow-tracker,
the CloudEvents SDK, the OpenTelemetry SDK (OTLP/HTTP exporter) and Segment's analytics client produce.
"""
from __future__ import annotations

import base64
import http.server
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson


@dataclass
class Request:
    method: str
    path: str
    headers: dict
    body: bytes


@dataclass
class CaptureServer:
    requests: list = field(default_factory=list)

    def __enter__(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self):
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size)
                outer.requests.append(Request(self.command, self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_GET = _record

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.requests) >= count, f"captured {len(self.requests)} of {count} requests"
        return self.requests


def snowplow_requests(server: CaptureServer, method: str = "post"):
    """Three events (page view, structured with a tenant entity and a consent entity, self-describing)
    from snowplow-tracker, as POST payload_data bodies or GET query strings."""
    from snowplow_tracker import Emitter, PageView, SelfDescribing, SelfDescribingJson, StructuredEvent, Subject, Tracker

    start = len(server.requests)
    emitter = Emitter(f"127.0.0.1:{server.port}", protocol="http", method=method, batch_size=1)
    subject = Subject().set_user_id("user-1").set_domain_user_id("duid-1")
    tracker = Tracker(namespace="web", emitters=emitter, subject=subject, app_id="shop")
    entities = [SelfDescribingJson("iglu:com.acme/tenant/jsonschema/1-0-0", {"tenant_id": "acme"}),
                SelfDescribingJson("iglu:com.acme/consent/jsonschema/1-0-0", {"analytics": True})]
    tracker.track(PageView(page_url="https://shop.example/p/1", page_title="Product 1",
                           referrer="https://search.example/", context=entities))
    tracker.track(StructuredEvent(category="basket", action="add", label="sku-1", property_="size-m", value=2.5,
                                  context=entities))
    tracker.track(SelfDescribing(SelfDescribingJson("iglu:com.acme/purchase/jsonschema/1-0-0",
                                                    {"amount": 12.5, "Currency": "EUR"}), context=entities[:1]))
    emitter.flush()
    return server.wait_for(start + 3)[start:start + 3]


def cloudevents_messages():
    """The SDK's structured HTTP body, binary HTTP headers+body and binary Kafka headers+value of one event."""
    from cloudevents.core.bindings import kafka
    from cloudevents.core.bindings.http import to_binary_event, to_structured_event
    from cloudevents.core.v1.event import CloudEvent

    when = datetime(2026, 1, 29, 14, 30, 0, 123456, tzinfo=timezone.utc)
    event = CloudEvent({"type": "com.acme.order.created", "source": "/shop/eu", "subject": "order-1",
                        "tenantid": "acme", "time": when},
                       {"orderId": "o-1", "amount": 9.5, "userId": "user-1", "consent": {"analytics": True}})
    return event, to_structured_event(event), to_binary_event(event), kafka.to_binary_event(event)


def otlp_json(body: bytes, signal: str = "logs") -> bytes:
    """An OTLP/HTTP protobuf export request (``logs``, ``traces`` or ``metrics``) -> OTLP JSON as the spec
    encodes it (lowerCamelCase keys, enums as integers, 64-bit integers as strings, trace and span ids as hex
    rather than base64)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    kind = {"logs": ExportLogsServiceRequest, "traces": ExportTraceServiceRequest,
            "metrics": ExportMetricsServiceRequest}[signal]
    obj = MessageToDict(kind.FromString(body), use_integers_for_enums=True)

    def hex_ids(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hex_ids(value)
        elif isinstance(node, list):
            for item in node:
                hex_ids(item)
    hex_ids(obj)
    return orjson.dumps(obj)


def otel_trace_export(server: CaptureServer):
    """A server span with a child client span and one span event, from the SDK's OTLP/HTTP span exporter."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind

    start = len(server.requests)
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "tenant.id": "acme"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{server.port}/v1/traces")))
    tracer = provider.get_tracer("shop.http", "1.2.0")
    t0 = 1_769_697_000_123_456_789
    with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER, start_time=t0, end_on_exit=False,
                                      attributes={"user.id": "user-1", "http.status_code": 201}) as parent:
        parent.add_event("payment.authorized", {"amount": 12.5, "consent.analytics": True}, timestamp=t0 + 5_000_000)
        with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT, start_time=t0 + 1_000_000,
                                          end_on_exit=False) as child:
            child.end(end_time=t0 + 4_000_000)
        parent.end(end_time=t0 + 9_000_000)
    provider.shutdown()
    requests = server.wait_for(start + 1)[start:]
    return [r for r in requests if r.path == "/v1/traces"]


def otel_metrics_export(server: CaptureServer):
    """One counter's export from the SDK's OTLP/HTTP metric exporter."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    start = len(server.requests)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"http://127.0.0.1:{server.port}/v1/metrics"),
                                           export_interval_millis=60_000)
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("shop").create_counter("orders").add(3, {"region": "eu"})
    provider.shutdown()
    return server.wait_for(start + 1)[start]


def otel_export(server: CaptureServer):
    """Two event records and one plain log record from the OpenTelemetry SDK's OTLP/HTTP log exporter."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    start = len(server.requests)
    provider = LoggerProvider(resource=Resource.create({"service.name": "checkout", "tenant.id": "acme"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(
        OTLPLogExporter(endpoint=f"http://127.0.0.1:{server.port}/v1/logs")))
    logger = provider.get_logger("shop.events", "1.2.0")
    t0 = 1_769_697_000_123_456_789  # 2026-01-29T14:30:00.123456789Z
    logger.emit(event_name="order.placed", timestamp=t0, body={"order_id": "o-1"},
                attributes={"user.id": "user-1", "amount": 12.5, "count": 3, "gift": True, "tags": ["a", "b"],
                            "consent.analytics": True})
    logger.emit(event_name="cart.viewed", timestamp=t0 + 1_000_000_000, attributes={"device.id": "dev-9"})
    logger.emit(body="plain log line", timestamp=t0 + 2_000_000_000, severity_text="INFO")
    provider.shutdown()
    return server.wait_for(start + 1)[start]


def rudderstack_batch(server: CaptureServer, traits: dict, context: dict):
    """A batch body from RudderStack's Python SDK: an identify (its traits go into ``context.traits``) and a
    track, as its HTTP API receives them (uncompressed)."""
    import rudderstack.analytics as rudder

    start = len(server.requests)
    client = rudder.Client("write-key-secret", host=f"http://127.0.0.1:{server.port}", sync_mode=True, gzip=False)
    client.identify("user-r", traits, context=context)
    client.track("user-r", "Order Completed", {"revenue": 12.5}, context=context)
    return server.wait_for(start + 2)[start:start + 2]


def segment_batch(server: CaptureServer):
    """A batch body from Segment's analytics-python (track + identify), as its HTTP API receives it."""
    import segment.analytics as analytics

    start = len(server.requests)
    client = analytics.Client("write-key-secret", host=f"http://127.0.0.1:{server.port}", sync_mode=True)
    client.track("user-1", "Order Completed", {"revenue": 12.5},
                 context={"tenant_id": "acme", "consent": {"analytics": True}})
    client.identify("user-1", {"plan": "pro"}, context={"tenant_id": "acme", "consent": {"analytics": True}})
    return server.wait_for(start + 2)[start:start + 2]
