"""Event time parsing: every accepted form becomes integer microseconds since the Unix epoch, UTC.

Accepted:
- ISO 8601 strings with any UTC offset (``Z``/``z``, ``+02:00``); without an offset they are taken as UTC;
  fractions beyond microseconds are truncated.
- Numeric epochs (JSON numbers, or strings of digits) by magnitude: below 1e11 seconds, below 1e14
  milliseconds, below 1e17 microseconds, below 1e20 nanoseconds.

Anything else raises ``ValueError``.

>>> parse_timestamp_us("2026-01-29T14:30:00Z")
1769697000000000
>>> parse_timestamp_us(1769697000000) == parse_timestamp_us(1769697000)
True
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
# Bounds of datetime (years 1..9999), so every accepted value can be formatted back.
MIN_US = (datetime(1, 1, 1, tzinfo=timezone.utc) - _EPOCH) // _US
MAX_US = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc) - _EPOCH) // _US


def parse_timestamp_us(value) -> int:
    """Parse one timestamp value; raises ``ValueError`` with a short reason."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, (int, float)):
        return _epoch_to_us(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty timestamp")
        if text.isdigit() or (text[0] == "-" and text[1:].isdigit()):
            return _epoch_to_us(int(text))
        if text[-1] == "z":
            text = text[:-1] + "Z"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("not an ISO 8601 timestamp or epoch number") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        try:
            us = (dt - _EPOCH) // _US
        except OverflowError:
            raise ValueError("timestamp out of range") from None
        # An offset can carry a year-1 or year-9999 wall clock past datetime's range once in UTC
        # (0001-01-01T00:30:00+01:00): such a value cannot name a partition or be formatted back.
        if not MIN_US <= us <= MAX_US:
            raise ValueError("timestamp out of range")
        return us
    raise ValueError(f"a {type(value).__name__} is not a timestamp")


def _epoch_to_us(number) -> int:
    if number != number:  # NaN cannot come from strict JSON, but guard direct callers
        raise ValueError("NaN is not a timestamp")
    magnitude = abs(number)
    if magnitude < 1e11:
        us = number * 1_000_000
    elif magnitude < 1e14:
        us = number * 1_000
    elif magnitude < 1e17:
        us = number
    elif magnitude < 1e20:
        us = number / 1_000
    else:
        raise ValueError("epoch number too large")
    us = int(us)
    if not MIN_US <= us <= MAX_US:
        raise ValueError("timestamp out of range")
    return us


def format_us(us: int) -> str:
    """ISO 8601 UTC with microseconds: ``2026-01-29T14:30:00.000000Z``."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
