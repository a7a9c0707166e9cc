"""Limits hold for every line: depth bounded independently of Python's recursion limit, and no line
bypasses --max_event_bytes by looking like an envelope. Through python -m pipelines.deliver (FnApiRunner),
ending with the invariants."""
from __future__ import annotations

import orjson

from tests.guarantees.invariants import check_conservation, check_no_duplicate, dead_letters, deliver


def _setup(tmp_path, lines):
    (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "i.json").write_bytes(orjson.dumps([{"source_id": "s", "vendor": "files", "name": "Lake", "config": {
        "path": str(tmp_path / "lake"), "file_format": "json", "compression": "none", "partition_by": "{date}"}}]))
    return [f"--integrations={tmp_path / 'i.json'}", f"--input={tmp_path / 'in.ndjson'}",
            f"--dead_letter={tmp_path / 'dead'}", f"--summary={tmp_path / 'summary.json'}",
            "--max_dead_letter_fraction=1"]  # most lines here are meant to be dead letters


def _event(anon: str, **extra) -> bytes:
    return orjson.dumps({"type": "track", "event": "e", "anonymousId": anon, "messageId": anon, **extra})


def test_max_nesting_depth_is_bounded(tmp_path):
    done = deliver(*_setup(tmp_path, [_event("a")]), "--max_nesting_depth=5000")
    assert done.returncode == 2 and "--max_nesting_depth: at most 200" in done.stderr


def test_events_at_and_past_the_deepest_limit(tmp_path):
    def nested(depth):  # ``depth`` levels in all, the event's own object included
        return b'{"type":"track","event":"e","anonymousId":"d%d","properties":{"x":' % depth \
            + b"[" * (depth - 2) + b"]" * (depth - 2) + b"}}"
    lines = [nested(200), nested(201), nested(900),
             b'{"type":"track","event":"e","anonymousId":"o","properties":' + b'{"a":' * 1500 + b"1" + b"}" * 1501,
             _event("plain")]
    done = deliver(*_setup(tmp_path, lines), "--max_nesting_depth=200", "--max_event_bytes=100000")
    assert done.returncode == 0, done.stderr
    reasons = sorted(d["reason"] for d in dead_letters(tmp_path / "dead"))
    assert reasons == ["too_deep"] * 3
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    check_conservation(summary, input_events=5)
    assert len(check_no_duplicate(tmp_path / "lake")) == summary["integrations"]["lake"]["delivered"] == 2
    assert "internal_error" not in summary["dead_letters"]["by_reason"]


def test_no_line_bypasses_max_event_bytes_as_an_envelope(tmp_path):
    big = "x" * 3_000_000
    lines = [_event("big-batch-word", properties={"note": '"batch"', "pad": big}),  # looks like an envelope
             _event("big-resource", properties={"k": '"resourceLogs"', "pad": big}),
             orjson.dumps({"batch": [orjson.loads(_event("in-batch-big", properties={"pad": "y" * 100_000})),
                                     orjson.loads(_event("in-batch-ok"))]}),
             _event("ok")]
    done = deliver(*_setup(tmp_path, lines))
    assert done.returncode == 0, done.stderr
    dead = dead_letters(tmp_path / "dead")
    assert sorted(d["reason"] for d in dead) == ["too_large"] * 3
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    check_conservation(summary, input_events=5)
    assert sorted(check_no_duplicate(tmp_path / "lake")) == ["in-batch-ok", "ok"]
