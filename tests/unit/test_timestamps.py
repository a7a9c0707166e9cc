import pytest

from transforms.timestamps import format_us, parse_timestamp_us

BASE = 1769697000_000000  # 2026-01-29T14:30:00Z


@pytest.mark.parametrize("value, expected", [
    ("2026-01-29T14:30:00Z", BASE),
    ("2026-01-29T14:30:00z", BASE),
    ("2026-01-29T16:30:00+02:00", BASE),
    ("2026-01-29T09:30:00-05:00", BASE),
    ("2026-01-29T14:30:00", BASE),  # no offset: UTC
    ("2026-01-29T14:30:00.123456789Z", BASE + 123456),  # beyond µs: truncated
    (1769697000, BASE),  # seconds
    (1769697000.5, BASE + 500000),
    (1769697000000, BASE),  # milliseconds
    (1769697000000000, BASE),  # microseconds
    (1769697000000000000, BASE),  # nanoseconds
    ("1769697000000", BASE),  # digits in a string
])
def test_accepted_forms(value, expected):
    assert parse_timestamp_us(value) == expected


@pytest.mark.parametrize("value", ["yesterday", "", "2026-13-01T00:00:00Z", True, None, {"a": 1}, [1], 10**25,
                                   "2026-01-29T14:30:00+25:00"])
def test_rejected_forms(value):
    with pytest.raises(ValueError):
        parse_timestamp_us(value)


def test_format_round_trip():
    assert format_us(BASE + 7) == "2026-01-29T14:30:00.000007Z"
    assert parse_timestamp_us(format_us(BASE + 7)) == BASE + 7
