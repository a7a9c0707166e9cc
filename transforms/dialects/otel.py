"""OpenTelemetry log records used as events (OTLP JSON: ``resourceLogs`` -> ``scopeLogs`` -> ``logRecords``)
-> canonical events, one per log record.

OTLP JSON as the spec encodes it: lowerCamelCase keys, ``traceId``/``spanId`` as hex, 64-bit integers as
strings or numbers, ``AnyValue`` objects (``stringValue``, ``intValue``, ``doubleValue``, ``boolValue``,
``bytesValue`` (base64), ``arrayValue.values``, ``kvlistValue.values``) decoded to plain JSON values.

Columns:

- ``event`` <- the record's ``eventName``, else its attribute ``event.name``; a record with neither is a
  plain log line and becomes the event ``Log Record`` (kept, not dropped).
- ``type`` = track.
- ``event_id`` <- attribute ``event.id`` (or ``event_id``), else a UUID derived from the resource, scope
  and record (a re-sent export dedups).
- ``timestamp`` <- ``timeUnixNano`` (when set), else ``observedTimeUnixNano``, else ``received_at``,
  truncated to microseconds; ``received_at`` <- the processing time; ``sent_at``: null.
- ``user_id`` <- attribute ``user.id``, else ``enduser.id``; ``anonymous_id`` <- attribute ``device.id``,
  else the resource's ``device.id``. Record attributes win over resource attributes.
- ``properties`` <- the record's attributes (dotted keys as sent), plus ``body`` when the record has one.
- ``context``: ``otel`` = ``resource`` (attributes), ``scope`` (name, version, attributes),
  ``severity_number``, ``severity_text``, ``trace_id``, ``span_id``, ``flags``, ``observed_time_unix_nano``
  and schema URLs; ``app_id`` <- ``service.name``; ``tenant_id`` <- ``tenant.id`` (record, else resource);
  ``consent`` <- attributes ``consent.<purpose>`` (booleans).
- ``traits``: null.

Traces (``resourceSpans`` -> ``scopeSpans`` -> ``spans``): each span is an event and so is each of its span
events. A span: ``event`` <- its ``name`` (else ``Span``), ``timestamp`` <- ``startTimeUnixNano``,
``properties`` <- its attributes plus ``span.kind``, ``duration_ms`` and ``status`` (code, message). A span
event: ``event`` <- its ``name`` (else ``Span Event``), ``timestamp`` <- its ``timeUnixNano``, ``properties``
<- its attributes. Both: ``event_id`` <- attribute ``event.id``, else a UUID derived from the trace, span (and
event) ids and content; ``context.otel`` holds ``signal`` (``trace``), ``trace_id``, ``span_id``,
``parent_span_id``, ``kind``, ``start_time_unix_nano``, ``end_time_unix_nano``, the resource and the scope;
identities, app, tenant and consent as for logs.

Metrics (``resourceMetrics``) are measurements, not events: one ``unsupported_signal`` dead letter per export.
"""
from __future__ import annotations

import orjson

from transforms.dialects import common
from transforms.dialects.segment import Rejected

LOG_RECORD = "Log Record"


SPAN, SPAN_EVENT = "Span", "Span Event"
_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def looks_otlp(obj) -> bool:
    return isinstance(obj, dict) and any(isinstance(obj.get(k), list)
                                         for k in ("resourceLogs", "resourceSpans", "resourceMetrics"))


def signal(obj: dict) -> str:
    """``logs``, ``traces`` or ``metrics``: what an OTLP export holds."""
    if isinstance(obj.get("resourceSpans"), list):
        return "traces"
    if isinstance(obj.get("resourceMetrics"), list):
        return "metrics"
    return "logs"


def any_value(value):
    """An OTLP ``AnyValue`` object -> a plain JSON value."""
    if not isinstance(value, dict):
        return value
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "intValue" in value:
        raw = value["intValue"]
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise Rejected("invalid_field", "intValue: not an integer") from None
    if "doubleValue" in value:
        raw = value["doubleValue"]
        return float(raw) if isinstance(raw, (int, float, str)) and raw not in ("NaN", "Infinity", "-Infinity") else raw
    if "bytesValue" in value:
        return value["bytesValue"]
    if "arrayValue" in value:
        return [any_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return attributes((value["kvlistValue"] or {}).get("values", []))
    return None  # an empty AnyValue


def attributes(kvs) -> dict:
    """A list of OTLP ``KeyValue`` objects -> ``{key: value}`` (later duplicates win)."""
    if kvs is None:
        return {}
    if not isinstance(kvs, list):
        raise Rejected("invalid_field", "attributes: expected a list of key/value objects")
    out = {}
    for kv in kvs:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise Rejected("invalid_field", "attributes: every entry needs a string 'key'")
        out[kv["key"]] = any_value(kv.get("value"))
    return out


def _nanos(value, field: str) -> int | None:
    if value is None or value in ("", "0", 0):
        return None
    try:
        nanos = int(value)
    except (TypeError, ValueError):
        raise Rejected("invalid_timestamp", f"{field}: not an integer number of nanoseconds") from None
    return common.time_us(nanos // 1000, field)


def _event(event_id, name, timestamp, received_at, merged: dict, otel: dict, properties: dict,
           limits: common.Limits) -> common.Normalised:
    """The canonical row of a log record or span: identities from the merged attributes (``user.id``, else
    ``enduser.id``; ``device.id``), ``context`` from ``_context``."""
    user_id = common.id_text(merged.get("user.id", merged.get("enduser.id")), "user.id")
    anonymous_id = common.id_text(merged.get("device.id"), "device.id")
    return common.build(event_id, "track", name, anonymous_id, user_id, timestamp, received_at, None,
                        _context(otel, merged), properties, None, limits)


def _context(otel: dict, merged: dict) -> dict:
    """The canonical ``context``: ``otel``, and ``app_id``, ``tenant_id`` and ``consent`` from the merged
    attributes (``service.name``, ``tenant.id``, ``consent.<purpose>``)."""
    context: dict = {"otel": otel}
    if merged.get("service.name") is not None:
        context["app_id"] = merged["service.name"]
    if merged.get("tenant.id") is not None:
        context["tenant_id"] = merged["tenant.id"]
    consent = {k[len("consent."):]: v for k, v in merged.items() if k.startswith("consent.")}
    if consent:
        context["consent"] = consent
    return context


def _walk(export: dict, resources: str, scopes: str, items: str):
    """``(resource, scope, item)`` for every item of an OTLP export (``resourceLogs``/``scopeLogs``/
    ``logRecords``, ``resourceSpans``/``scopeSpans``/``spans``); malformed levels are skipped (their items,
    if any, are not objects and are dead-lettered where they are mapped)."""
    for resource in export.get(resources) or []:
        if not isinstance(resource, dict):
            continue
        for scope in resource.get(scopes) or []:
            if not isinstance(scope, dict):
                continue
            for item in scope.get(items) or []:
                yield resource, scope, item


def _scope(scope_obj: dict) -> dict:
    return {"name": scope_obj.get("name"), "version": scope_obj.get("version"),
            "attributes": attributes(scope_obj.get("attributes"))}


def records(export: dict):
    """``(resource_logs, scope_logs, log_record)`` for every record of an export."""
    yield from _walk(export, "resourceLogs", "scopeLogs", "logRecords")


def normalise(resource_logs: dict, scope_logs: dict, record, limits: common.Limits) -> common.Normalised:
    """Map one log record, with its resource and scope, to a canonical row; raises ``Rejected``."""
    if not isinstance(record, dict):
        raise Rejected("invalid_field", "logRecords: every record must be an object")
    resource = attributes((resource_logs.get("resource") or {}).get("attributes"))
    scope_obj = scope_logs.get("scope") or {}
    attrs = attributes(record.get("attributes"))
    explicit = attrs.get("event.id", attrs.get("event_id"))
    event_id = common.id_text(explicit, "event.id") or common.derived_id(
        limits.source_id, "otel", resource, scope_obj, record)
    try:
        name = record.get("eventName") or attrs.get("event.name") or LOG_RECORD
        received_at = limits.now_us
        timestamp = (_nanos(record.get("timeUnixNano"), "timeUnixNano")
                     or _nanos(record.get("observedTimeUnixNano"), "observedTimeUnixNano") or received_at)
        merged = {**resource, **attrs}
        properties = dict(attrs)
        body = any_value(record.get("body"))
        if body is not None:
            properties["body"] = body
        otel = {"resource": resource,
                "scope": _scope(scope_obj)}
        for key, target in (("severityNumber", "severity_number"), ("severityText", "severity_text"),
                            ("traceId", "trace_id"), ("spanId", "span_id"), ("flags", "flags"),
                            ("observedTimeUnixNano", "observed_time_unix_nano")):
            if record.get(key) not in (None, ""):
                otel[target] = record[key]
        for holder, key in ((resource_logs, "schemaUrl"), (scope_logs, "schemaUrl")):
            if holder.get(key):
                otel.setdefault("schema_urls", []).append(holder[key])
        return _event(event_id, name, timestamp, received_at, merged, otel, properties, limits)
    except Rejected as rej:
        rej.event_id = event_id
        raise


def spans(export: dict):
    """``(resource_spans, scope_spans, span, span_event or None)`` for every span and span event."""
    for resource_spans, scope_spans, span in _walk(export, "resourceSpans", "scopeSpans", "spans"):
        yield resource_spans, scope_spans, span, None
        if isinstance(span, dict):
            for event in span.get("events") or []:
                yield resource_spans, scope_spans, span, event


def _kind(value):
    if isinstance(value, int):
        return _KINDS.get(value, str(value))
    if isinstance(value, str):
        return value.removeprefix("SPAN_KIND_").lower()
    return None


def normalise_span(resource_spans: dict, scope_spans: dict, span, event, limits: common.Limits) -> common.Normalised:
    """Map one span, or one of its span events, to a canonical row; raises ``Rejected``."""
    if not isinstance(span, dict) or (event is not None and not isinstance(event, dict)):
        raise Rejected("invalid_field", "spans: every span and span event must be an object")
    resource = attributes((resource_spans.get("resource") or {}).get("attributes"))
    scope_obj = scope_spans.get("scope") or {}
    own = event if event is not None else span
    attrs = attributes(own.get("attributes"))
    explicit = attrs.get("event.id", attrs.get("event_id"))
    event_id = common.id_text(explicit, "event.id") or common.derived_id(
        limits.source_id, "otel-span", span.get("traceId"), span.get("spanId"), resource, scope_obj, own)
    try:
        received_at = limits.now_us
        if event is None:
            name = span.get("name") or SPAN
            timestamp = _nanos(span.get("startTimeUnixNano"), "startTimeUnixNano") or received_at
        else:
            name = event.get("name") or SPAN_EVENT
            timestamp = _nanos(event.get("timeUnixNano"), "timeUnixNano") or received_at
        merged = {**resource, **attributes(span.get("attributes")), **attrs}
        properties = dict(attrs)
        if event is None:
            start, end = _nanos(span.get("startTimeUnixNano"), "startTimeUnixNano"), \
                _nanos(span.get("endTimeUnixNano"), "endTimeUnixNano")
            if _kind(span.get("kind")) is not None:
                properties["span.kind"] = _kind(span.get("kind"))
            if start is not None and end is not None:
                properties["duration_ms"] = (end - start) / 1000
            if isinstance(span.get("status"), dict) and span["status"]:
                properties["status"] = span["status"]
        otel = {"signal": "trace", "resource": resource,
                "scope": _scope(scope_obj)}
        for key, target in (("traceId", "trace_id"), ("spanId", "span_id"), ("parentSpanId", "parent_span_id"),
                            ("startTimeUnixNano", "start_time_unix_nano"), ("endTimeUnixNano", "end_time_unix_nano")):
            if span.get(key) not in (None, ""):
                otel[target] = span[key]
        if _kind(span.get("kind")) is not None:
            otel["kind"] = _kind(span.get("kind"))
        if event is not None:
            otel["span_name"] = span.get("name")
        return _event(event_id, name, timestamp, received_at, merged, otel, properties, limits)
    except Rejected as rej:
        rej.event_id = event_id
        raise


def span_payload(resource_spans: dict, scope_spans: dict, span, event) -> bytes:
    """One span (with only the span event in question, if any) as an export of its own, for dead letters."""
    one = dict(span) if isinstance(span, dict) else span
    if isinstance(one, dict) and event is not None:
        one["events"] = [event]
    return orjson.dumps({"resourceSpans": [{"resource": resource_spans.get("resource"),
                                            "scopeSpans": [{"scope": scope_spans.get("scope"), "spans": [one]}]}]})


def record_payload(resource_logs: dict, scope_logs: dict, record) -> bytes:
    """One record with its resource and scope, as a dead letter's payload (an export of one record)."""
    return orjson.dumps({"resourceLogs": [{"resource": resource_logs.get("resource"),
                                           "scopeLogs": [{"scope": scope_logs.get("scope"),
                                                          "logRecords": [record]}]}]})


DESCRIPTION = "an OpenTelemetry (OTLP JSON) export"


def detect(obj) -> bool:
    return isinstance(obj, dict) and looks_otlp(obj)


def events(obj, line: bytes, limits: common.Limits) -> list | None:
    """One ``Normalised`` or ``Rejected`` per log record or span (and span event) of an OTLP export; a metrics
    export is one ``unsupported_signal``. None when the record is no OTLP export."""
    if not detect(obj):
        return None
    kind = signal(obj)
    if kind == "metrics":
        return [common.guarded(None, line, lambda: common.reject(
            "unsupported_signal", "an OTLP metrics export (resourceMetrics): measurements, not events; "
                                  "OTLP logs and traces are accepted"))]
    if kind == "traces":
        return [common.guarded(None, span_payload(rs, ss, span, ev),
                               lambda rs=rs, ss=ss, span=span, ev=ev: normalise_span(rs, ss, span, ev, limits))
                for rs, ss, span, ev in spans(obj)]
    return [common.guarded(None, record_payload(rl, sl, rec), lambda rl=rl, sl=sl, rec=rec: normalise(rl, sl, rec, limits))
            for rl, sl, rec in records(obj)]
