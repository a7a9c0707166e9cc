"""Input dialects, one module each, and the registry that detects and dispatches them.

Segment (the default, and the batch fast path of ``segment_bulk``) is normalised by ``transforms.parse``
itself; every other dialect is a module declaring ``DESCRIPTION`` (for messages), ``detect(obj)`` (does a
parsed record look like mine) and ``events(obj, line, limits)`` (a ``common.Normalised`` or
``common.Rejected`` per event the record holds, or None for a record of another shape), plus one line in
``OTHERS``. Adding a dialect: its module, its line here, its choice in ``--input_dialect`` follows.

    dialect = dialects.detect(obj)                              # "segment", "otel", ...
    items = dialects.events(dialect, obj, line, limits)         # [(dialect, Normalised | Rejected)]
"""
from __future__ import annotations

from transforms.dialects import cloudevents, common, otel, snowplow

SEGMENT = "segment"
# Detection order matters: an OTLP export is checked before a CloudEvent, a CloudEvent before Snowplow.
OTHERS = {"otel": otel, "cloudevents": cloudevents, "snowplow": snowplow}
NAMES = (SEGMENT, *OTHERS)  # what --input_dialect accepts besides auto
_DESCRIPTIONS = {SEGMENT: "a Segment", **{name: module.DESCRIPTION for name, module in OTHERS.items()}}


def detect(obj) -> str:
    """The dialect of a parsed record; Segment when no other dialect claims it."""
    for name, module in OTHERS.items():
        if module.detect(obj):
            return name
    return SEGMENT


def describe(obj) -> str:
    """What a record looks like, for messages: its dialect when it is another one, else its shape."""
    if not isinstance(obj, (dict, list)):
        return f"a JSON {type(obj).__name__}"
    if isinstance(obj, list):
        return f"a JSON array of {len(obj)}"
    found = detect(obj)
    if found != SEGMENT:
        return f"{_DESCRIPTIONS[found]} record"
    keys = ", ".join(sorted(map(str, obj))[:6])
    return f"an object with keys {keys}" if keys else "an empty object"


def events(dialect: str, obj, line: bytes, limits: common.Limits) -> list:
    """``(dialect, Normalised or Rejected)`` for each event a non-Segment record holds; a record that is not
    the declared dialect's is one ``Rejected`` saying what it is instead."""
    found = OTHERS[dialect].events(obj, line, limits) if dialect in OTHERS else None
    if found is not None:
        return [(dialect, item) for item in found]
    what = describe(obj)
    return [(dialect, common.guarded(None, line, lambda: common.reject(
        "not_an_object" if not isinstance(obj, (dict, list)) else "invalid_field",
        f"{what} is not {_DESCRIPTIONS.get(dialect, dialect)} record (--input_dialect {dialect})")))]
