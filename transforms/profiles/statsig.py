"""The ``statsig`` profile (seed 001): Statsig's S3 import layout, Parquet throughout.

- ``events/<YYYY-MM-DD>/``: Statsig's event shape, days in ``timezone`` (default America/Los_Angeles, as
  Statsig counts days in Pacific time):

  | column | type | from |
  |---|---|---|
  | ``timestamp`` | int64 | ``timestamp`` as Unix epoch milliseconds (UTC) |
  | ``event_name`` | string | ``event``, spaces as ``_`` (longer than 127 characters: dead letter) |
  | ``event_value`` | string | ``properties.<value_property>`` (default ``value``) as text, else null |
  | ``event_metadata`` | string | JSON object of ``properties`` with string values (never null) |
  | ``user`` | string | JSON ``{"userID", "customIDs": {"stableID"}, "custom"}`` from ``user_id``, ``anonymous_id``, ``traits`` (needs one id: else dead letter) |
  | ``timeuuid`` | string | ``event_id`` when a UUID, else a UUIDv5 of it (Statsig dedups on it) |

- ``metrics/<YYYY-MM-DD>/``: the configured daily metrics per unit, computed from the day's published
  event files once the day is complete: ``unit_id``, ``id_type`` (``user_id`` or ``stable_id``), ``date``
  (string), ``metric_name``, ``metric_value``, ``numerator``, ``denominator`` (doubles; the unused ones null).
- ``signals/<YYYY-MM-DD>/``: one row ``finished_date`` (string ``YYYY-MM-DD``) once the day is complete, or
  a ``mark_data_ready`` call instead.

A day is complete when the delivery watermark - the latest ``received_at`` of the events delivered (per
run in batch, per batch in streaming) - has passed the day's end in ``timezone`` plus
``allowed_lateness_seconds``, and the day's files are published (``transforms.sinks.files``, the same
completion that writes ``completion_marker`` files). Days are finished in date order and the finishing
stops at the first day that is not complete, so a day is never signalled before an earlier one.
"""
from __future__ import annotations

import uuid
from typing import Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from transforms.profiles.base import Profile
from transforms.profiles.maps import text
from transforms.secrets import SecretField
from transforms.storage import PublishError

EVENTS_SCHEMA = pa.schema([
    pa.field("timestamp", pa.int64(), nullable=False),
    pa.field("event_name", pa.string(), nullable=False),
    pa.field("event_value", pa.string()),
    pa.field("event_metadata", pa.string(), nullable=False),
    pa.field("user", pa.string(), nullable=False),
    pa.field("timeuuid", pa.string(), nullable=False),
])
METRICS_SCHEMA = pa.schema([
    pa.field("unit_id", pa.string()),
    pa.field("id_type", pa.string()),
    pa.field("date", pa.string()),
    pa.field("metric_name", pa.string()),
    pa.field("metric_value", pa.float64()),
    pa.field("numerator", pa.float64()),
    pa.field("denominator", pa.float64()),
])
SIGNALS_SCHEMA = pa.schema([pa.field("finished_date", pa.string(), nullable=False)])
_NAMESPACE = uuid.UUID("0b7c6a52-9d1e-4f3a-8c2b-5e6d7f8a9b0c")
MAX_NAME = 127


class NotForStatsig(ValueError):
    """An event Statsig's contract cannot hold (a dead letter ``profile_rejected``)."""


def timeuuid(event_id: str) -> str:
    try:
        return str(uuid.UUID(event_id))
    except ValueError:
        return str(uuid.uuid5(_NAMESPACE, event_id))


def event_row(row: dict, value_property: str = "value") -> dict:
    """One warehouse-profile row (JSON columns as text) -> a Statsig event row; raises ``NotForStatsig``."""
    name = (row["event"] or "").replace(" ", "_")
    if not name or len(name) > MAX_NAME:
        raise NotForStatsig(f"event name must be 1 to {MAX_NAME} characters for Statsig")
    if not row["user_id"] and not row["anonymous_id"]:
        raise NotForStatsig("Statsig needs a userID or a customID (user_id or anonymous_id)")
    props = orjson.loads(row["properties"]) if row["properties"] else {}
    traits = orjson.loads(row["traits"]) if row["traits"] else {}
    user = {}
    if row["user_id"]:
        user["userID"] = row["user_id"]
    user["customIDs"] = {"stableID": row["anonymous_id"]} if row["anonymous_id"] else {}
    if isinstance(traits, dict) and traits:
        user["custom"] = traits
    metadata = {k: text(v) for k, v in props.items() if v is not None} if isinstance(props, dict) else {}
    value = props.get(value_property) if isinstance(props, dict) else None
    return {"timestamp": row["timestamp_ms"], "event_name": name, "event_value": text(value),
            "event_metadata": orjson.dumps(metadata).decode(), "user": orjson.dumps(user).decode(),
            "timeuuid": timeuuid(row["event_id"])}


def to_events(rows: pa.Table, value_property: str = "value"):
    """``(table, rejected)``: Statsig event rows and ``(row index, reason)`` of the events it cannot hold."""
    ms = pc.cast(pc.cast(rows["timestamp"], pa.int64()), pa.int64()).to_pylist()
    out, rejected = [], []
    source = rows.select(["event_id", "event", "anonymous_id", "user_id", "properties", "traits"]).to_pylist()
    for i, row in enumerate(source):
        row["timestamp_ms"] = ms[i] // 1000
        try:
            out.append(event_row(row, value_property))
        except NotForStatsig as exc:
            rejected.append((i, str(exc)))
    return pa.Table.from_pylist(out, schema=EVENTS_SCHEMA), rejected


def _unit(user_json: str, id_type: str):
    user = orjson.loads(user_json)
    if id_type == "user_id":
        return user.get("userID")
    return (user.get("customIDs") or {}).get("stableID")


def _number(value):
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def compute_metrics(events: pa.Table, day: str, metrics: list) -> pa.Table:
    """The day's metric rows from its Statsig event rows. Each metric: ``name``, ``event`` (an event name as
    written, spaces as ``_``), ``aggregate`` (``count``, ``sum`` of ``property``, or ``ratio``: numerator the
    sum of ``property``, denominator the count), ``id_type`` (``user_id`` or ``stable_id``)."""
    acc: dict[tuple, list] = {}
    rows = events.select(["event_name", "event_metadata", "user", "event_value"]).to_pylist()
    for m in metrics:
        event_name = m.event.replace(" ", "_")
        for row in rows:
            if row["event_name"] != event_name:
                continue
            unit = _unit(row["user"], m.id_type)
            if unit is None:
                continue
            slot = acc.setdefault((m.name, m.id_type, unit, m.aggregate), [0.0, 0])
            if m.aggregate != "count":
                meta = orjson.loads(row["event_metadata"])
                number = _number(meta.get(m.property))
                if number is not None:
                    slot[0] += number
            slot[1] += 1
    out = []
    for (name, id_type, unit, aggregate), (total, count) in sorted(acc.items()):
        value = float(count) if aggregate == "count" else total if aggregate == "sum" else None
        out.append({"unit_id": unit, "id_type": id_type, "date": day, "metric_name": name, "metric_value": value,
                    "numerator": total if aggregate == "ratio" else None,
                    "denominator": float(count) if aggregate == "ratio" else None})
    return pa.Table.from_pylist(out, schema=METRICS_SCHEMA)


class StatsigMetric(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    name: str = Field(min_length=1, max_length=127)
    """The metric's name in Statsig."""
    event: str = Field(min_length=1)
    """The event (`event` column) it is computed from."""
    aggregate: Literal["count", "sum", "ratio"] = "count"
    """Per unit and day: count of events, sum of `property`, or their ratio."""
    property: str | None = None
    """The property summed (needed by `sum` and `ratio`)."""
    id_type: Literal["user_id", "stable_id"] = "user_id"
    """The unit: the user id, or the stable id (`anonymous_id`)."""

    @model_validator(mode="after")
    def _property(self):
        if self.aggregate != "count" and not self.property:
            raise ValueError(f"metric {self.name!r}: aggregate {self.aggregate} needs 'property'")
        return self


class StatsigSettings(BaseModel):
    """``profile: statsig`` options (see ``transforms.profiles.statsig``)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    timezone: str = "America/Los_Angeles"
    """Time zone of Statsig's days (IANA name)."""
    allowed_lateness_seconds: float = Field(3_600, ge=0, le=30 * 86_400)
    """A day is finished once data received this long after its end was delivered."""
    value_property: str = "value"
    """The property that becomes `event_value`."""
    metrics: list[StatsigMetric] = Field(default_factory=list)
    """Metrics computed per unit from each finished day's events."""
    signal: Literal["dataset", "mark_data_ready"] = "dataset"
    """How a finished day is signalled: a `finished_date` file, or Statsig's mark_data_ready call."""
    api_key: SecretField | None = None
    """Statsig server secret for `mark_data_ready` (a reference such as `env:STATSIG_KEY`)."""
    mark_data_ready_url: str = "https://api.statsig.com/v1/mark_data_ready"
    """The mark_data_ready endpoint."""
    mark_data_ready_types: list[Literal["metrics", "events"]] = Field(default_factory=lambda: ["metrics"])
    """The `type`s signalled, one call each."""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _signal(self):
        if self.signal == "mark_data_ready" and self.api_key is None:
            raise ValueError("signal mark_data_ready needs api_key (a server secret, e.g. env:STATSIG_KEY)")
        return self


def mark_data_ready(settings, day: str, end_us: int) -> dict:
    """Statsig's mark_data_ready call for everything up to ``end_us``, the end of ``day`` in its time zone; raises
    ``commit.PublishError`` (without the key) when Statsig does not accept it, so the day stays unsignalled."""
    import urllib.error
    import urllib.request

    from transforms.secrets import redact

    end_s = end_us // 1_000_000
    for kind in settings.mark_data_ready_types:
        request = urllib.request.Request(
            settings.mark_data_ready_url, method="POST", data=orjson.dumps({"timestamp": end_s, "type": kind}),
            headers={"statsig-api-key": settings.api_key.get(), "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise PublishError(redact(f"mark_data_ready for {day} ({kind}) failed: {exc}")) from None
    return {"mark_data_ready": end_s, "types": list(settings.mark_data_ready_types)}


class StatsigProfile(Profile):
    """Statsig's S3 import: Parquet, ``events/<day>/`` in ``statsig.timezone``; a completed day gets its metrics
    and its ``finished_date`` signal (or the mark_data_ready call)."""

    name = "statsig"
    file_format = "parquet"

    def defaults(self, data: dict) -> dict:
        data = super().defaults(data)
        if "partition_by" in data or "partition_timezone" in data:
            raise ValueError("profile statsig has a fixed layout (events/, metrics/, signals/ by day "
                             "in statsig.timezone); leave partition_by and partition_timezone out")
        tz = (data.get("statsig") or {}).get("timezone", "America/Los_Angeles")
        return {**data, "partition_by": "events/{date}", "partition_timezone": tz}

    def rejected(self, table: pa.Table, config) -> list[tuple[int, str]]:
        return to_events(table, self.settings(config).value_property)[1]

    def shape(self, table: pa.Table, config) -> tuple[pa.Table, int]:
        return to_events(table, self.settings(config).value_property)[0], 0

    def completes_partitions(self, config) -> bool:
        return True

    def completion_lateness_seconds(self, config) -> float:
        return self.settings(config).allowed_lateness_seconds

    def after_completion(self, partition: str) -> tuple[str, str]:
        day = partition.rsplit("/", 1)[-1]
        return "day_already_finished", f"{day} was already signalled as finished to Statsig"

    def finish_partition(self, storage, partition: str, end_us: int, config) -> dict:
        """The day's metrics (from its published event files) and its signal."""
        import hashlib
        import io

        import pyarrow.parquet as pq

        from transforms import commit, formats

        settings, day = self.settings(config), partition.rsplit("/", 1)[-1]
        names = [n for n in storage.list_names(partition) if n.endswith(".parquet")]
        events = pa.concat_tables([pq.read_table(io.BytesIO(storage.read(n))) for n in names]) if names \
            else EVENTS_SCHEMA.empty_table()
        out = {"day": day, "event_files": len(names), "events": events.num_rows}
        if settings.metrics:
            table = compute_metrics(events, day, settings.metrics)
            data = formats.encode("parquet", table, config.compression)
            name = f"metrics/{day}/metrics-{hashlib.sha256(data).hexdigest()[:16]}.parquet"
            out["metrics"] = commit.publish_bytes(storage, name, data, table.num_rows)
        if settings.signal == "dataset":
            table = pa.table({"finished_date": [day]}, schema=SIGNALS_SCHEMA)
            data = formats.encode("parquet", table, config.compression)
            out["signal"] = commit.publish_bytes(storage, f"signals/{day}/finished_date-{day}.parquet", data, 1)
        else:
            out["signal"] = mark_data_ready(settings, day, end_us)
        return out


PROFILE = StatsigProfile()
