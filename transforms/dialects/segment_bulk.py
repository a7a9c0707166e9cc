"""The fast path for Segment events: typed decoding in C (msgspec) and column-at-a-time checks, instead of
building a Python dict per event and walking it.

Each line is decoded twice by msgspec, both times in C with no dict built: once into ``_Event`` (only
the known top-level keys, with their types and lengths checked; ``context``/``properties``/``traits``
kept as the JSON text sent), once into a small "probe" holding just the values read for decisions
(tenant, app, consent flags, the properties that top-level fields such as a page's ``name`` move into).
``BulkNormaliser.run`` then checks and converts whole columns (timestamps by Arrow, windows by numpy).

It *accepts only* events whose handling is obvious. Anything else - an unknown top-level key, a null or
non-string ``messageId``, a wrong type, a timestamp form Arrow does not parse,
a time outside the window, a name that would clash - is handed back for ``segment.normalise``, which
applies the full rules and rejects with a reason. There is one set of rules; this path only makes the
common case cheap, and ``tests/unit/test_bulk.py`` checks both paths give the same rows.

JSON columns of fast-path events are the JSON text as sent (numbers keep their digits, escapes stay as
sent), re-serialised only where the tool changes the object (a page ``name`` moved into ``properties``).
"""
from __future__ import annotations

import operator
from itertools import repeat
from typing import Annotated, Any, Literal, Optional, Union

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from transforms.dialects.segment import (
    _MOVED_TO_PROPERTIES,
    FIXED_EVENT_NAMES,
    MAX_ID_LENGTH,
    TRAITS_FROM_CONTEXT,
    derive_event_id,
)
from transforms.timestamps import MAX_US, MIN_US, parse_timestamp_us

NO_JSON = msgspec.Raw(b"null")  # the default of an absent JSON column (compared by identity)
UNSET = msgspec.UNSET
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_Time = Union[str, int, None]  # floats and booleans go per event
_Kind = Literal["page", "track", "identify", "group", "screen", "alias"]  # exact: other cases go per event


class _Event(msgspec.Struct, forbid_unknown_fields=True, gc=False):  # no cycles: skip GC tracking
    type: _Kind
    # None when absent (the id is then derived from the whole event); an explicit null fails to decode (not
    # a str), so it goes per event
    messageId: _Id = None
    event: Optional[str] = None
    anonymousId: Optional[_Id] = None
    userId: Optional[_Id] = None
    timestamp: _Time = None
    originalTimestamp: _Time = None
    receivedAt: _Time = None
    sentAt: _Time = None
    context: msgspec.Raw = NO_JSON
    properties: msgspec.Raw = NO_JSON
    traits: msgspec.Raw = NO_JSON
    # UNSET when absent: an explicit null is moved into properties per event, so it must go that way
    name: Union[str, None, msgspec.UnsetType] = UNSET
    category: Union[str, None, msgspec.UnsetType] = UNSET
    groupId: Union[str, None, msgspec.UnsetType] = UNSET
    previousId: Union[str, None, msgspec.UnsetType] = UNSET


JSON_ROOTS = ("context", "properties", "traits")


def _attr_names(tree: dict) -> dict:
    """JSON key -> the struct attribute decoding it (keys need not be Python identifiers)."""
    return {key: f"f{n}" for n, key in enumerate(sorted(tree))}


def _struct_for(tree: dict, name: str, leaf_types: dict, path: tuple = ()):
    """A Struct type decoding the paths of ``tree`` (``{key: subtree, or None for a leaf}``); other keys are
    skipped in C. Leaves are ``Any`` (UNSET when absent); an intermediate that is not an object fails the
    decode, sending the event per event. An absent intermediate decodes as one shared instance whose leaves
    are all UNSET, so reading a leaf through it needs no check (``BulkNormaliser._leaf``: events without
    ``properties`` or ``context.consent`` are common); an explicit null stays None."""
    fields, rename = [], {}
    for n, (key, attr) in enumerate(_attr_names(tree).items()):
        sub = tree[key]
        rename[attr] = key
        if sub is None:
            fields.append((attr, leaf_types.get(path + (key,), Any), UNSET))
        else:
            node = _struct_for(sub, f"{name}_{n}", leaf_types, path + (key,))
            fields.append((attr, Optional[node], node()))
    # frozen: instances (the shared absent one above all) cannot be changed
    return msgspec.defstruct(name, fields, rename=rename, gc=False, frozen=True)


def _id_text(value) -> str | None:
    """``transforms.parse._get_path``'s rule for a leaf: a string, or an integer's decimal text."""
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    return None


_NONE, _STR, _INT, _OTHER = 0, 1, 2, 3
_TYPE_CODES = {type(None): _NONE, str: _STR, int: _INT}


def _pick(values: list, positions: np.ndarray) -> list:
    """``[values[i] for i in positions]``, gathered in C."""
    if len(positions) == 1:
        return [values[int(positions[0])]]
    return list(operator.itemgetter(*positions.tolist())(values))


def timestamps_us(values: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(microseconds, present, invalid)`` for a column of raw timestamp values (str, int or None), by
    the rules of ``transforms.timestamps.parse_timestamp_us``. Strings are converted by one Arrow cast
    (the forms Arrow accepts it reads the same way - property-tested); if Arrow refuses any, the column
    falls back to the per-value parser, which is the definition. Integers: the same magnitude rules,
    exactly, in int64."""
    n = len(values)
    out = np.zeros(n, dtype=np.int64)
    invalid = np.zeros(n, dtype=bool)
    types = set(map(type, values))
    if types <= {str, type(None)}:  # the common case: one Arrow conversion and cast for the whole column
        if str not in types:
            return out, np.zeros(n, dtype=bool), invalid
        strings = pa.array(values, type=pa.string())
        try:
            parsed = strings.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # some string Arrow does not take: the general path below decides per value
        else:
            present = strings.is_valid().to_numpy(zero_copy_only=False)
            out = parsed.fill_null(0).to_numpy()
            return out, present, _out_of_range(out, present, invalid)
    # Mixed types: one pass gives each value's type code; positions and values are then picked in C.
    codes = np.fromiter(map(_TYPE_CODES.get, map(type, values), repeat(_OTHER)), dtype=np.int8, count=n)
    present = codes != _NONE
    str_pos = np.flatnonzero(codes == _STR)
    if len(str_pos):
        strings = _pick(values, str_pos)
        try:
            parsed = pa.array(strings, type=pa.string()).cast(pa.timestamp("us", tz="UTC"))
            out[str_pos] = parsed.cast(pa.int64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            for i, text in zip(str_pos.tolist(), strings):
                try:
                    out[i] = parse_timestamp_us(text)
                except ValueError:
                    invalid[i] = True
    int_pos = np.flatnonzero(codes == _INT)
    if len(int_pos):
        ints = _pick(values, int_pos)
        if -10**17 < min(ints) and max(ints) < 10**17:
            arr = np.array(ints, dtype=np.int64)
            mag = np.abs(arr)
            us = np.where(mag < 10**11, arr * 1_000_000, np.where(mag < 10**14, arr * 1_000, arr))
            out[int_pos] = us
            invalid[int_pos] = (us < MIN_US) | (us > MAX_US)
        else:  # nanoseconds and beyond: Python's division rules, per value
            for i, value in zip(int_pos.tolist(), ints):
                try:
                    out[i] = parse_timestamp_us(value)
                except ValueError:
                    invalid[i] = True
    # any other type (a float, a bool) is refused by the decoder; were one here, it would count as invalid
    invalid |= codes == _OTHER
    return out, present, _out_of_range(out, present, invalid)


def _out_of_range(out: np.ndarray, present: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """``invalid`` plus the present values outside datetime's years 1..9999 in UTC (Arrow reads an offset
    that carries year 1 into year 0; ``parse_timestamp_us`` refuses those)."""
    return invalid | (present & ((out < MIN_US) | (out > MAX_US)))


class BulkNormaliser:
    """Build once per worker (``DoFn.setup``). ``usable`` is False when the tenant/app paths are not inside
    the JSON columns or overlap (then every event goes per event)."""

    def __init__(self, tenant_path: tuple, app_path: tuple, purposes: tuple, max_past_us: int, max_future_us: int,
                 source_id: str | None = None):
        self.purposes = tuple(purposes)
        self._source_id = source_id  # for derived event ids; without it, events lacking messageId go per event
        self._max_past_us = max_past_us
        self._max_future_us = max_future_us
        event_decoder = msgspec.json.Decoder(_Event)
        self._decode_event, self._decode_event_lines = event_decoder.decode, event_decoder.decode_lines
        paths = {"tenant": tuple(tenant_path), "app": tuple(app_path),
                 **{dst: ("properties", dst) for dst in _MOVED}}
        paths.update({f"consent:{p}": ("context", "consent", p) for p in self.purposes})
        self.usable = all(len(p) >= 2 and p[0] in JSON_ROOTS for p in paths.values())
        tree: dict = {}
        for path in paths.values() if self.usable else ():
            node = tree
            for key in path[:-1]:
                node = node.setdefault(key, {})
                if node is None:  # a path runs through another's leaf
                    self.usable = False
                    break
            else:
                if node.get(path[-1]) is not None:  # a leaf where another path goes deeper
                    self.usable = False
                node.setdefault(path[-1], None)
        if not self.usable:
            return
        for root in JSON_ROOTS:  # decoding each into a Struct checks in C that it is an object (or null)
            tree.setdefault(root, {})
        # Typed where any other type means "no value" anyway (decoding typed is cheaper than Any); a
        # tenant that is, say, a float then goes per event, which gives the same answer.
        ids = Union[str, int, None, msgspec.UnsetType]
        probe = _struct_for(tree, "_Probe", {tuple(tenant_path): ids, tuple(app_path): ids})
        attrs = _attr_names(tree)
        probe_decoder = msgspec.json.Decoder(probe)
        self._decode_probe, self._decode_probe_lines = probe_decoder.decode, probe_decoder.decode_lines

        def getter(path):
            chain = []
            node, node_attrs = tree, attrs
            for key in path:
                chain.append(node_attrs[key])
                sub = node[key]
                if sub is not None:
                    node, node_attrs = sub, _attr_names(sub)
            return tuple(chain)

        self._getters = {name: getter(path) for name, path in paths.items()}
        self._leaf_getters = {name: operator.attrgetter(".".join(chain)) for name, chain in self._getters.items()}

    def decode(self, line: bytes):
        """``(event, probe)`` for the fast path, or None to handle the line per event."""
        try:
            return self._decode_event(line), self._decode_probe(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None

    def decode_block(self, lines: list):
        """``decode_joined`` of ``lines`` joined by newlines."""
        return self.decode_joined(b"\n".join(lines), len(lines))

    def decode_joined(self, data: bytes, count: int):
        """``(events, probes)`` for a whole block of ``count`` lines joined by newlines (``data``), or None
        when any line does not decode on the fast path (then decode line by line). The lines must pass the
        same checks as for ``decode``, none blank.

        Each decoder reads the block in one call (``decode_lines``): 1.2 instead of 1.5 us a line for the two
        decodes. That reads values separated by any whitespace, so a line holding two values gives one more;
        then the counts differ and the lines go one by one, where such a line is refused."""
        try:
            events, probes = self._decode_event_lines(data), self._decode_probe_lines(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return (events, probes) if len(events) == count else None

    def _leaf(self, probes, name: str) -> list:
        try:  # one C-level pass unless an intermediate object is null (absent ones read as all UNSET)
            return list(map(self._leaf_getters[name], probes))
        except AttributeError:  # an intermediate is null: step through, UNSET where missing
            chain = self._getters[name]
            values = [getattr(p, chain[0]) for p in probes]
            for attr in chain[1:]:
                values = [UNSET if v is None or v is UNSET else getattr(v, attr) for v in values]
            return values

    def _move_names(self, events: list, probes: list, kinds: list, keep: np.ndarray, properties: list) -> None:
        """Page/screen ``name``/``category``, group ``groupId``, alias ``previousId`` into ``properties`` (the
        per-event rule), field by field over the whole batch: appended to the JSON text where the property is
        absent, left as it is where it holds the same string. ``properties`` is the list of each event's
        ``properties`` text, changed in place; clears ``keep`` (handle per event, where the field goes to
        ``context._unmapped``) where the property holds another value, the field is null or the event's type
        takes no such field.

        The texts are joined in Python, row by row: about 0.4 us an event that moves a field, where the same
        with Arrow string kernels over the column (slice, trim, join, then a masked replace) cost 1.3 us, each
        kernel copying every text again (most page and screen events move their ``name``)."""
        kind_names = None
        for src in _MOVED_FIELDS:
            values = _READ_MOVED[src](events)
            present = _is_not(values, UNSET)
            if not present.any():
                continue
            if kind_names is None:
                kind_names = np.array(kinds)
            keep &= ~present | np.isin(kind_names, _TAKERS[src])
            picked = np.flatnonzero(present & keep).tolist()
            if not picked:
                continue
            key = _MEMBER_KEYS[src]
            nodes = self._leaf([probes[i] for i in picked], _DESTINATION[src])
            for i, node in zip(picked, nodes):
                value = values[i]
                if node is UNSET and value is not None:  # absent: appended
                    properties[i] = _with_member(properties[i], key + orjson.dumps(value))
                elif value is None or type(node) is not str or node != value:  # null, or another value there
                    keep[i] = False

    def run(self, events: list, probes: list, processing_time_us: int, lines: list | None = None):
        """``events``, ``probes``: what ``decode`` or ``decode_block`` returned, line by line; ``lines``: the
        lines they were decoded from (needed to derive the id of an event without ``messageId``). Returns
        ``(columns, accepted, rejected)``: the columns in batch-schema order up to ``_app_id`` plus one per
        consent purpose, for the accepted events, and the positions (into ``events``) that must go per event.

        Per-event Python is what this stage's time goes to, so each field is read out once into a list, the
        lists become Arrow arrays at once, and the checks and the picking of accepted rows run on those
        arrays (validity bitmaps, compute kernels, one filter per column) instead of a Python-level pass per
        check (about 50 ns an event each)."""
        n = len(events)
        if not n:
            return [[] for _ in range(13 + len(self.purposes))], np.zeros(0, dtype=np.int64), []
        kinds = [e.type for e in events]
        ids = [e.messageId for e in events]
        properties = [e.properties for e in events]
        kind_col = pa.array(kinds, type=pa.string())
        name_col = pa.array([e.event for e in events], type=pa.string())
        anon_col = pa.array([e.anonymousId for e in events], type=pa.string())
        user_col = pa.array([e.userId for e in events], type=pa.string())
        received, r_present, r_bad = timestamps_us([e.receivedAt for e in events])
        received = np.where(r_present, received, processing_time_us)
        sent, s_present, s_bad = timestamps_us([e.sentAt for e in events])
        ts, t_present, t_bad = timestamps_us([e.timestamp for e in events])
        ots, o_present, o_bad = timestamps_us([e.originalTimestamp for e in events])
        timestamp = np.where(t_present, ts, np.where(o_present, ots, received))
        # A bad time is rejected per event even where another one would be used: let that path decide.
        keep = ~(r_bad | s_bad | t_bad | o_bad)
        keep &= (timestamp >= received - self._max_past_us) & (timestamp <= received + self._max_future_us)
        keep &= ((received >= processing_time_us - self._max_past_us)
                 & (received <= processing_time_us + self._max_future_us))
        keep &= _numpy(pc.or_(anon_col.is_valid(), user_col.is_valid()))
        # a track needs a non-empty event name (a null name's length is null: not kept)
        named = pc.greater(pc.binary_length(name_col), 0)
        keep &= _numpy(pc.or_kleene(pc.not_equal(kind_col, "track"), named).fill_null(False))
        self._move_names(events, probes, kinds, keep, properties)
        json_columns = [_json_column([e.context for e in events]), _json_column(properties),
                        _json_column([e.traits for e in events])]
        # An identify or group without traits of its own may carry them in context.traits (RudderStack's
        # SDK): the per-event path moves them. (A text merely mentioning "traits" goes that way too.)
        traitless = _numpy(pc.and_(pc.is_in(kind_col, value_set=_TRAIT_KINDS), json_columns[2].is_null()))
        if traitless.any():
            at = np.flatnonzero(traitless)
            keep[at] &= ~_numpy(pc.match_substring(json_columns[0].take(at), '"traits"').fill_null(False))
        for column in json_columns:
            # Numbers the per-event parser reads differently from their text (past int64 or a double's range,
            # or more digits than a double holds) go that way, so both paths deliver the same value. One scan
            # of the column's whole text first: in the common case nothing matches and no row is looked at.
            if _any_match(column, _LOSSY_NUMBER):
                keep &= ~_numpy(pc.match_substring_regex(column, _LOSSY_NUMBER).fill_null(False))
        id_col = pa.array(ids, type=pa.string())
        if id_col.null_count:
            derived = {}
            for i in np.flatnonzero(keep & _numpy(id_col.is_null())).tolist():
                # the per-event rule: a digest of the whole event as parsed
                if lines is None or self._source_id is None:
                    keep[i] = False
                else:
                    derived[i] = derive_event_id(orjson.loads(lines[i]), self._source_id)
            if derived:
                mask = np.zeros(n, dtype=bool)
                mask[list(derived)] = True
                id_col = pc.replace_with_mask(id_col, pa.array(mask),
                                              pa.array(list(derived.values()), type=pa.string()))
        accepted = np.flatnonzero(keep)
        rejected = np.flatnonzero(~keep).tolist()
        pick = None if len(accepted) == n else pa.array(keep)
        # a track's own name, the fixed one of the other types
        event_col = pc.coalesce(_FIXED_NAMES.take(pc.index_in(kind_col, value_set=_KINDS)), name_col)
        columns = [
            id_col,
            kind_col,
            event_col,
            anon_col,
            user_col,
            timestamp,
            received,
            pa.array(sent, type=pa.int64(), mask=~s_present),
            *json_columns,
            pa.array(_id_texts(self._leaf(probes, "tenant")), type=pa.string()),
            pa.array(_id_texts(self._leaf(probes, "app")), type=pa.string()),
        ]
        for purpose in self.purposes:
            columns.append(_flags(map(operator.is_, self._leaf(probes, f"consent:{purpose}"), repeat(True)), n))
        if pick is not None:
            columns = [c.filter(pick) if isinstance(c, pa.Array) else c[keep] for c in columns]
        return columns, accepted, rejected


_TRAIT_KINDS = pa.array(TRAITS_FROM_CONTEXT, type=pa.string())
# 19 digits in a row (an integer past int64, or a mantissa a double rounds) or a 3-digit exponent. It may
# also match inside a string: such an event only takes the slower path.
_LOSSY_NUMBER = r"[0-9]{19}|[eE][+-]?[0-9]{3}"
_MOVED_FIELDS = ("name", "category", "groupId", "previousId")
# Each field read out of a batch's events with the attribute named in the code: Python specialises that
# lookup, ``getattr(e, src)`` with a variable name it cannot (11 against 33 ns an event).
_READ_MOVED = {
    "name": lambda events: [e.name for e in events],
    "category": lambda events: [e.category for e in events],
    "groupId": lambda events: [e.groupId for e in events],
    "previousId": lambda events: [e.previousId for e in events],
}


def _any_match(column: pa.Array, pattern: str) -> bool:
    """Whether ``pattern`` matches anywhere in a string column's text: one regex scan of its data buffer as a
    single value (no copy), instead of one per row. (A match across two values' boundary only costs the
    per-row check.)"""
    data = column.buffers()[2]
    if data is None or not len(data):
        return False
    whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, pa.py_buffer(np.array([0, data.size], np.int64)), data])
    return bool(pc.match_substring_regex(whole, pattern)[0].as_py())


def _flags(values, n: int) -> np.ndarray:
    return np.fromiter(values, dtype=bool, count=n)


def _is_not(values, sentinel) -> np.ndarray:
    """``[v is not sentinel for v in values]`` as a bool array, iterated in C."""
    return _flags(map(operator.is_not, values, repeat(sentinel)), len(values))


def _numpy(flags) -> np.ndarray:
    """A boolean Arrow array without nulls as a numpy bool array."""
    return flags.to_numpy(zero_copy_only=False)


def _id_texts(values) -> list:
    """``_id_text`` of each value; the values themselves when they are all strings."""
    if set(map(type, values)) <= {str}:
        return values
    return [_id_text(v) for v in values]


# Top-level fields that move into properties, by type (``segment._MOVED_TO_PROPERTIES``): field -> property.
_MOVES = {kind: dict(moves) for kind, moves in _MOVED_TO_PROPERTIES.items()}
_MOVED = sorted({dst for moves in _MOVES.values() for dst in moves.values()})
# Each event type and its fixed event name (null for a track: its own name), to look up by position.
_KINDS = pa.array(list(_Kind.__args__), type=pa.string())
_FIXED_NAMES = pa.array([FIXED_EVENT_NAMES.get(kind) for kind in _Kind.__args__], type=pa.string())


# Which event types move each field, the property it becomes, and that property's ``"key":`` as JSON.
_TAKERS = {src: [kind for kind, moves in _MOVES.items() if src in moves] for src in _MOVED_FIELDS}
_DESTINATION = {src: dst for moves in _MOVES.values() for src, dst in moves.items()}
_MEMBER_KEYS = {src: orjson.dumps(dst) + b":" for src, dst in _DESTINATION.items()}


def _with_member(text, member: bytes) -> bytes:
    """A JSON object's text (``msgspec.Raw`` or bytes; ``NO_JSON`` or ``null`` count as ``{}``) with the
    ``"key":value`` text ``member`` appended as its last member. The members there keep their text; the
    whitespace around them goes."""
    raw = b"null" if text is NO_JSON else bytes(text)
    body = b"" if raw == b"null" else raw[1:-1].strip()
    return b"".join((b"{", body, b"," if body else b"", member, b"}"))


def _json_column(raws) -> pa.Array:
    """JSON texts (``msgspec.Raw`` or bytes; ``NO_JSON`` for absent) -> a string column; absent and ``null``
    are null. Built from one joined buffer and its offsets (no Python object per value). Lines reach the fast
    path only once checked to be UTF-8, and a JSON text of a valid line is valid UTF-8 too."""
    n = len(raws)
    data = b"".join(raws)
    large = len(data) >= 2**31  # past 32-bit offsets (a batch of over 2 GB of JSON)
    offsets = np.zeros(n + 1, dtype=np.int64 if large else np.int32)
    np.cumsum(np.fromiter(map(len, raws), dtype=offsets.dtype, count=n), out=offsets[1:])
    # ``null`` (4 bytes) is the only text that is null: compare the 4-byte values' bytes, all at once
    short = np.flatnonzero(np.diff(offsets) == 4)
    valid = np.ones(n, dtype=bool)
    if len(short):
        heads = np.frombuffer(data, dtype=np.uint8)[offsets[short, None] + np.arange(4)]
        valid[short] = (heads != np.frombuffer(b"null", dtype=np.uint8)).any(axis=1)
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    column = pa.Array.from_buffers(pa.large_string() if large else pa.string(), n,
                                   [validity, pa.py_buffer(offsets), pa.py_buffer(data)], null_count=int(n - valid.sum()))
    return column.cast(pa.string()) if large else column
