"""User traits wherever the SDK puts them: RudderStack's SDK sends an identify's traits in context.traits,
Segment's analytics-python in traits. Both must give the same canonical row, and an exclusion of a user
trait must hold wherever the client put it. Real SDK payloads (captured on a local HTTP endpoint), run
through python -m pipelines.deliver (FnApiRunner) with the README's warehouse settings, into DuckDB."""
from __future__ import annotations

import duckdb
import orjson

from tests.guarantees.invariants import check_conservation, deliver
from tests.servers.capture import CaptureServer, rudderstack_batch

TRAITS = {"email": "jane@example.com", "plan": "pro"}
CONTEXT = {"tenant_id": "acme", "consent": {"analytics": True}, "ip": "203.0.113.9"}


def _segment_batch(server):
    import segment.analytics as analytics

    start = len(server.requests)
    client = analytics.Client("write-key-secret", host=f"http://127.0.0.1:{server.port}", sync_mode=True)
    client.identify("user-s", TRAITS, context=CONTEXT)
    client.track("user-s", "Order Completed", {"revenue": 12.5}, context={**CONTEXT, "traits": TRAITS})
    return server.wait_for(start + 2)[start:start + 2]


def test_identify_traits_from_context_traits_and_exclusions_in_both_places(tmp_path):
    with CaptureServer() as server:
        bodies = [r.body for r in rudderstack_batch(server, TRAITS, CONTEXT)] + [r.body for r in _segment_batch(server)]
    lines = []
    for body in bodies:
        body = __import__("gzip").decompress(body) if body[:2] == b"\x1f\x8b" else body
        lines.append(body)  # each body is a batch envelope line, as the HTTP API receives it
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    warehouse = {"path": str(tmp_path / "wh.duckdb"), "table": "events", "consent": {"require": ["analytics"]},
                 "properties": {"exclude": ["context.ip", "traits.email"]}}
    raw = {"path": str(tmp_path / "raw.duckdb"), "table": "events"}
    (tmp_path / "i.json").write_bytes(orjson.dumps([
        {"source_id": "src_example", "vendor": "duckdb", "name": "Warehouse", "config": warehouse},
        {"source_id": "src_example", "vendor": "duckdb", "name": "Raw", "config": raw}]))
    done = deliver(f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
                   f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}")
    assert done.returncode == 0, done.stderr
    check_conservation(orjson.loads((tmp_path / "summary.json").read_bytes()), input_events=4)

    def rows(db):
        con = duckdb.connect(str(db), read_only=True)
        out = {(r[0], r[1]): (orjson.loads(r[2]) if r[2] else None, orjson.loads(r[3]) if r[3] else None)
               for r in con.execute("SELECT user_id, type, CAST(traits AS VARCHAR), CAST(context AS VARCHAR) "
                                    "FROM events").fetchall()}
        con.close()
        return out

    full, kept = rows(tmp_path / "raw.duckdb"), rows(tmp_path / "wh.duckdb")
    # Without a selection: both SDKs' identify rows carry the traits in the traits column (RudderStack's were
    # moved out of context.traits; analytics-python 2.4 sends them in both places and keeps its context).
    for user in ("user-r", "user-s"):
        assert full[(user, "identify")][0] == TRAITS, user
    assert "traits" not in full[("user-r", "identify")][1]
    # With exclude ["context.ip", "traits.email"]: no email and no IP anywhere, for either SDK's shape.
    for (user, kind), (traits, context) in kept.items():
        assert "jane@example.com" not in orjson.dumps([traits, context]).decode(), (user, kind)
        assert "ip" not in (context or {})
    assert kept[("user-r", "identify")][0] == {"plan": "pro"} == kept[("user-s", "identify")][0]
    assert kept[("user-s", "track")][1]["traits"] == {"plan": "pro"}  # a track's context.traits: email removed
