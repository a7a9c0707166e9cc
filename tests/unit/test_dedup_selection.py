import orjson
import pyarrow as pa

from transforms.dedup import dedup_table
from transforms.events import batch_schema
from transforms.selection import select_table


def rows(*specs):
    schema = batch_schema(())
    data = [{"event_id": i, "type": "track", "event": "x", "received_at": r, "timestamp": r,
             "context": orjson.dumps(ctx).decode(), "properties": '{"a":1,"b":{"c":2,"d":3}}', "traits": None}
            for i, r, ctx in specs]
    return pa.Table.from_pylist(data, schema=schema)


def test_dedup_keeps_earliest_received_regardless_of_order():
    t = rows(("a", 5, {"n": 1}), ("b", 1, {}), ("a", 2, {"n": 2}), ("a", 9, {"n": 3}))
    for table in (t, t.take([3, 2, 1, 0])):
        unique, dropped = dedup_table(table)
        assert dropped == 2 and sorted(unique["event_id"].to_pylist()) == ["a", "b"]
        kept = [r for r in unique.to_pylist() if r["event_id"] == "a"][0]
        assert orjson.loads(kept["context"]) == {"n": 2}


def test_dedup_no_duplicates_is_untouched():
    t = rows(("a", 1, {}), ("b", 1, {}))
    assert dedup_table(t) == (t, 0)


def test_exclude_and_include():
    t = rows(("a", 1, {"ip": "1.2.3.4", "page": {"url": "u", "title": "t"}}))
    ex = select_table(t, exclude=["context.ip", "properties.b.c", "traits.email"]).to_pylist()[0]
    assert orjson.loads(ex["context"]) == {"page": {"url": "u", "title": "t"}}
    assert orjson.loads(ex["properties"]) == {"a": 1, "b": {"d": 3}}
    inc = select_table(t, include=["context.page.url", "properties"]).to_pylist()[0]
    assert orjson.loads(inc["context"]) == {"page": {"url": "u"}}
    assert orjson.loads(inc["properties"]) == {"a": 1, "b": {"c": 2, "d": 3}} and inc["traits"] is None
