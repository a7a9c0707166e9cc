"""Per-integration property selection (seed 002): strip or keep fields inside the JSON columns.

``{"exclude": ["context.ip", "traits.email"]}`` removes those keys (nested paths allowed);
``{"include": ["properties", "context.page.url"]}`` keeps only the listed paths, and a JSON column with
no listed path becomes null. Work happens only in integrations that configure a selection, and only on
the columns the paths name.
"""
from __future__ import annotations

import apache_beam as beam
import orjson
import pyarrow as pa


def _split(paths):
    by_root: dict[str, list[tuple[str, ...]]] = {}
    for path in paths:
        root, *rest = path.split(".")
        by_root.setdefault(root, []).append(tuple(rest))
    return by_root


def exclude_paths(obj: dict, paths) -> dict:
    for path in paths:
        parent = obj
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    return obj


def include_paths(obj: dict, paths) -> dict | None:
    if any(len(p) == 0 for p in paths):
        return obj
    out: dict = {}
    for path in paths:
        src, dst = obj, out
        for key in path[:-1]:
            src = src.get(key) if isinstance(src, dict) else None
            if not isinstance(src, dict):
                break
            dst = dst.setdefault(key, {})
        else:
            if isinstance(src, dict) and path[-1] in src:
                dst[path[-1]] = src[path[-1]]
    return out


def select_table(table: pa.Table, include=None, exclude=None) -> pa.Table:
    """Apply a selection to the JSON columns of an event batch."""
    from transforms.profiles.warehouse import JSON_COLUMNS

    by_root = _split(include or exclude)
    for column in JSON_COLUMNS:
        paths = by_root.get(column)
        if include is not None and paths is None:
            values = [None] * table.num_rows
        elif paths is None:
            continue
        else:
            values = []
            for text in table[column].to_pylist():
                if text is None:
                    values.append(None)
                    continue
                obj = orjson.loads(text)
                obj = include_paths(obj, paths) if include is not None else exclude_paths(obj, paths)
                values.append(orjson.dumps(obj))
        idx = table.schema.get_field_index(column)
        table = table.set_column(idx, column, pa.array(values, type=pa.string()))
    return table


# Clients put a user's traits in ``traits`` or in ``context.traits`` (analytics.js copies them into every
# event's context): an excluded trait is removed from both places, whichever the path names.
_TRAIT_ROOTS = ("traits.", "context.traits.")


def with_trait_mirrors(exclude: list[str]) -> list[str]:
    """``exclude`` plus, for each path under ``traits`` or ``context.traits``, the same key under the other."""
    out = list(exclude)
    for path in exclude:
        for root, other in (_TRAIT_ROOTS, _TRAIT_ROOTS[::-1]):
            if path.startswith(root) and other + path[len(root):] not in out:
                out.append(other + path[len(root):])
    return out


class SelectProperties(beam.PTransform):
    """Apply an integration's ``properties`` selection (``PropertySelection``). An excluded user trait is
    removed wherever the client put it (``traits.x`` and ``context.traits.x``)."""

    def __init__(self, selection):
        super().__init__()
        self._include = selection.include
        self._exclude = with_trait_mirrors(selection.exclude) if selection.exclude else selection.exclude

    def expand(self, tables):
        include, exclude = self._include, self._exclude
        return tables | beam.Map(lambda t: select_table(t, include, exclude)).with_output_types(pa.Table)
