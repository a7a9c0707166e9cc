import hashlib
import os
import posixpath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import partitioning as P


def test_default_template_renders_hive_hourly():
    t = P.parse_template(P.DEFAULT_TEMPLATE)
    assert t.strftime == "year=%Y/month=%m/day=%d/hour=%H" and t.fields == ()
    assert P.render_partition(t, "year=2026/month=01/day=29/hour=14", {}) == "year=2026/month=01/day=29/hour=14"


def test_fields_in_any_order():
    t = P.parse_template("tenant_id={tenant_id}/app_id={app_id}/{yyyy}/{MM}/{dd}/{HH}")
    assert t.fields == ("_tenant_id", "_app_id")
    time_part = f"tenant_id={P.FIELD_MARK}/app_id={P.FIELD_MARK}/2026/01/29/14"
    assert P.render_partition(t, time_part, {"_tenant_id": "acme", "_app_id": "web"}) == \
        "tenant_id=acme/app_id=web/2026/01/29/14"


@pytest.mark.parametrize("template", ["/abs/{yyyy}", "a/../{yyyy}", "{nope}", "a//b", "{yyyy", "_tmp/{HH}",
                                      ".hidden/{dd}", "x\x00y"])
def test_bad_templates(template):
    with pytest.raises(ValueError):
        P.parse_template(template)


@pytest.mark.parametrize("value, encoded", [("..", "%2E%2E"), ("../etc", "%2E%2E%2Fetc"), ("%2e%2e", "%252e%252e"),
                                            ("a\x00b", "a%00b"), ("_x", "%5Fx"), ("x_y-Z9", "x_y-Z9"),
                                            ("a b", "a%20b"), ("é", "%C3%A9")])
def test_encoding_examples(value, encoded):
    assert P.encode_path_value(value) == encoded
    assert P.decode_path_value(encoded) == value


@pytest.mark.parametrize("value", [None, "", "x" * 201])
def test_invalid_values(value):
    with pytest.raises(P.InvalidPartitionValue):
        P.encode_path_value(value)


@settings(max_examples=400, deadline=None)
@given(tenant=st.text(min_size=1, max_size=60), app=st.text(min_size=1, max_size=60))
def test_paths_from_event_values_never_leave_the_root(tenant, app, tmp_path_factory):
    t = P.parse_template("{tenant_id}/{app_id}/{date}")
    try:
        rel = P.render_partition(t, f"{P.FIELD_MARK}/{P.FIELD_MARK}/2026-01-29", {"_tenant_id": tenant, "_app_id": app})
    except P.InvalidPartitionValue:
        return  # too long once encoded: a dead letter, never a path
    parts = rel.split("/")
    assert len(parts) == 3 and parts[2] == "2026-01-29"
    assert [P.decode_path_value(p) for p in parts[:2]] == [tenant, app]  # reversible
    assert all(p and p[0] not in "._" for p in parts)
    root = "/data/lake"
    resolved = posixpath.normpath(posixpath.join(root, rel))
    assert resolved.startswith(root + "/") and os.path.commonpath([root, resolved]) == root


def test_batch_ids_and_names_are_deterministic():
    a = P.batch_id("i", "p", ["e1", "e2"])
    assert a == P.batch_id("i", "p", ["e1", "e2"]) and len(a) == 16
    assert a != P.batch_id("i", "p", ["e1", "e3"]) != P.batch_id("j", "p", ["e1", "e2"])
    assert P.file_name("events", 1706540000, a, ".json.gz") == f"events-1706540000-{a}.json.gz"
    # the digest files are named by (so a re-run names them alike): NUL-separated, as it has always been
    ids = ["e1", "ä2", "e3"]
    expected = hashlib.sha256(b"i\x00p" + b"".join(b"\x00" + e.encode() for e in ids)).hexdigest()[:16]
    assert P.batch_id("i", "p", ids) == expected == P.batch_id("i", "p", [e.encode() for e in ids])
    assert P.batch_id("i", "p", []) == hashlib.sha256(b"i\x00p").hexdigest()[:16]
    assert P.generation_id(["b", "a"]) == P.generation_id(["a", "b"])


def _us(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text).timestamp()) * 1_000_000


@pytest.mark.parametrize("template,at,tz,end", [
    ("year={yyyy}/month={MM}/day={dd}/hour={HH}", "2026-01-29T14:30:00+00:00", "UTC", "2026-01-29T15:00:00+00:00"),
    ("{date}", "2026-01-29T23:59:59+00:00", "UTC", "2026-01-30T00:00:00+00:00"),
    ("{yyyy}/{MM}", "2026-12-31T10:00:00+00:00", "UTC", "2027-01-01T00:00:00+00:00"),
    ("{yyyy}", "2026-06-01T00:00:00+00:00", "UTC", "2027-01-01T00:00:00+00:00"),
    ("{date}/min={min15}", "2026-01-29T14:44:59+00:00", "UTC", "2026-01-29T14:45:00+00:00"),
    ("{date}/min={min30}", "2026-01-29T14:44:59+00:00", "UTC", "2026-01-29T15:00:00+00:00"),
    ("{date}/{HH}{mm}", "2026-01-29T14:44:59+00:00", "UTC", "2026-01-29T14:45:00+00:00"),
    ("{date}/{HH}{mm}{ss}", "2026-01-29T14:44:59+00:00", "UTC", "2026-01-29T14:45:00+00:00"),
    # days and hours as Los Angeles' clock shows them: 05:00Z is 21:00 of the 28th (PST, UTC-8)
    ("{date}", "2026-01-29T05:00:00+00:00", "America/Los_Angeles", "2026-01-29T08:00:00+00:00"),
    # a 23-hour day (clocks spring forward on 2026-03-08) and a 25-hour one (fall back on 2026-11-01)
    ("{date}", "2026-03-08T12:00:00+00:00", "America/Los_Angeles", "2026-03-09T07:00:00+00:00"),
    ("{date}", "2026-11-01T12:00:00+00:00", "America/Los_Angeles", "2026-11-02T08:00:00+00:00"),
    # hour 01 on the fall-back day happens twice: its partition ends after the second one (02:00 PST)
    ("{date}/{HH}", "2026-11-01T08:30:00+00:00", "America/Los_Angeles", "2026-11-01T10:00:00+00:00"),
    ("{date}/{HH}", "2026-11-01T09:30:00+00:00", "America/Los_Angeles", "2026-11-01T10:00:00+00:00"),
    # hour 01 on the spring-forward day ends when the clock jumps from 02:00 PST to 03:00 PDT
    ("{date}/{HH}", "2026-03-08T09:30:00+00:00", "America/Los_Angeles", "2026-03-08T10:00:00+00:00"),
    # a half-hour zone: hours end at :30 UTC
    ("{date}/{HH}", "2026-01-29T14:10:00+00:00", "Asia/Kolkata", "2026-01-29T14:30:00+00:00"),
])
def test_partition_end_in_its_time_zone(template, at, tz, end):
    assert P.partition_end_us(P.parse_template(template), _us(at), tz) == _us(end)


def test_partitions_without_time_never_end():
    template = P.parse_template("tenant_id={tenant_id}/type={type}")
    assert P.time_span(template) is None and P.partition_end_us(template, _us("2026-01-29T00:00:00+00:00")) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-2_000_000_000, 4_000_000_000), min_size=1, max_size=50),
       st.sampled_from(["year={yyyy}/month={MM}/day={dd}/hour={HH}", "{date}", "{yyyy}/{MM}", "{yyyy}",
                        "dt={date}/{HH}{mm}", "{date}/{HH}/{mm}/{ss}", "x/{date}/min={min15}", "static/{tenant_id}"]),
       st.sampled_from(["UTC", "Asia/Kolkata", "America/Los_Angeles"]))
def test_partition_times_formatted_once_per_unit_match_formatting_every_row(values, template, tz):
    import pyarrow as pa
    import pyarrow.compute as pc

    from transforms.sinks.files.keying import format_partition_times

    t = P.parse_template(template)
    seconds = pa.chunked_array([pa.array(values[:len(values) // 2], pa.timestamp("s", tz="UTC")),
                                pa.array(values[len(values) // 2:], pa.timestamp("s", tz="UTC"))])
    expected = pc.strftime(seconds.cast(pa.timestamp("s", tz=tz)), format=t.strftime).to_pylist()
    assert format_partition_times(seconds, t, tz).to_pylist() == expected
