"""The integrations file: a JSON list of integration objects, validated all at once.

Each object has the shape of the management-API body in seed 000::

    {"source_id": "src_abc123", "vendor": "files", "name": "Local lake", "enabled": true,
     "config": {"path": "out/lake", "file_format": "parquet", "batch_size": 500}}

``integration_id`` is optional; when absent it is derived stably from ``name`` ("Local lake" ->
``local_lake``). ``config`` is checked by the vendor's own model (see ``transforms.sinks``). Every
config accepts ``batch_size`` (default 500), ``batch_interval_seconds`` (default 60), ``consent`` and
``properties``.

Use::

    integrations, errors = load_integrations("integrations.json")
    if errors: print("\\n".join(errors))   # every problem, each with its JSON path; values never echoed
"""
from __future__ import annotations

import re
import typing
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_PURPOSE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_INTEGRATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SELECTABLE_ROOTS = ("context", "properties", "traits")
# The run's own counters are named ``<name>`` or ``dead_letter.<reason>`` beside ``<integration_id>.<name>``:
# an integration with one of these ids would read the run's counters as its own.
RESERVED_IDS = frozenset({"dead_letter", "input", "blank_lines", "duplicates", "unique", "tenant"})


class ConsentConfig(BaseModel):
    """``{"require": ["analytics"]}``: an event passes only if ``context.consent.<purpose>`` is JSON
    ``true`` for every listed purpose."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    require: list[str] = Field(min_length=1)
    """Purposes that must all be JSON `true` in `context.consent` (names of letters, digits, `_`, `.`, `-`)."""

    @field_validator("require")
    @classmethod
    def _purposes(cls, value: list[str]) -> list[str]:
        for purpose in value:
            if not _PURPOSE.match(purpose):
                raise ValueError("purposes are names of letters, digits, '_', '.' or '-' (at most 64)")
        return list(dict.fromkeys(value))


class PropertySelection(BaseModel):
    """``{"exclude": ["context.ip", "traits.email"]}`` or ``{"include": [...]}`` (not both). Paths are
    dotted and start at ``context``, ``properties`` or ``traits``; ``include`` keeps only the listed
    paths within those three columns (a bare root such as ``"properties"`` keeps all of it)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    include: list[str] | None = None
    """Keep only these dotted paths of `context`/`properties`/`traits` (a bare root keeps it all)."""
    exclude: list[str] | None = None
    """Remove these dotted paths (each inside `context`, `properties` or `traits`)."""

    @model_validator(mode="after")
    def _one_of(self) -> PropertySelection:
        if (self.include is None) == (self.exclude is None):
            raise ValueError("give exactly one of 'include' or 'exclude'")
        for path in self.include or self.exclude or []:
            parts = path.split(".")
            if parts[0] not in _SELECTABLE_ROOTS or any(p == "" for p in parts):
                raise ValueError(f"path {path!r} must be dotted and start with context, properties or traits")
            if self.exclude is not None and len(parts) == 1:
                raise ValueError(f"exclude path {path!r} names a whole column; name a key inside it")
        return self


class BaseDestinationConfig(BaseModel):
    """Settings every vendor accepts. Vendor models subclass this."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    batch_size: int = Field(500, ge=1, le=1_000_000)
    """At most this many events per file (1 to 1,000,000)"""
    batch_interval_seconds: float = Field(60, gt=0, le=86_400)
    """Accepted now; used by streaming delivery."""
    consent: ConsentConfig | None = None
    """`{"require": ["analytics", ...]}`: deliver an event only if `context.consent.<purpose>` is JSON `true` for
    every purpose; missing, null, `"true"`, `"false"`, 0/1 or malformed consent means dropped (counted, stored
    nowhere). Without it nothing is filtered."""
    properties: PropertySelection | None = None
    """`{"exclude": ["context.ip", "traits.email"]}` removes those paths; `{"include": ["properties",
    "context.page.url"]}` keeps only the listed paths of `context`/`properties`/`traits` (a column with no
    listed path becomes null)"""
    profile: Literal["warehouse"] = "warehouse"
    """Output row shape: the 13 canonical columns (docs/events.md)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value, info):
        # JSON true is not a count: pydantic's lax mode would take it as 1 (batch_size: true -> batches of 1).
        if isinstance(value, bool):
            annotation = cls.model_fields[info.field_name].annotation
            if annotation in (int, float) or set(typing.get_args(annotation)) & {int, float}:
                raise ValueError("expected a number, not true/false")
        return value

    def destination(self) -> str | None:
        """Where this config writes, as ``scheme:location`` (a location ending in ``/`` is a prefix that
        holds everything under it), for refusing two integrations that would write the same place; None
        when the vendor does not say. Vendor models override it."""
        return None

    def integration_problems(self, integration: Integration) -> list[tuple[str, str]]:
        """Problems of this config together with its integration's own fields (``source_id``...), as
        ``(field, message)`` pairs; e.g. a value the destination's columns cannot hold. Vendors override it."""
        return []


class Integration(BaseModel):
    """One configured destination."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    source_id: str = Field(min_length=1, max_length=128)
    """Source identifier, written to every row."""
    vendor: str
    """`files`, `duckdb`, `s3`, `gcs`, `sftp`, `bigquery`, `snowflake` or `redshift`."""
    name: str = Field(min_length=1, max_length=256)
    """Display name."""
    enabled: bool = True
    """`false` keeps the integration in the file without a branch in the pipeline."""
    integration_id: str | None = None
    """Optional; derived from `name` when absent (`"Local lake"` → `local_lake`); unique; not one of the run's own
    counter names (`dead_letter`, `input`, `blank_lines`, `duplicates`, `unique`, `tenant`)"""
    config: Any
    """The vendor's settings; unknown keys are errors (typos are caught)"""

    @model_validator(mode="after")
    def _derive_id(self) -> Integration:
        if self.integration_id is None:
            self.integration_id = derive_integration_id(self.name)
        elif not _INTEGRATION_ID.match(self.integration_id):
            raise ValueError("integration_id: letters, digits, '_' or '-', starting with a letter or digit (at most 64)")
        if self.integration_id in RESERVED_IDS:
            raise ValueError(f"integration_id {self.integration_id!r} (given or derived from name) is reserved for "
                             f"the run's own counters ({', '.join(sorted(RESERVED_IDS))}): choose another name "
                             "or integration_id")
        return self


def derive_integration_id(name: str) -> str:
    """Stable id from a display name: lower case, runs of other characters become ``_``."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:64]
    if not slug:
        raise ValueError("name must contain a letter or digit to derive integration_id from")
    return slug


def _format_errors(prefix: str, exc: ValidationError) -> list[str]:
    # Only the location and message: pydantic's 'input' would echo values, which may be secrets.
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        path = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        out.append(f"{path}: {msg}")
    return out


def validate_integrations(data: Any) -> tuple[list[Integration], list[str]]:
    """Validate parsed JSON. Returns the enabled-or-not integrations and every problem found."""
    from transforms.sinks import REGISTRY  # sinks import Beam; keep this module importable without it

    if isinstance(data, dict):
        data = [data]  # one integration object, as the seed's API body, is accepted too
    if not isinstance(data, list):
        return [], ["$: the integrations file must hold a JSON list of integration objects"]
    integrations: list[Integration] = []
    positions: list[int] = []  # each valid integration's index in ``data``, for error paths
    errors: list[str] = []
    for i, item in enumerate(data):
        where = f"$[{i}]"
        try:
            integ = Integration.model_validate(item)
        except ValidationError as exc:
            errors.extend(_format_errors(where, exc))
            continue
        vendor = REGISTRY.get(integ.vendor)
        if vendor is None:
            errors.append(f"{where}.vendor: unsupported vendor (supported: {', '.join(sorted(REGISTRY))})")
            continue
        try:
            integ.config = vendor.config_model.model_validate(integ.config)
        except ValidationError as exc:
            errors.extend(_format_errors(f"{where}.config", exc))
            continue
        problems = integ.config.integration_problems(integ)
        if problems:
            errors.extend(f"{where}.{field}: {message}" for field, message in problems)
            continue
        integrations.append(integ)
        positions.append(i)
    seen: dict[str, int] = {}
    for i, integ in zip(positions, integrations):
        if integ.integration_id in seen:
            errors.append(f"$[{i}].integration_id: duplicate integration_id {integ.integration_id!r} "
                          f"(give each integration a distinct name or integration_id)")
        seen[integ.integration_id] = i
    errors += shared_destination_errors(list(zip(positions, integrations)))
    if not errors and not any(integ.enabled for integ in integrations):
        errors.append("$: no enabled integration")
    return integrations, errors


def shared_destination_errors(indexed) -> list[str]:
    """Two enabled integrations writing the same place (a table, or overlapping paths or prefixes) deliver
    every event twice, under whichever consent and property rules wrote last: refused. ``indexed``:
    ``(index in the file, Integration)`` pairs."""
    errors = []
    placed: list[tuple[str, Integration]] = []
    for i, integ in indexed:
        where = integ.config.destination() if integ.enabled and hasattr(integ.config, "destination") else None
        if where is None:
            continue
        for other_where, other in placed:
            if where == other_where or (other_where.endswith("/") and where.startswith(other_where)) or \
                    (where.endswith("/") and other_where.startswith(where)):
                errors.append(f"$[{i}].config: writes where integration "
                              f"{other.integration_id!r} writes ({integ.vendor}); every event would be delivered "
                              "twice there - give each its own table, path or prefix")
                break
        placed.append((where, integ))
    return errors


def load_integrations(path: str) -> tuple[list[Integration], list[str]]:
    """Read and validate an integrations file from any Beam filesystem path, or the integrations the
    management API's database holds (``sqlite:///PATH``, ``postgresql://...``; its secrets as encrypted
    references, opened with ``BEAMHOUSE_MASTER_KEY`` where they are used)."""
    from transforms import configdb

    if configdb.is_database_url(path):
        try:
            bodies = configdb.stored_bodies(path)
        except configdb.ConfigDBError as exc:
            return [], [f"{configdb.display_url(path)}: {exc}"]
        except Exception as exc:  # noqa: BLE001 - the driver's message may hold the URL: name the type only
            return [], [f"{configdb.display_url(path)}: cannot read the configuration database ({type(exc).__name__})"]
        if not bodies:
            return [], [f"{configdb.display_url(path)}: the configuration database holds no integration"]
        return validate_integrations(bodies)
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as fh:
            raw = fh.read()
    except Exception as exc:  # noqa: BLE001 - any I/O problem is a configuration error here
        return [], [f"{path}: cannot read the integrations file ({type(exc).__name__})"]
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [], [f"{path}: not valid JSON ({exc})"]
    return validate_integrations(data)
