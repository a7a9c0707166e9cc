"""transforms/retry.py: max_attempts counts every attempt; non-transient errors fail at once."""
import pytest

from transforms import retry


def run(max_attempts, failures, transient=lambda e: isinstance(e, ConnectionError)):
    calls, resets = [], []

    def body():
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return "ok"

    for attempt in retry.attempts(max_attempts, transient, first_wait=0, max_wait=0, between=lambda: resets.append(1)):
        with attempt:
            return body(), len(calls), len(resets)


def test_transient_errors_are_retried_up_to_max_attempts_in_all():
    assert run(3, [ConnectionError(), ConnectionError()]) == ("ok", 3, 2)
    with pytest.raises(ConnectionError):
        run(3, [ConnectionError()] * 3)


def test_other_errors_fail_at_once():
    with pytest.raises(ValueError):
        run(5, [ValueError("bad data")])
