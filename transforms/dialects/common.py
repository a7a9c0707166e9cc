"""What every non-Segment dialect shares: the canonical row, the time window check, JSON-safe values.

A dialect's ``normalise_*`` functions return a list with one item per event found in the input record:
either a ``Normalised`` (the 11 canonical values plus the ``view`` that tenant/app paths and consent are
read from) or a ``Rejected`` carrying that one event's own JSON as its dead-letter payload, so one bad
record in a batch never costs the others.
"""
from __future__ import annotations

import hashlib
import uuid
from typing import NamedTuple

import orjson

from transforms.dialects.segment import MAX_ID_LENGTH, Rejected
from transforms.timestamps import parse_timestamp_us


class Normalised(NamedTuple):
    row: tuple  # event_id, type, event, anonymous_id, user_id, timestamp, received_at, sent_at, context, properties, traits
    view: dict  # {"context": ..., "properties": ..., "traits": ...}: what tenant/app paths and consent read


class Limits(NamedTuple):
    source_id: str
    now_us: int
    max_past_us: int
    max_future_us: int


def derived_id(source_id: str, *parts) -> str:
    """A UUID from SHA-256 of the source id and ``parts`` (JSON, keys sorted): the same record, the same id."""
    digest = hashlib.sha256(source_id.encode() + b"\x00" + orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def id_text(value, field: str) -> str | None:
    """An identifier: a non-empty string (integers as their text) of at most 256 characters, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Rejected("invalid_field", f"{field}: expected a string")
    value = str(value)
    if len(value) > MAX_ID_LENGTH:
        raise Rejected("invalid_field", f"{field}: must be 1 to {MAX_ID_LENGTH} characters")
    return value


def time_us(value, field: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return parse_timestamp_us(value)
    except ValueError as exc:
        raise Rejected("invalid_timestamp", f"{field}: {exc}") from None


def in_window(timestamp: int, received_at: int, limits: Limits) -> None:
    if not (limits.now_us - limits.max_past_us <= received_at <= limits.now_us + limits.max_future_us):
        raise Rejected("timestamp_out_of_range", "received_at is outside the accepted window around the "
                                                 "processing time")
    if not (received_at - limits.max_past_us <= timestamp <= received_at + limits.max_future_us):
        raise Rejected("timestamp_out_of_range", "timestamp is outside the accepted window around received_at")


def build(event_id, kind, name, anonymous_id, user_id, timestamp, received_at, sent_at, context, properties,
          traits, limits: Limits) -> Normalised:
    """The canonical row, after the checks every dialect shares (event name, time window)."""
    if not isinstance(name, str) or not name:
        raise Rejected("missing_event_name", "the record has no event name")
    in_window(timestamp, received_at, limits)
    return Normalised((event_id, kind, name, anonymous_id, user_id, timestamp, received_at, sent_at,
                       context or None, properties or None, traits or None),
                      {"context": context or {}, "properties": properties or {}, "traits": traits or {}})


def guarded(event_id_hint, payload, fn):
    """Run ``fn()``; a ``Rejected`` comes back as a value carrying the record's own payload and id."""
    try:
        return fn()
    except Rejected as rej:
        rej.event_id = rej.event_id or event_id_hint
        rej.payload = payload
        return rej


def reject(reason: str, error: str):
    """Raise the ``Rejected`` of one event (inside ``guarded``, it becomes that event's dead letter)."""
    raise Rejected(reason, error)


def not_object(value):
    """Reject an entry of a record that is not a JSON object."""
    raise Rejected("not_an_object", f"an entry is a JSON {type(value).__name__}, not an object")
