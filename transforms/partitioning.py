"""Where files go: pure functions from events to relative paths and file names. No Beam, no I/O.

A partition template is a relative path with placeholders::

    year={yyyy}/month={MM}/day={dd}/hour={HH}            (the default, by event time, UTC)
    tenant_id={tenant_id}/app_id={app_id}/{yyyy}/{MM}/{dd}/{HH}
    date={date}/hour={HH}

Time placeholders: ``yyyy MM dd HH mm ss date`` (``date`` is ``YYYY-MM-DD``) and the minute ranges
``min15`` (``00-15``, ``15-30``, ``30-45``, ``45-60``) and ``min30`` (``00-30``, ``30-60``). Field
placeholders: ``tenant_id app_id type event dialect``. Field values come from events, so they are encoded reversibly
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

DEFAULT_TEMPLATE = "year={yyyy}/month={MM}/day={dd}/hour={HH}"

# strftime codes for the time placeholders (Arrow's strftime implements the same codes).
TIME_TOKENS = {
    "yyyy": "%Y",
    "MM": "%m",
    "dd": "%d",
    "HH": "%H",
    "mm": "%M",
    "ss": "%S",
    "date": "%Y-%m-%d",
}
# Minute ranges (seed 002's ``min=00-15``): computed per event, then placed like field values.
RANGE_TOKENS = {"min15": 15, "min30": 30}
# Placeholders filled from event values; the value is the internal column that holds it.
FIELD_TOKENS = {
    "tenant_id": "_tenant_id",
    "app_id": "_app_id",
    "type": "type",
    "event": "event",
    "dialect": "_dialect",
    # computed from the partition time (see ``minute_range_labels``), never from event values
    "min15": "_min15",
    "min30": "_min30",
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
            known = ", ".join(sorted({*TIME_TOKENS, *FIELD_TOKENS}))
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
            out.append(f"%{b:02X}")
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


def batch_id(integration_id: str, partition: str, event_ids: Iterable[str | bytes]) -> str:
    """Deterministic id of a batch: the same events of the same partition always get the same id, and
    different event sets practically never share one (first 64 bits of SHA-256). ``event_ids``: strings or
    their UTF-8 bytes (as an Arrow column gives them, with no ``str`` made per id).

    The digest is of the integration id, the partition and each event id, each preceded by a NUL byte
    but the first; the ids go to the hash as one joined buffer (one ``update``, not two per id)."""
    h = hashlib.sha256()
    h.update(integration_id.encode())
    h.update(b"\x00")
    h.update(partition.encode())
    encoded = [e if isinstance(e, bytes) else e.encode("utf-8", "surrogatepass") for e in event_ids]
    if encoded:
        h.update(b"\x00")
        h.update(b"\x00".join(encoded))
    return h.hexdigest()[:16]


def file_name(prefix: str, epoch_seconds: int, batch: str, extension: str) -> str:
    """Seed-000 style name: ``events-1706540000-3f2a9c1b0d4e5f60.json.gz``."""
    return f"{prefix}-{epoch_seconds}-{batch}{extension}"


def minute_range_labels(width: int) -> list[str]:
    """Labels of the minute ranges of an hour: ``["00-15", "15-30", "30-45", "45-60"]`` for 15."""
    return [f"{start:02d}-{start + width:02d}" for start in range(0, 60, width)]


# File names: a template of literal characters and placeholders, without the extension.
FILE_TOKENS = ("yyyy", "MM", "dd", "HH", "mm", "ss", "epoch", "id", "n")
_FILE_LITERAL = re.compile(r"^[A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class FileTemplate:
    """A parsed file-name template such as ``events-{epoch}-{id}`` or seed 003's
    ``data_{yyyy}_{MM}_{dd}_{HH}_{mm}_{ss}``. Times are those of the file's earliest event (UTC)."""

    source: str

    @property
    def content_addressed(self) -> bool:
        """True when the name contains the batch id, so equal names mean equal contents."""
        return "{id}" in self.source


def parse_file_template(template: str) -> FileTemplate:
    """Validate a file-name template; raises ``ValueError`` saying what is wrong."""
    if not isinstance(template, str) or not template:
        raise ValueError("file name template must be a non-empty string")
    pos = 0
    tokens = []
    for m in _TOKEN.finditer(template):
        if not _FILE_LITERAL.match(template[pos:m.start()]):
            raise ValueError("file names may only contain letters, digits, '_', '.', '-' and placeholders")
        if m.group(1) not in FILE_TOKENS:
            raise ValueError(f"unknown file name placeholder {{{m.group(1)}}} (known: {', '.join(FILE_TOKENS)})")
        tokens.append(m.group(1))
        pos = m.end()
    if not _FILE_LITERAL.match(template[pos:]):
        raise ValueError("file names may only contain letters, digits, '_', '.', '-' and placeholders")
    if template[0] in "_.":
        raise ValueError("file names must not start with '_' or '.', which readers skip")
    if not tokens:
        raise ValueError("file name template needs at least one placeholder, e.g. {id} or {ss}")
    return FileTemplate(template)


def render_file_name(template: FileTemplate, first_event_us: int, batch: str, extension: str,
                     collision: int = 0, number: int = 1) -> str:
    """The file name for a batch. ``{n}`` is ``number``, the file's 1-based position among the files of its
    partition in one generation. ``collision`` > 0 appends ``_<n>`` (used only for templates without
    ``{id}`` when another batch already holds the name; see ``transforms.commit``)."""
    import datetime as _dt

    seconds = first_event_us // 1_000_000
    t = _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=seconds)
    values = {"yyyy": f"{t.year:04d}", "MM": f"{t.month:02d}", "dd": f"{t.day:02d}", "HH": f"{t.hour:02d}",
              "mm": f"{t.minute:02d}", "ss": f"{t.second:02d}", "epoch": str(seconds), "id": batch,
              "n": str(number)}
    stem = _TOKEN.sub(lambda m: values[m.group(1)], template.source)
    if collision:
        stem = f"{stem}_{collision}"
    return stem + extension


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


# Completion (``completion_marker``): how long a partition's time span is, from its finest time placeholder.
_SPANS = (("%S", "second"), ("%M", "minute"), ("_min15", "min15"), ("_min30", "min30"), ("%H", "hour"),
          ("%d", "day"), ("%m", "month"), ("%Y", "year"))


def time_span(template: Template) -> str | None:
    """The span one partition of ``template`` covers (``second`` ... ``year``), or None when the template
    has no time placeholder (its partitions never end)."""
    for code, span in _SPANS:
        if code in template.strftime or code in template.fields:
            return span
    return None


def partition_end_us(template: Template, time_us: int, tz: str = "UTC") -> int | None:
    """When the partition holding an event at ``time_us`` ends (exclusive, epoch µs), days and hours as the
    clock in ``tz`` shows them (a local day may last 23 or 25 hours). None when partitions never end.

    >>> partition_end_us(parse_template("date={date}/hour={HH}"), 1769662800_000000)  # 05:00Z
    1769666400000000
    >>> partition_end_us(parse_template("{date}"), 1769662800_000000, "America/Los_Angeles")  # 08:00Z, the 29th
    1769673600000000
    """
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    span = time_span(template)
    if span is None:
        return None
    zone = ZoneInfo(tz)
    t = datetime.fromtimestamp(time_us // 1_000_000, zone).replace(tzinfo=None)  # the wall clock in tz
    if span == "year":
        end = datetime(t.year + 1, 1, 1)
    elif span == "month":
        end = datetime(t.year + (t.month == 12), t.month % 12 + 1, 1)
    elif span == "day":
        end = datetime(t.year, t.month, t.day) + timedelta(days=1)
    else:
        minutes = {"hour": 60, "min30": 30, "min15": 15, "minute": 1}.get(span)
        if minutes is None:  # second
            end = t.replace(microsecond=0) + timedelta(seconds=1)
        else:
            start = t.replace(minute=t.minute - t.minute % minutes, second=0, microsecond=0)
            end = start + timedelta(minutes=minutes)
    # The end as a wall-clock time in tz; of its two readings the later one, so that a repeated hour is
    # whole and an end skipped by a clock change is the moment of the jump.
    return max(int(end.replace(tzinfo=zone, fold=f).timestamp()) for f in (0, 1)) * 1_000_000
