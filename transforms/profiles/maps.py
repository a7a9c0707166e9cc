"""String maps for importer profiles: JSON values -> ``map<string,string>`` entries, keys lower-cased.

Values: strings as they are; booleans ``true``/``false``; numbers, arrays and objects as compact JSON; nulls
are left out. Keys are lower-cased; when two keys collide after lower-casing (``Plan`` and ``plan``), the
key already in lower case keeps the name, else the first in code-point order of the original keys, and
every other colliding entry is kept under ``<key>__2``, ``<key>__3`` ... in that same order, so no value is
lost; ``collisions`` counts them (reported in the run's metrics).
"""
from __future__ import annotations

import orjson


def text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode()


def lower_map(obj: dict | None) -> tuple[list[tuple[str, str]], int]:
    """``(entries, collisions)``: the entries of ``obj`` with lower-cased keys and string values."""
    if not obj:
        return [], 0
    groups: dict[str, list[str]] = {}
    for key in obj:
        groups.setdefault(key.lower(), []).append(key)
    entries, collisions = [], 0
    taken = set(groups)
    for lower, originals in groups.items():
        originals = sorted(originals, key=lambda k: (k != lower, k))
        for n, key in enumerate(originals):
            value = text(obj[key])
            if value is None:
                continue
            name = lower
            if n:
                collisions += 1
                suffix = n + 1
                while f"{lower}__{suffix}" in taken:
                    suffix += 1
                name = f"{lower}__{suffix}"
                taken.add(name)
            entries.append((name, value))
    return entries, collisions
