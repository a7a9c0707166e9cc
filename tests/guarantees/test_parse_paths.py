"""One parser meaning: the block fast path gives exactly what the per-event path gives.

Blocks are built by hypothesis from valid events and then mutated the ways a hostile or broken producer
does: an object split over two lines, two values on one line, BOMs, CRLF line ends, deep nesting, Segment
batch envelopes, huge numbers, duplicate top-level keys, out-of-range timestamps. Each block is parsed
three ways - as the reader hands it over (the lines joined by newlines), as a list of lines (the
``--per_line_input`` / streaming element path) and with the fast path switched off (the per-event rules,
the definition) - and the rows and dead letters must be the same (I1: every line is an event or a dead
letter, never both, never neither).

No Beam runner: the parse DoFn is driven directly (its ``process`` is the whole stage).
"""
from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.eventgen import generate
from transforms import deadletter
from transforms.parse import ParseSettings, _ParseBatchFn

GOOD = generate(400, seed=31, bad=False)[0]


def _run(block, fast: bool):
    fn = _ParseBatchFn(ParseSettings(source_id="src", consent_purposes=("analytics",)))
    fn.setup()
    if not fast:
        fn._bulk.usable = False
    rows, dead = [], []
    for out in fn.process(block):
        if isinstance(out, tuple):
            rows += out[1].drop_columns(["received_at"]).to_pylist()
        else:
            dead.append((out.value["reason"], out.value.get("payload"), out.value.get("payload_base64")))
    for row in rows:
        for col in ("context", "properties", "traits"):
            # Pairs, not a dict: a text with a key twice must not compare equal to one with it once.
            row[col] = None if row[col] is None else _pairs(orjson.loads(row[col]) and row[col])
    key = lambda r: orjson.dumps(r, option=orjson.OPT_SORT_KEYS, default=str)  # noqa: E731
    return sorted(rows, key=key), sorted(dead, key=str)


def _pairs(text: str):
    import json

    return json.loads(text, object_pairs_hook=lambda pairs: sorted(pairs, key=lambda p: p[0]))


def _assert_one_meaning(lines: list[bytes]):
    joined = b"\n".join(lines)
    slow = _run(list(lines), fast=False)
    assert _run(joined, fast=True) == slow
    assert _run(list(lines), fast=True) == slow
    rows, dead = slow
    nonblank = sum(1 for line in lines if line.strip(b" \t\r\n\x0b\x0c").removeprefix(b"\xef\xbb\xbf").strip())
    assert len(rows) + len(dead) >= nonblank - sum(1 for line in lines if b'"batch"' in line)


def _mutate(lines: list[bytes], data) -> list[bytes]:
    lines = list(lines)
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        kind = data.draw(st.sampled_from([
            "split", "join", "join_space", "bom", "crlf", "deep", "envelope", "bignum", "bigexp", "dupkey",
            "year0", "year10000", "received_future", "trailing_space", "number_line", "nested_id_null"]))
        if kind == "split" and len(line) > 10:
            cut = data.draw(st.integers(1, len(line) - 1))
            lines[i:i + 1] = [line[:cut], line[cut:]]
        elif kind in ("join", "join_space") and i + 1 < len(lines):
            lines[i:i + 2] = [line + (b" " if kind == "join_space" else b"") + lines[i + 1]]
        elif kind == "bom":
            lines[i] = b"\xef\xbb\xbf" + line
        elif kind == "crlf":
            lines[i] = line + b"\r"
        elif kind == "deep":
            depth = data.draw(st.integers(60, 70))
            lines[i] = line[:-1] + b',"properties":{"d":' + b"[" * depth + b"]" * depth + b"}}"
        elif kind == "envelope":
            lines[i] = b'{"batch":[' + line + b"]}"
        elif kind == "bignum":
            lines[i] = line[:-1] + b',"properties":{"n":123456789012345678901234567890}}'
        elif kind == "bigexp":
            lines[i] = line[:-1] + b',"properties":{"n":1e400}}'
        elif kind == "dupkey":
            lines[i] = line[:-1] + b',"type":"page"}'
        elif kind == "year0":
            lines[i] = line[:-1] + b',"timestamp":"0001-01-01T00:30:00+01:00"}'
        elif kind == "year10000":
            lines[i] = line[:-1] + b',"timestamp":"9999-12-31T23:30:00-01:00"}'
        elif kind == "received_future":
            lines[i] = line[:-1] + b',"receivedAt":"9999-01-01T00:00:00Z"}'
        elif kind == "trailing_space":
            lines[i] = line + b"  "
        elif kind == "number_line":
            lines[i] = line + b" 1"
        elif kind == "nested_id_null":
            lines[i] = line.replace(b'"messageId":', b'"x_messageId":', 1)
    return [line for line in lines if b"\n" not in line]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_fast_and_per_event_paths_agree_on_mutated_blocks(data):
    start = data.draw(st.integers(0, len(GOOD) - 40))
    size = data.draw(st.integers(1, 40))
    _assert_one_meaning(_mutate(GOOD[start:start + size], data))


def test_split_object_and_double_line_cannot_pair_values_with_wrong_lines():
    # The reported layout: an object over two lines and a line of two objects keep the value count equal
    # to the line count; the fast path used to deliver the malformed lines and lose a valid event.
    a, b, c, d = GOOD[:4]
    cut = len(b) // 2
    lines = [a, b[:cut], b[cut:], c + b" " + d, GOOD[4]]
    rows, dead = _run(b"\n".join(lines), fast=True)
    assert len(rows) == 2 and {r["anonymous_id"] for r in rows} == {orjson.loads(x).get("anonymousId") for x in (a, GOOD[4])}
    assert sorted(reason for reason, _, _ in dead) == ["parse_error"] * 3
    _assert_one_meaning(lines)
    # the same without messageId (a derived id) used to crash the job
    bare = [x.replace(b'"messageId":', b'"x_messageId":') for x in lines]
    _assert_one_meaning(bare)


def test_an_event_whose_handling_raises_is_a_dead_letter_not_a_failed_job(monkeypatch):
    # No poison pill: whatever a bug raises for one event costs that event only (internal_error), and the
    # block's other lines are still delivered.
    from transforms.dialects import segment

    real = segment.normalise

    def explode_on_marker(obj, *args, **kwargs):
        if obj.get("event") == "boom":
            raise RuntimeError("unexpected")
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(segment, "normalise", explode_on_marker)
    boom = b'{"type":"track","event":"boom","anonymousId":"a","messageId":"m-boom","unmapped":1}'  # per event
    lines = GOOD[:20] + [boom] + GOOD[20:40]
    for block in (b"\n".join(lines), lines):
        rows, dead = _run(block, fast=True)
        assert len(rows) == 40 and dead == [("internal_error", boom.decode(), None)]
    assert "internal_error" in deadletter.REASONS


def test_timestamps_past_year_9999_or_before_year_1_in_utc_are_dead_letters():
    lines = [GOOD[0][:-1] + b',"timestamp":"0001-01-01T00:30:00+01:00"}',
             GOOD[1][:-1] + b',"timestamp":"9999-12-31T23:30:00-01:00"}',
             GOOD[2][:-1] + b',"receivedAt":"0001-01-01T00:30:00+01:00"}']
    rows, dead = _run(b"\n".join(lines), fast=True)
    assert rows == [] and [reason for reason, _, _ in dead] == ["invalid_timestamp"] * 3
    _assert_one_meaning(lines)


def test_received_at_far_from_the_processing_time_is_refused():
    future = GOOD[0][:-1] + b',"receivedAt":"9999-01-01T00:00:00Z","timestamp":"9999-01-01T00:00:00Z"}'
    rows, dead = _run([future], fast=True)
    assert rows == [] and [reason for reason, _, _ in dead] == ["timestamp_out_of_range"]
    _assert_one_meaning([future])
