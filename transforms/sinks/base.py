"""The one extension point: what a destination declares about itself, in its own module.

A destination module ends with ``DESTINATION = Destination(...)`` and gets one line in
``transforms.sinks.REGISTRY``; nothing else in the code base names the vendor. What it declares:

- ``config_model``: its pydantic config (the integration's ``config`` object), derived from
  ``transforms.integrations.BaseDestinationConfig``. The model also carries the optional per-config hooks:
  ``preflight() -> list[str]`` (start-up checks run before any work: each problem one line, no secret),
  ``destination() -> str`` (where it delivers, shown to users), ``open_storage(route)`` (file
  destinations: a ``transforms.storage.Storage``) and ``integration_problems(integration)``.
- ``write``: ``(integration) -> PTransform`` taking prepared event batches and returning a ``WriteResult``:
  its dead letters (every write returns its failures), and what it delivered.
- ``ddl``: ``(config) -> str``, the statements a user runs to create its tables (``pipelines.ddl``).
- ``relocate``: ``(config, output) -> config``, the same export writing under ``output``
  (``pipelines.regenerate --output``).
- ``archive``: ``(config) -> str | None``, the root of an NDJSON archive that ``pipelines.regenerate``
  can read back, when this integration is one.
- ``lifecycle``: a ``transforms.lifecycle.Lifecycle``, when retention can be applied as bucket rules
  (``pipelines.retention``).

See CONTRIBUTING.md, "Adding a destination".
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple


class WriteResult(NamedTuple):
    """What a destination's write transform returns: PCollections, None where it has no such output."""

    dead_letters: Any  # dead-letter records of the events it refused (transforms.deadletter.make_record)
    delivered: Any = None  # one record per published file, load or request
    reports: Any = None  # one record per delivery report written
    completed: Any = None  # one record per partition completed (markers, day signals)


@dataclass(frozen=True)
class Destination:
    config_model: type
    write: Callable[[Any], Any]
    ddl: Callable[[Any], str] | None = None
    relocate: Callable[[Any, str], Any] | None = None
    archive: Callable[[Any], str | None] | None = None
    lifecycle: Any = None  # transforms.lifecycle.Lifecycle
