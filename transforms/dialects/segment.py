"""Segment-spec events (page, track, identify, group, screen, alias) -> the 13 canonical columns.

Rules, column by column (each is tested in tests/unit/test_segment.py):

- ``type``: the ``type`` field, lower-cased; must be one of the six Segment types, else ``unknown_type``.
- ``event``: ``track`` -> its ``event`` (a non-empty string, else ``missing_event_name``); page ->
  ``Page Viewed``; screen -> ``Screen Viewed``; identify -> ``Identify``; group -> ``Group``;
  alias -> ``Alias``.
- ``event_id``: ``messageId`` (string, or integer taken as its decimal text); a top-level ``event_id`` is
  accepted as a synonym, and both present with different values is ``conflicting_event_id``. Without
  either, a UUID derived from SHA-256 of the source id and the event's content with keys sorted, so a
  re-sent copy of the same event gets the same id.
- ``anonymous_id`` / ``user_id``: ``anonymousId`` / ``userId`` (strings; integers become their text). At
  least one is required (``missing_identity``), as the Segment spec requires.
- ``timestamp``: ``timestamp``, else ``originalTimestamp``, else ``received_at``; see
  ``transforms.timestamps`` for accepted forms; must lie within the configured window around
  ``received_at`` (``timestamp_out_of_range``).
- ``received_at``: ``receivedAt`` when present, else the processing time.
- ``sent_at``: ``sentAt`` when present, else null.
- ``context`` / ``properties`` / ``traits``: the objects of the same names, every key kept (null when
  absent). Top-level fields with no column keep their data: page/screen ``name`` and ``category`` go to
  ``properties.name`` / ``properties.category`` (unless already there), group ``groupId`` to
  ``properties.group_id``, alias ``previousId`` to ``properties.previous_id`` (when the property already
  holds a different value, or the type takes no such field, the field goes to ``context._unmapped``), and
  any other unmapped top-level key (``integrations``, ``channel``, ``writeKey`` ...) to ``context._unmapped.<key>``.

Wrong JSON types in known fields (an array as ``properties``, an object as ``userId`` ...) are
``invalid_field`` naming the field.
"""
from __future__ import annotations

import hashlib
import uuid

import orjson

from transforms.timestamps import parse_timestamp_us

TYPES = {"page", "track", "identify", "group", "screen", "alias"}
FIXED_EVENT_NAMES = {
    "page": "Page Viewed",
    "screen": "Screen Viewed",
    "identify": "Identify",
    "group": "Group",
    "alias": "Alias",
}
MAX_ID_LENGTH = 256
_MAPPED = frozenset({
    "type", "event", "messageId", "event_id", "anonymousId", "userId", "timestamp", "originalTimestamp",
    "receivedAt", "sentAt", "context", "properties", "traits", "name", "category", "groupId", "previousId",
})
_MOVABLE = frozenset({"name", "category", "groupId", "previousId"})
_MOVED_TO_PROPERTIES = {
    "page": (("name", "name"), ("category", "category")),
    "screen": (("name", "name"), ("category", "category")),
    "group": (("groupId", "group_id"),),
    "alias": (("previousId", "previous_id"),),
}


class Rejected(Exception):
    """An event that cannot be normalised; ``reason`` is a stable dead-letter code."""

    def __init__(self, reason: str, error: str, event_id: str | None = None):
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.event_id = event_id


def _id_value(obj: dict, key: str, required_type: str = "string") -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise Rejected("invalid_field", f"{key}: expected a {required_type}, got a boolean")
    if isinstance(value, int):
        value = str(value)
    elif not isinstance(value, str):
        raise Rejected("invalid_field", f"{key}: expected a {required_type}, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_LENGTH:
        raise Rejected("invalid_field", f"{key}: must be 1 to {MAX_ID_LENGTH} characters")
    return value


def _object(obj: dict, key: str) -> dict | None:
    value = obj.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise Rejected("invalid_field", f"{key}: expected an object, got {type(value).__name__}")


def derive_event_id(obj: dict, source_id: str) -> str:
    """Deterministic id for an event without one: same content and source, same id."""
    digest = hashlib.sha256(source_id.encode() + b"\x00" + orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def _time(obj: dict, key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    try:
        return parse_timestamp_us(value)
    except ValueError as exc:
        raise Rejected("invalid_timestamp", f"{key}: {exc}") from None


# Types whose ``context.traits`` become the event's ``traits`` when the event has none of its own.
TRAITS_FROM_CONTEXT = ("identify", "group")


def normalise(obj: dict, source_id: str, processing_time_us: int, max_past_us: int, max_future_us: int):
    """Map one parsed Segment event to the canonical columns.

    Returns ``(event_id, type, event, anonymous_id, user_id, timestamp_us, received_at_us, sent_at_us,
    context, properties, traits)``; raises ``Rejected``.
    """
    message_id = _id_value(obj, "messageId")
    alt_id = _id_value(obj, "event_id")
    if message_id is not None and alt_id is not None and message_id != alt_id:
        raise Rejected("conflicting_event_id", "messageId and event_id differ", message_id)
    event_id = message_id or alt_id or derive_event_id(obj, source_id)
    try:
        kind = obj.get("type")
        if not isinstance(kind, str) or kind.lower() not in TYPES:
            raise Rejected("unknown_type", "type must be one of " + ", ".join(sorted(TYPES)))
        kind = kind.lower()
        if kind == "track":
            name = obj.get("event")
            if name is None or name == "":
                raise Rejected("missing_event_name", "a track event needs a non-empty 'event'")
            if not isinstance(name, str):
                raise Rejected("invalid_field", f"event: expected a string, got {type(name).__name__}")
        else:
            name = FIXED_EVENT_NAMES[kind]
        anonymous_id = _id_value(obj, "anonymousId")
        user_id = _id_value(obj, "userId")
        if anonymous_id is None and user_id is None:
            raise Rejected("missing_identity", "an event needs userId or anonymousId")
        context = _object(obj, "context")
        properties = _object(obj, "properties")
        traits = _object(obj, "traits")
        if kind in TRAITS_FROM_CONTEXT and not traits and isinstance((context or {}).get("traits"), dict):
            # RudderStack's SDK and analytics-python 2.1 send an identify's (or group's) traits in
            # context.traits: they are the event's traits, and move there.
            context = dict(context)
            traits = context.pop("traits") or None

        received_at = _time(obj, "receivedAt")
        if received_at is None:
            received_at = processing_time_us
        elif not (processing_time_us - max_past_us <= received_at <= processing_time_us + max_future_us):
            raise Rejected("timestamp_out_of_range", "receivedAt is outside the accepted window around the "
                                                     "processing time")
        sent_at = _time(obj, "sentAt")
        timestamp = _time(obj, "timestamp")
        if timestamp is None:
            timestamp = _time(obj, "originalTimestamp")
        if timestamp is None:
            timestamp = received_at
        if not (received_at - max_past_us <= timestamp <= received_at + max_future_us):
            raise Rejected("timestamp_out_of_range", "timestamp is outside the accepted window around received_at")

        extra = {k: v for k, v in obj.items() if k not in _MAPPED or k in _MOVABLE}
        for src, dst in _MOVED_TO_PROPERTIES.get(kind, ()):
            if src in extra and (properties is None or properties.get(dst, extra[src]) == extra[src]):
                properties = dict(properties or {})
                properties[dst] = extra.pop(src)
        if extra:
            context = dict(context or {})
            unmapped = context.get("_unmapped")
            context["_unmapped"] = {**unmapped, **extra} if isinstance(unmapped, dict) else extra
    except Rejected as exc:
        exc.event_id = event_id
        raise
    return (event_id, kind, name, anonymous_id, user_id, timestamp, received_at, sent_at,
            context, properties, traits)
