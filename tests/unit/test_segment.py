import pytest

from transforms.dialects.segment import Rejected, derive_event_id, normalise

NOW = 1769697000_000000
DAY = 86_400_000_000


def norm(obj):
    return normalise(obj, "src", NOW, 3650 * DAY, DAY)


def base(**kw):
    event = {"type": "track", "event": "Order Completed", "anonymousId": "a1", "messageId": "m1",
             "timestamp": "2026-01-29T14:00:00Z"}
    event.update(kw)
    return event


def test_track_columns():
    row = norm(base(userId=42, sentAt="2026-01-29T14:00:01Z", receivedAt="2026-01-29T14:00:02Z",
                    properties={"total": 1.5}, context={"ip": "1.2.3.4"}))
    event_id, kind, name, anon, user, ts, received, sent, context, props, traits = row
    assert (event_id, kind, name, anon, user) == ("m1", "track", "Order Completed", "a1", "42")
    assert ts == NOW - 30 * 60 * 1_000_000
    assert (received - ts, sent - ts) == (2_000_000, 1_000_000)
    assert context == {"ip": "1.2.3.4"} and props == {"total": 1.5} and traits is None


@pytest.mark.parametrize("kind, name", [("page", "Page Viewed"), ("screen", "Screen Viewed"),
                                        ("identify", "Identify"), ("group", "Group"), ("alias", "Alias"),
                                        ("TRACK", "Order Completed")])
def test_event_name_per_type(kind, name):
    row = norm(base(type=kind))
    assert row[1] == kind.lower() and row[2] == name


def test_top_level_fields_are_kept():
    page = norm(base(type="page", name="Home", category="Docs", channel="web", integrations={"All": True}))
    assert page[9] == {"name": "Home", "category": "Docs"}
    assert page[8]["_unmapped"] == {"channel": "web", "integrations": {"All": True}}
    group = norm(base(type="group", groupId="org1", traits={"plan": "x"}))
    assert group[9] == {"group_id": "org1"} and group[10] == {"plan": "x"}
    alias = norm(base(type="alias", previousId="old"))
    assert alias[9] == {"previous_id": "old"}
    clash = norm(base(type="page", name="Home", properties={"name": "Other"}))
    assert clash[9] == {"name": "Other"} and clash[8]["_unmapped"] == {"name": "Home"}
    track_name = norm(base(name="stray"))
    assert track_name[8]["_unmapped"] == {"name": "stray"}


def test_timestamp_fallbacks():
    no_ts = base(originalTimestamp="2026-01-29T13:00:00Z")
    del no_ts["timestamp"]
    assert norm(no_ts)[5] == NOW - 90 * 60 * 1_000_000
    neither = base(receivedAt="2026-01-29T12:00:00Z")
    del neither["timestamp"]
    row = norm(neither)
    assert row[5] == row[6] == NOW - 150 * 60 * 1_000_000
    processing = base()
    del processing["timestamp"]
    assert norm(processing)[5] == NOW  # processing time


def test_derived_event_id_is_deterministic():
    event = base()
    del event["messageId"]
    first = norm(event)[0]
    reordered = dict(reversed(list(event.items())))
    assert norm(reordered)[0] == first == derive_event_id(event, "src")
    assert norm(base(event="Other", messageId=None))[0] != first
    assert normalise(event, "other-source", NOW, 3650 * DAY, DAY)[0] != first


@pytest.mark.parametrize("event, reason", [
    (base(type="bogus"), "unknown_type"),
    (base(type=None), "unknown_type"),
    (base(event=""), "missing_event_name"),
    (base(event=5), "invalid_field"),
    (base(anonymousId=None), "missing_identity"),
    (base(userId={"x": 1}), "invalid_field"),
    (base(messageId=True), "invalid_field"),
    (base(messageId="x" * 300), "invalid_field"),
    (base(properties=[1]), "invalid_field"),
    (base(context="str"), "invalid_field"),
    (base(timestamp="soon"), "invalid_timestamp"),
    (base(sentAt=[]), "invalid_timestamp"),
    (base(timestamp="1990-01-01T00:00:00Z"), "timestamp_out_of_range"),
    (base(timestamp=1769697000 + 3 * 86400), "timestamp_out_of_range"),  # seconds, 3 days ahead
    (base(event_id="other"), "conflicting_event_id"),
])
def test_rejections(event, reason):
    with pytest.raises(Rejected) as info:
        norm(event)
    assert info.value.reason == reason
    assert info.value.error


def test_event_id_synonym_and_integer_ids():
    assert norm(base(messageId=None, event_id="e9"))[0] == "e9"
    assert norm(base(messageId=123))[0] == "123"
    assert norm(base(event_id="m1"))[0] == "m1"  # same value: no conflict
