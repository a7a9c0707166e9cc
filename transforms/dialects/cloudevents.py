"""CloudEvents 1.0 -> canonical events.

Input forms: structured JSON (``application/cloudevents+json``: one object), a batch
(``application/cloudevents-batch+json``: a JSON array of them), and binary mode, where the attributes travel
as message attributes or headers and the message body is the data. Binary messages are turned into the
structured form at the source (``binary_to_structured``: Pub/Sub attributes ``ce-<name>``, Kafka headers
``ce_<name>``, HTTP headers ``ce-<name>``), so parsing sees one shape.

Columns:

- ``event_id`` <- a UUID derived from ``source`` and ``id`` (the spec makes only the pair unique; the
  original ``id`` stays in ``context.cloudevents.id``).
- ``type`` = track; ``event`` <- ``type`` (e.g. ``com.example.order.created``).
- ``timestamp`` <- ``time``, else ``received_at``; ``received_at`` <- the processing time (the extension
  ``receivedat`` when a collector set it); ``sent_at``: null.
- ``user_id`` <- extension ``userid``, else ``data.userId``/``data.user_id``; ``anonymous_id`` <- extension
  ``anonymousid``, else ``data.anonymousId``/``data.anonymous_id``.
- ``properties`` <- ``data`` when it is an object; any other data as ``{"data": value}``, ``data_base64``
  as ``{"data_base64": text}``.
- ``context``: ``cloudevents`` = every attribute (``specversion``, ``id``, ``source``, ``type``,
  ``subject``, ``time``, ``datacontenttype``, ``dataschema`` and extensions); ``tenant_id`` <- extension
  ``tenantid``; ``app_id`` <- extension ``appid``; ``consent`` <- ``data.context.consent``, else
  ``data.consent``.
- ``traits``: null.

Records missing a required attribute (``specversion`` 1.0, ``id``, ``source``, ``type``) are
``invalid_field`` dead letters naming it.
"""
from __future__ import annotations

import base64

import orjson

from transforms.dialects import common
from transforms.dialects.segment import Rejected

REQUIRED = ("id", "source", "type")
_JSON_TYPES = ("application/json", "text/json")


def looks_cloudevent(obj) -> bool:
    return isinstance(obj, dict) and "specversion" in obj


def looks_batch(value) -> bool:
    return isinstance(value, list) and bool(value) and all(looks_cloudevent(v) for v in value)


def binary_to_structured(attributes: dict, data: bytes | None, prefix: str = "ce-") -> bytes | None:
    """A binary-mode message (attributes or headers + body) as one structured CloudEvent JSON line, or None
    when the message is not a binary CloudEvent. Header values may be ``bytes`` (Kafka)."""
    attrs = {}
    content_type = None
    for key, value in (attributes or {}).items():
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", "replace")
        lower = key.lower()
        if lower.startswith(prefix):
            attrs[lower[len(prefix):]] = value
        elif lower in ("content-type", "content_type", "datacontenttype"):
            content_type = value
    if "specversion" not in attrs:
        return None
    if content_type and "datacontenttype" not in attrs:
        attrs["datacontenttype"] = content_type
    if data:
        kind = (attrs.get("datacontenttype") or "application/json").split(";")[0].strip().lower()
        if kind in _JSON_TYPES or kind.endswith("+json"):
            try:
                attrs["data"] = orjson.loads(data)
            except orjson.JSONDecodeError:
                attrs["data_base64"] = base64.b64encode(data).decode()
        else:
            try:
                attrs["data"] = data.decode("utf-8") if kind.startswith("text/") else None
            except UnicodeDecodeError:
                attrs["data"] = None
            if attrs["data"] is None:
                del attrs["data"]
                attrs["data_base64"] = base64.b64encode(data).decode()
    return orjson.dumps(attrs)


def from_http_capture(obj):
    """What an HTTP request captured as JSON carried (``{"headers": {...}, "body": ...}``, with optional
    ``method``/``path``/``url``/``query``, as request loggers and collectors record it): a binary-mode
    CloudEvent (``ce-*`` headers, the body as its data) as the structured form, else the body itself (parsed
    when it is JSON text). None when ``obj`` is not such a capture (an event has ``type`` or ``specversion``)."""
    if not (isinstance(obj, dict) and isinstance(obj.get("headers"), dict) and "body" in obj
            and "type" not in obj and "specversion" not in obj
            and set(obj) <= {"headers", "body", "method", "path", "url", "query", "remote_addr", "received_at"}):
        return None
    body = obj["body"]
    raw = body.encode() if isinstance(body, str) else (None if body is None else orjson.dumps(body))
    structured = binary_to_structured(obj["headers"], raw)
    if structured is not None:
        return orjson.loads(structured)
    if isinstance(body, str):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
    return body


def _from_data(data, *keys):
    if isinstance(data, dict):
        for key in keys:
            if data.get(key) is not None:
                return data[key]
    return None


def normalise(obj: dict, limits: common.Limits) -> common.Normalised:
    """Map one structured CloudEvent (a parsed JSON object) to a canonical row; raises ``Rejected``."""
    if obj.get("specversion") != "1.0":
        found = obj.get("specversion")
        shown = repr(found)[:40] if isinstance(found, (str, int, float)) else f"a JSON {type(found).__name__}"
        raise Rejected("invalid_field", f"specversion is {shown}: only CloudEvents 1.0 (\"1.0\") is supported")
    for name in REQUIRED:
        if not isinstance(obj.get(name), str) or not obj[name]:
            raise Rejected("invalid_field", f"{name}: a CloudEvent needs a non-empty string {name!r}")
    event_id = common.derived_id(limits.source_id, "cloudevents", obj["source"], obj["id"])
    try:
        data = obj.get("data")
        if "data_base64" in obj:
            properties = {"data_base64": obj["data_base64"]}
        elif isinstance(data, dict):
            properties = dict(data)
        else:
            properties = None if data is None else {"data": data}
        user_id = common.id_text(obj.get("userid") or _from_data(data, "userId", "user_id"), "userid")
        anonymous_id = common.id_text(obj.get("anonymousid") or _from_data(data, "anonymousId", "anonymous_id"),
                                      "anonymousid")
        received_at = common.time_us(obj.get("receivedat"), "receivedat") or limits.now_us
        timestamp = common.time_us(obj.get("time"), "time") or received_at
        context: dict = {"cloudevents": {k: v for k, v in obj.items() if k not in ("data", "data_base64")}}
        for key, target in (("tenantid", "tenant_id"), ("appid", "app_id")):
            if obj.get(key) is not None:
                context[target] = obj[key]
        inner = data.get("context") if isinstance(data, dict) else None
        consent = _from_data(inner, "consent") or _from_data(data, "consent")
        if isinstance(consent, dict):
            context["consent"] = consent
        return common.build(event_id, "track", obj["type"], anonymous_id, user_id, timestamp, received_at, None,
                            context, properties, None, limits)
    except Rejected as rej:
        rej.event_id = event_id
        raise


DESCRIPTION = "a CloudEvent"


def detect(obj) -> bool:
    """Whether a parsed record is a CloudEvent (structured mode) or a batch of them."""
    return looks_batch(obj) if isinstance(obj, list) else isinstance(obj, dict) and looks_cloudevent(obj)


def events(obj, line: bytes, limits: common.Limits) -> list | None:
    """One ``Normalised`` or ``Rejected`` per event the record holds; None when it is no CloudEvent shape."""
    if isinstance(obj, dict):
        return [common.guarded(None, line, lambda: normalise(obj, limits))]
    if isinstance(obj, list):
        return [common.guarded(None, orjson.dumps(e), lambda e=e: normalise(e, limits) if isinstance(e, dict)
                               else common.not_object(e)) for e in obj]
    return None
