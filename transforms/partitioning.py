"""Where files go: pure functions from events to relative paths and file names. No Beam, no I/O.

A partition template is a relative path with placeholders::

    year={yyyy}/month={MM}/day={dd}/hour={HH}            (the default, by event time, UTC)
    tenant_id={tenant_id}/app_id={app_id}/{yyyy}/{MM}/{dd}/{HH}
    date={date}/hour={HH}

Time placeholders: ``yyyy MM dd HH mm date`` (``date`` is ``YYYY-MM-DD``). Field placeholders:
``tenant_id app_id type event``. Field values come from events, so they are encoded reversibly
(percent-encoding, as Hive does) before they touch a path: only ``A-Z a-z 0-9 - _`` stay as they are,
``_`` is encoded when it would start a component (readers skip ``_``/``.`` names), and everything else,
including ``.``, ``/``, ``%`` and control characters, becomes ``%XX``. So ``..`` can never appear and the
result always stays under the destination root.

>>> t = parse_template("tenant={tenant_id}/{date}")
>>> t.strftime == "tenant=" + FIELD_MARK + "/%Y-%m-%d"   # Arrow's strftime fills the time part
True
>>> render_partition(t, "tenant=" + FIELD_MARK + "/2026-01-29", {"_tenant_id": "../etc"})
'tenant=%2E%2E%2Fetc/2026-01-29'
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence
from urllib.parse import unquote

DEFAULT_TEMPLATE = "year={yyyy}/month={MM}/day={dd}/hour={HH}"

# strftime codes for the time placeholders (Arrow's strftime implements the same codes).
TIME_TOKENS = {
    "yyyy": "%Y",
    "MM": "%m",
    "dd": "%d",
    "HH": "%H",
    "mm": "%M",
    "date": "%Y-%m-%d",
}
# Placeholders filled from event values; the value is the internal column that holds it.
FIELD_TOKENS = {
    "tenant_id": "_tenant_id",
    "app_id": "_app_id",
    "type": "type",
    "event": "event",
}
# Stands in for a field value in the strftime pattern; cannot occur in a template (validated).
FIELD_MARK = "\x1f"  # a control character: never in a template (validated), and Arrow stops at NUL
MAX_COMPONENT_BYTES = 200

_TOKEN = re.compile(r"\{([^{}]*)\}")
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class InvalidPartitionValue(ValueError):
    """An event value cannot be used in a path (missing, empty or too long after encoding)."""


@dataclass(frozen=True)
class Template:
    """A parsed partition template.

    ``strftime`` is the whole template as an Arrow/strftime pattern in which each field placeholder is
    ``FIELD_MARK``; ``fields`` lists the internal column of each field placeholder, in order.
    """

    source: str
    strftime: str
    fields: tuple[str, ...]


def parse_template(template: str) -> Template:
    """Parse and validate a partition template; raises ``ValueError`` saying what is wrong."""
    if not isinstance(template, str):
        raise ValueError("partition template must be a string")
    if template.startswith("/") or "\\" in template:
        raise ValueError("partition template must be a relative path using '/'")
    if FIELD_MARK in template or any(ord(c) < 32 for c in template):
        raise ValueError("partition template must not contain control characters")
    pattern: list[str] = []
    fields: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(template):
        pattern.append(_literal(template[pos:m.start()]))
        name = m.group(1)
        if name in TIME_TOKENS:
            pattern.append(TIME_TOKENS[name])
        elif name in FIELD_TOKENS:
            pattern.append(FIELD_MARK)
            fields.append(FIELD_TOKENS[name])
        else:
            known = ", ".join(sorted([*TIME_TOKENS, *FIELD_TOKENS]))
            raise ValueError(f"unknown placeholder {{{name}}} (known: {known})")
        pos = m.end()
    pattern.append(_literal(template[pos:]))
    for part in template.split("/"):
        if part in ("", ".", ".."):
            raise ValueError("partition template has an empty, '.' or '..' path component")
        if part[0] in "_.":
            raise ValueError(f"partition component {part!r} starts with '_' or '.', which readers skip")
    return Template(template, "".join(pattern), tuple(fields))


def _literal(text: str) -> str:
    if "{" in text or "}" in text:
        raise ValueError("unbalanced '{' or '}' in partition template")
    return text.replace("%", "%%")


def encode_path_value(value: str) -> str:
    """Encode an event value for use as one path component (reversible with ``decode_path_value``)."""
    if value is None or value == "":
        raise InvalidPartitionValue("value is missing or empty")
    raw = value.encode("utf-8", "surrogatepass")
    out = []
    for i, b in enumerate(raw):
        if b in _SAFE and not (i == 0 and b == 0x5F):
            out.append(chr(b))
        else:
            out.append("%%%02X" % b)
    encoded = "".join(out)
    if len(encoded) > MAX_COMPONENT_BYTES:
        raise InvalidPartitionValue(f"value is longer than {MAX_COMPONENT_BYTES} bytes once encoded")
    return encoded


def decode_path_value(component: str) -> str:
    """Inverse of ``encode_path_value``."""
    return unquote(component, encoding="utf-8", errors="surrogatepass")


def render_partition(template: Template, time_part: str, values: Mapping[str, str | None]) -> str:
    """Fill a partition path: ``time_part`` is the strftime result (with FIELD_MARKs), ``values`` maps
    each field column to the event's raw value. Raises ``InvalidPartitionValue``."""
    pieces = time_part.split(FIELD_MARK)
    if len(pieces) != len(template.fields) + 1:
        raise InvalidPartitionValue("time part does not match the template")
    out = [pieces[0]]
    for column, rest in zip(template.fields, pieces[1:]):
        try:
            out.append(encode_path_value(values.get(column)))
        except InvalidPartitionValue as exc:
            raise InvalidPartitionValue(f"{column.lstrip('_')}: {exc}") from None
        out.append(rest)
    path = "".join(out)
    assert_relative_safe(path)
    return path


def assert_relative_safe(path: str) -> None:
    """Fail unless ``path`` is relative and none of its components is empty, '.' or '..'."""
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise InvalidPartitionValue(f"unsafe path {path!r}")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise InvalidPartitionValue(f"unsafe path {path!r}")


def batch_id(integration_id: str, partition: str, event_ids: Iterable[str]) -> str:
    """Deterministic id of a batch: the same events of the same partition always get the same id, and
    different event sets practically never share one (first 64 bits of SHA-256)."""
    h = hashlib.sha256()
    h.update(integration_id.encode())
    h.update(b"\x00")
    h.update(partition.encode())
    for event_id in event_ids:
        h.update(b"\x00")
        h.update(event_id.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def file_name(prefix: str, epoch_seconds: int, batch: str, extension: str) -> str:
    """Seed-000 style name: ``events-1706540000-3f2a9c1b0d4e5f60.json.gz``."""
    return f"{prefix}-{epoch_seconds}-{batch}{extension}"


def generation_id(paths: Sequence[str]) -> str:
    """Deterministic id for a delivery report listing ``paths``."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def join(root: str, relative: str) -> str:
    """Join a destination root and a validated relative path (works for local paths and URLs)."""
    assert_relative_safe(relative)
    return root.rstrip("/") + "/" + relative
