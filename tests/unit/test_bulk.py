"""The bulk fast path against the per-event path: same rows, same dead letters, for generated events and
for hypothesis-built ones full of edge cases (wrong types, nulls, clashing names, odd timestamps)."""
import orjson
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.eventgen import generate
from transforms import deadletter
from transforms.dialects.segment_bulk import timestamps_us
from transforms.parse import ParseSettings, _ParseBatchFn
from transforms.timestamps import parse_timestamp_us

PURPOSES = ("analytics", "marketing")


def parse(lines, fast: bool, **settings):
    fn = _ParseBatchFn(ParseSettings(source_id="src", consent_purposes=PURPOSES, **settings))
    fn.setup()
    if not fast:
        fn._bulk.usable = False
    tables, dead = [], []
    for out in fn.process(lines):
        if isinstance(out, tuple):
            tables.append(out[1])
        else:
            dead.append((out.value["reason"], out.value.get("payload"), out.value.get("event_id")))
    rows = pa.concat_tables(tables).to_pylist() if tables else []
    for row in rows:
        for col in ("context", "properties", "traits"):
            row[col] = None if row[col] is None else orjson.loads(row[col])
    return sorted(rows, key=lambda r: (r["event_id"], orjson.dumps(r, option=orjson.OPT_SORT_KEYS))), sorted(dead, key=str)


def assert_same(lines, **settings):
    fast_rows, fast_dead = parse(lines, fast=True, **settings)
    slow_rows, slow_dead = parse(lines, fast=False, **settings)
    assert fast_dead == slow_dead
    assert len(fast_rows) == len(slow_rows)
    for a, b in zip(fast_rows, slow_rows):
        if a["received_at"] != b["received_at"]:  # processing time differs between the two runs
            assert a["event_id"] == b["event_id"]
            continue
        assert a == b


def test_generated_events_and_bad_lines():
    lines, _ = generate(3000, seed=7)  # bad lines included
    assert_same(lines)


def _outputs(lines_or_block, **settings):
    """Everything ``process`` yields for one block, in order: (shard, rows) pairs and dead letters."""
    fn = _ParseBatchFn(ParseSettings(source_id="src", consent_purposes=PURPOSES, **settings))
    fn.setup()
    out = []
    for item in fn.process(lines_or_block):
        if isinstance(item, tuple):
            rows = item[1].drop_columns(["received_at"]).to_pylist()  # processing time differs between runs
            out.append(("rows", item[0], rows))
        else:
            out.append(("dead", item.value["reason"], item.value.get("payload"), item.value.get("event_id")))
    return out


def test_a_block_as_read_gives_what_its_lines_give():
    # The reader hands most blocks over as the bytes they were read in (lines joined by newlines): the
    # parser must give exactly what it gives for the same lines as a list, on the fast path and off it.
    good = generate(300, seed=21, bad=False)[0]
    mixed = [line for line in generate(600, seed=22)[0] if b"\n" not in line and not line.endswith(b"\r")]
    odd = {
        "plain": good,
        "bad lines": mixed,
        "an empty line": good[:100] + [b""] + good[100:],
        "a blank line": good[:100] + [b" \t "] + good[100:],
        "empty last line": good + [b""],
        "whitespace first": good[:5] + [b"  " + good[5]] + good[6:],
        "BOM first": [b"\xef\xbb\xbf" + good[0]] + good[1:],
        "BOM inside": good[:7] + [b"\xef\xbb\xbf" + good[7]] + good[8:],
        "non-ASCII": [line.replace(b'"anon-', '"anön-'.encode()) for line in good],
        "too deep": good[:50] + [b'{"type":"page","properties":' + b"[" * 70 + b"]" * 70 + b"}"] + good[50:],
        "one line": good[:1],
        # the block decode reads whitespace-separated values: one value fewer for the blank line and one more
        # for the line holding two would balance, so blank lines must be found before the count is trusted
        "blank and double": good[:10] + [b" "] + good[10:20] + [good[20] + b" " + good[21]] + good[22:],
        "empty and double": good[:10] + [b""] + good[10:20] + [good[20] + b" " + good[21]] + good[22:],
    }
    for name, lines in odd.items():
        assert _outputs(b"\n".join(lines)) == _outputs(lines), name
    # and the rows of the joined block are the generated events' (not an empty result on both sides)
    assert sum(len(rows) for kind, _, rows in (o for o in _outputs(b"\n".join(good)) if o[0] == "rows")) > 250


def test_the_fast_path_takes_the_common_events():
    fn = _ParseBatchFn(ParseSettings(source_id="src", consent_purposes=PURPOSES))
    fn.setup()
    lines = generate(1000, seed=3, bad=False)[0]
    assert sum(b'"messageId"' not in line for line in lines) > 10  # events whose id is derived, included
    decoded = fn._bulk.decode_block(lines)
    assert decoded is not None
    _, accepted, rejected = fn._bulk.run(*decoded, deadletter.now_us(), lines)
    assert len(rejected) < len(lines) * 0.02 and len(accepted) > 0


ids = st.one_of(st.none(), st.text(max_size=3), st.integers(-5, 5), st.booleans(), st.just("x" * 257),
                st.lists(st.integers(-10, 10), max_size=1))
times = st.one_of(st.none(), st.integers(-10**18, 10**18), st.floats(allow_nan=False, allow_infinity=False),
                  st.sampled_from(["2026-01-29T14:30:00Z", "2026-01-29T14:30:00.1234567Z", "2026-01-29 14:30:00+02:00",
                                   "2026-01-29T14:30:00", "2026-01-29", "1769697000", "2026-01-29T14:30:00z", "soon",
                                   " 2026-01-29T14:30:00Z", "2026-02-30T00:00:00Z", "2026-01-29T14:30:00.5-05:30"]))
json_values = st.recursive(st.none() | st.booleans() | st.integers(-100, 100) | st.text(max_size=4),
                           lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
                           max_leaves=4)
objects = st.one_of(st.none(), st.dictionaries(st.sampled_from(["name", "category", "group_id", "previous_id", "k"]),
                                               json_values, max_size=3),
                    st.integers(-9, 9), st.lists(st.integers(-9, 9), max_size=1))
contexts = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    "tenant_id": ids, "app_id": ids, "ip": st.text(max_size=3),
    "consent": st.one_of(st.none(), st.lists(st.booleans(), max_size=1), st.dictionaries(
        st.sampled_from(PURPOSES), st.one_of(st.booleans(), st.none(), st.just("true"), st.just(1)), max_size=2))}))
events = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["page", "track", "identify", "group", "screen", "alias", "Track", "other", 3]),
    "event": ids, "messageId": ids, "event_id": ids, "anonymousId": ids, "userId": ids,
    "timestamp": times, "originalTimestamp": times, "receivedAt": times, "sentAt": times,
    "context": contexts, "properties": objects, "traits": objects, "name": ids, "category": ids,
    "groupId": ids, "previousId": ids, "channel": st.just("web")})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=20))
def test_any_events_come_out_the_same_either_way(batch):
    # received_at defaults to processing time, which differs between the two runs: pin it where absent.
    for event in batch:
        event.setdefault("receivedAt", "2026-01-29T15:00:00Z")
    assert_same([orjson.dumps(e) for e in batch])


iso_like = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, off: f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{off}",
    st.integers(1, 9999), st.integers(0, 13), st.integers(0, 32), st.sampled_from(["T", " ", "t", "_"]),
    st.integers(0, 25), st.integers(0, 60), st.integers(0, 61),
    st.sampled_from(["", ".5", ".123", ".123456", ".1234567", ".123456789", "."]),
    st.sampled_from(["", "Z", "z", "+02:00", "-05:30", "+0200", "+02", "+24:00", "-23:59", "+00:00", " Z"]))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(times.filter(lambda v: not isinstance(v, float)), iso_like), max_size=10))
def test_bulk_timestamps_follow_the_per_value_parser(values):
    out, present, invalid = timestamps_us(values)
    for i, value in enumerate(values):
        assert present[i] == (value is not None)
        if value is None:
            continue
        try:
            expected = parse_timestamp_us(value)
        except ValueError:
            assert invalid[i]
            continue
        assert not invalid[i] and out[i] == expected


def test_moved_names_with_escapes_and_odd_objects():
    # Names that need escaping (or not: non-ASCII, DEL) and properties texts with whitespace, empty or null:
    # the fast path writes the moved members itself, so compare with the per-event path line by line.
    names = ["plain", 'say "hi"', "back\\slash", "tab\there", "\x1f", "caf\u00e9", "\x7f", "", "\U0001F600"]
    props = [b"", b',"properties":null', b',"properties":{}', b',"properties":{ }', b',"properties":{"a":1 }',
             b',"properties":{"category":"c"}', b',"properties":{"name":"plain"}']
    lines = []
    for n, name in enumerate(names):
        for m, prop in enumerate(props):
            lines.append(b'{"type":"page","messageId":"m%d-%d","anonymousId":"a","receivedAt":"2026-01-29T15:00:00Z",'
                         b'"name":%s,"category":"c"%s}' % (n, m, orjson.dumps(name), prop))
    fn = _ParseBatchFn(ParseSettings(source_id="src", consent_purposes=PURPOSES))
    fn.setup()
    block = fn._bulk.decode_block(lines)
    assert block is not None
    columns, accepted, _ = fn._bulk.run(*block, deadletter.now_us(), lines)
    assert len(accepted) == len(names) * len(props) - (len(names) - 1)  # a clashing "name" goes per event
    for props_text in columns[9].to_pylist():
        assert orjson.loads(props_text)["category"] == "c"
    assert_same(lines)


def test_which_blocks_skip_the_per_line_checks():
    fn = _ParseBatchFn(ParseSettings(source_id="src", consent_purposes=PURPOSES))
    fn.setup()
    lines = [line.replace(b'"anon-', '"anön-'.encode()) for line in generate(200, seed=5, bad=False)[0]]
    assert any(not line.isascii() for line in lines)
    assert fn._plain_block(lines)  # valid UTF-8 beyond ASCII stays on the block path
    split = lines[0][:-1] + b"\xc3", b"\xa9" + lines[1]  # a character cut across two lines: each one invalid
    for odd in ([b"\xef\xbb\xbf" + lines[0]], [b"   "], [b""], [lines[0] + b"\xff"], list(split),
                [b'{"type":"page","properties":' + b"[" * 70 + b"]" * 70 + b"}"],
                [lines[0].replace(b'{"', b'{\n"', 1)]):  # a newline inside a line (whitespace to JSON)
        block = odd + lines[2:]
        assert not fn._plain_block(block)
        assert_same(block)
    assert_same(lines)


def test_the_bracket_count_is_per_line_wherever_the_line_is():
    # Brackets are counted over the joined block and attributed to lines: a line over the limit is found
    # in any position, one exactly at the limit passes, and the whole block's many brackets do not add up.
    fn = _ParseBatchFn(ParseSettings(source_id="src", consent_purposes=PURPOSES, max_nesting_depth=12))
    fn.setup()
    lines = generate(30, seed=3, bad=False)[0]
    assert sum(line.count(b"{") + line.count(b"[") for line in lines) > 12 and fn._plain_block(lines)

    def nested(depth):
        return b'{"type":"track","event":"e","anonymousId":"a","properties":{"x":' + b"[" * (depth - 2) \
            + b"]" * (depth - 2) + b"}}"
    for at in (0, 15, len(lines)):
        assert not fn._plain_block(lines[:at] + [nested(13)] + lines[at:])
        block = lines[:at] + [nested(12)] + lines[at:]
        assert fn._plain_block(block)[0] == b"\n".join(block)
        assert_same(lines[:at] + [nested(13)] + lines[at:], max_nesting_depth=12)


def test_a_line_holding_two_values_sends_the_block_line_by_line():
    # The block path reads the joined block as whitespace-separated values: a line with two events (or an
    # event and a number) would give one value too many, so the block must go line by line, where that line
    # is refused with the same reason as on its own.
    fn = _ParseBatchFn(ParseSettings(source_id="src", consent_purposes=PURPOSES))
    fn.setup()
    lines = generate(50, seed=11, bad=False)[0]
    for odd in (lines[0] + b" " + lines[1], lines[0] + lines[1], lines[0] + b" 1"):
        block = lines[2:20] + [odd] + lines[20:]
        # (a line not ending in "}" is not plain: it goes line by line before any block decode)
        assert fn._plain_block(block) or not odd.endswith(b"}")
        assert fn._bulk.decode_block(block) is None
        rows, dead = parse(block, fast=True)
        assert len(rows) == len(block) - 1 and [reason for reason, _, _ in dead] == ["parse_error"]
        assert_same(block)
