"""The ``hackle`` profile (seed 004): Hackle's Data Import Parquet contract, stored by day.

| column | type | from |
|---|---|---|
| ``insert_id`` | string | ``event_id`` when it is a UUID (lower case), else a UUIDv5 of it: stable across retries |
| ``event_key`` | string | ``event`` |
| ``ts`` | timestamp(ms, UTC) | ``timestamp``, sub-millisecond part truncated |
| ``metric_value`` | decimal(24, 6) | ``properties.<metric_property>`` (default ``revenue``) when numeric, else 0.0 |
| ``identifiers`` | map<string,string> | ``id`` <- ``anonymous_id`` (else ``user_id``), ``user_id``, ``device_id`` <- ``context.device.id``, ``session_id`` <- ``context.session_id``; plus ``identifier_paths`` |
| ``event_properties`` | map<string,string> | ``properties`` |
| ``user_properties`` | map<string,string> | ``traits``, else ``context.traits`` |
| ``platform_properties`` | map<string,string> | ``osname`` <- ``context.os.name``, ``osversion``, ``appversion`` <- ``context.app.version``, ``versionname`` <- ``context.app.build``, ``language`` <- ``context.locale``, ``devicevendor`` <- ``context.device.manufacturer``, ``devicemodel`` <- ``context.device.model``, ``platform`` (``Mobile`` for iOS/Android, else ``Web``) |

Map keys are lower-cased (``transforms.profiles.maps`` for collisions). Hackle requires ``osname`` and
``appversion``: when the event has none they are ``unknown``.
"""
from __future__ import annotations

import uuid
from decimal import ROUND_DOWN, Decimal, InvalidOperation

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from transforms.profiles.base import Profile
from transforms.profiles.maps import lower_map, text

STRING_MAP = pa.map_(pa.string(), pa.string())
SCHEMA = pa.schema([
    pa.field("insert_id", pa.string(), nullable=False),
    pa.field("event_key", pa.string(), nullable=False),
    pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("metric_value", pa.decimal128(24, 6), nullable=False),
    pa.field("identifiers", STRING_MAP),
    pa.field("event_properties", STRING_MAP),
    pa.field("user_properties", STRING_MAP),
    pa.field("platform_properties", STRING_MAP),
])
_NAMESPACE = uuid.UUID("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f")  # fixed: insert ids must never change
_SIX = Decimal("0.000001")
_MAX = Decimal(10) ** 18


def insert_id(event_id: str) -> str:
    try:
        return str(uuid.UUID(event_id))
    except ValueError:
        return str(uuid.uuid5(_NAMESPACE, event_id))


def metric(value) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return Decimal(0).quantize(_SIX)
    try:
        number = Decimal(str(value)).quantize(_SIX, rounding=ROUND_DOWN)
    except (InvalidOperation, ValueError):
        return Decimal(0).quantize(_SIX)
    return number if number.is_finite() and abs(number) < _MAX else Decimal(0).quantize(_SIX)


def _get(obj, *path):
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def to_hackle(rows: pa.Table, metric_property: str = "revenue", identifier_paths: dict | None = None):
    """``(table, collisions)``: a warehouse-profile batch (with ``context``/``properties``/``traits`` as
    JSON text) in Hackle's schema."""
    cols = {name: [] for name in SCHEMA.names}
    collisions = 0
    for row in rows.select(["event_id", "event", "anonymous_id", "user_id", "context", "properties",
                            "traits"]).to_pylist():
        context = orjson.loads(row["context"]) if row["context"] else {}
        props = orjson.loads(row["properties"]) if row["properties"] else {}
        traits = orjson.loads(row["traits"]) if row["traits"] else _get(context, "traits")
        ids = {"id": row["anonymous_id"] or row["user_id"], "user_id": row["user_id"],
               "device_id": text(_get(context, "device", "id")), "session_id": text(_get(context, "session_id"))}
        for name, path in (identifier_paths or {}).items():
            root, *rest = path.split(".")
            source = {"context": context, "properties": props, "traits": traits or {}}.get(root)
            ids[name] = text(_get(source, *rest))
        os_name = text(_get(context, "os", "name"))
        platform = {"osname": os_name or "unknown", "osversion": text(_get(context, "os", "version")),
                    "appversion": text(_get(context, "app", "version")) or "unknown",
                    "versionname": text(_get(context, "app", "build")), "language": text(_get(context, "locale")),
                    "devicevendor": text(_get(context, "device", "manufacturer")),
                    "devicemodel": text(_get(context, "device", "model")),
                    "platform": "Mobile" if (os_name or "").lower() in ("ios", "android") else "Web"}
        cols["insert_id"].append(insert_id(row["event_id"]))
        cols["event_key"].append(row["event"])
        cols["metric_value"].append(metric(props.get(metric_property) if isinstance(props, dict) else None))
        for name, obj in (("identifiers", ids), ("event_properties", props if isinstance(props, dict) else {}),
                          ("user_properties", traits if isinstance(traits, dict) else {}),
                          ("platform_properties", platform)):
            entries, clashes = lower_map(obj)
            collisions += clashes
            cols[name].append(entries)
    ts = pc.cast(pc.floor_temporal(rows["timestamp"], unit="millisecond"), pa.timestamp("ms", tz="UTC"))
    arrays = [pa.array(cols["insert_id"], pa.string()), pa.array(cols["event_key"], pa.string()), ts,
              pa.array(cols["metric_value"], pa.decimal128(24, 6))]
    arrays += [pa.array(cols[n], STRING_MAP) for n in ("identifiers", "event_properties", "user_properties",
                                                       "platform_properties")]
    return pa.Table.from_arrays(arrays, schema=SCHEMA), collisions


class HackleSettings(BaseModel):
    """``profile: hackle`` options (see ``transforms.profiles.hackle``)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    metric_property: str = Field("revenue", min_length=1, max_length=256)
    """The property whose numeric value becomes `metric_value`."""
    identifier_paths: dict[str, str] = Field(default_factory=dict)
    """Extra identifiers: name -> dotted path in `context`/`properties`/`traits`."""

    @field_validator("identifier_paths")
    @classmethod
    def _paths(cls, value):
        for name, path in value.items():
            if path.split(".")[0] not in ("context", "properties", "traits"):
                raise ValueError(f"identifier {name!r}: path must start with context, properties or traits")
        return value


class HackleProfile(Profile):
    """Hackle's Data Import: Parquet, stored by day (``partition_by`` defaults to ``{date}``)."""

    name = "hackle"
    file_format = "parquet"

    def defaults(self, data: dict) -> dict:
        data = super().defaults(data)
        data.setdefault("partition_by", "{date}")
        return data

    def check(self, config) -> None:
        from transforms import partitioning

        fields = partitioning.parse_template(config.partition_by)
        if any(code in fields.strftime for code in ("%H", "%M", "%S")) or {"_min15", "_min30"} & set(fields.fields):
            raise ValueError("profile hackle stores data by day: partition_by must not go below a day")

    def shape(self, table: pa.Table, config) -> tuple[pa.Table, int]:
        settings = self.settings(config)
        return to_hackle(table, settings.metric_property, settings.identifier_paths)


PROFILE = HackleProfile()
