"""The parse stage's DoFn called directly on a batch of lines (no runner needed)."""
import orjson
import pyarrow as pa
import pytest
from apache_beam.pvalue import TaggedOutput

from tests.eventgen import BAD_LINES, generate
from transforms.parse import ParseSettings, _ParseBatchFn, shard_of, split_by_shard


def run_batch(lines, **kw):
    fn = _ParseBatchFn(ParseSettings(source_id="src", **kw))
    fn.setup()
    events, dead = [], []
    for out in fn.process(lines):
        (dead if isinstance(out, TaggedOutput) else events).append(out.value if isinstance(out, TaggedOutput) else out)
    return events, dead


GOOD = b'{"type":"track","event":"A","anonymousId":"x","messageId":"m1","timestamp":"2026-01-29T14:00:00Z",' \
       b'"context":{"tenant_id":"t1","app_id":7,"consent":{"analytics":true,"ads":"true"}}}'


@pytest.mark.parametrize("line, reason", BAD_LINES)
def test_every_bad_line_is_a_dead_letter(line, reason):
    events, dead = run_batch([GOOD, line])
    assert sum(t.num_rows for _, t in events) == 1
    assert [d["reason"] for d in dead] == [reason]
    record = dead[0]
    assert record["stage"] in ("parse", "normalise") and record["error"] and record["source_id"] == "src"
    if reason == "invalid_utf8":
        assert "payload_base64" in record and "payload" not in record
    else:
        assert record["payload"] == line.decode()


def test_limits_and_blank_lines():
    big = GOOD[:-1] + b',"properties":{"pad":"' + b"x" * 200 + b'"}}'
    events, dead = run_batch([big, b"", b"   ", GOOD], max_event_bytes=200)
    assert [d["reason"] for d in dead] == ["too_large"]
    nested = b'{"type":"track","event":"A","anonymousId":"x","properties":' + b'{"a":' * 5 + b"1" + b"}" * 5 + b"}"
    _, dead = run_batch([nested], max_nesting_depth=4)
    assert [d["reason"] for d in dead] == ["too_deep"]
    _, dead = run_batch([nested], max_nesting_depth=10)
    assert dead == []


def test_columns_tenant_app_consent_and_bom():
    events, dead = run_batch([b"\xef\xbb\xbf" + GOOD], consent_purposes=("analytics", "ads", "marketing"))
    assert dead == []
    [(shard, table)] = events
    assert shard == shard_of("m1", ParseSettings("s").shards)
    row = table.to_pylist()[0]
    assert row["_tenant_id"] == "t1" and row["_app_id"] == "7"
    assert (row["_consent.analytics"], row["_consent.ads"], row["_consent.marketing"]) == (True, False, False)
    assert orjson.loads(row["context"])["consent"] == {"analytics": True, "ads": "true"}


def test_duplicate_keys_keep_the_last_value():
    events, _ = run_batch([b'{"type":"track","event":"A","event":"B","anonymousId":"x","messageId":"m"}'])
    assert events[0][1].to_pylist()[0]["event"] == "B"


def test_shards_are_stable_and_spread():
    shards = {shard_of(f"id-{i}", 4) for i in range(100)}
    assert shards == {0, 1, 2, 3}
    assert shard_of("abc", 4) == shard_of("abc", 4)


def test_every_row_is_in_its_shard_on_both_paths():
    # Generated input mixes fast-path events with ones that go per event (bad lines, odd fields).
    lines, _ = generate(2000, seed=11)
    settings = ParseSettings(source_id="s", shards=8)
    fn = _ParseBatchFn(settings)
    fn.setup()
    pieces = [out for out in fn.process(lines) if isinstance(out, tuple)]
    assert len({shard for shard, _ in pieces}) == 8
    assert sum(t.num_rows for _, t in pieces) > 1500
    for shard, table in pieces:
        assert table.num_rows > 0
        assert {shard_of(i, 8) for i in table["event_id"].to_pylist()} == {shard}
    assert len(pieces) == len({shard for shard, _ in pieces})  # one piece per shard per batch


def test_a_tables_rows_go_to_the_shards_shard_of_gives_their_ids():
    ids = ["m1", "é-ü", "日本語-id", "emoji-\U0001f600", "", "x" * 300] + [f"id-{i}" for i in range(200)]
    table = pa.table({"event_id": ids, "n": range(len(ids))})
    for shards in (1, 7, 16):
        seen = []
        for shard, rows in split_by_shard(table, shards):
            assert {shard_of(i, shards) for i in rows["event_id"].to_pylist()} == {shard}
            seen += rows["n"].to_pylist()
        assert sorted(seen) == list(range(len(ids)))
