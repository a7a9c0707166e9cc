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


def test_each_retry_is_logged_naming_what_and_the_attempt_without_secrets(caplog):
    from transforms import secrets

    secrets.register("s3cr3t-token-value")
    calls = []
    with caplog.at_level("WARNING", logger="beamhouse.retry"):
        for attempt in retry.attempts(3, lambda e: True, first_wait=0, max_wait=0, what="sftp upload a/b.csv"):
            with attempt:
                calls.append(1)
                if len(calls) < 3:
                    raise ConnectionError("reset by peer while using s3cr3t-token-value")
    messages = [r.getMessage() for r in caplog.records if r.name == "beamhouse.retry"]
    assert len(messages) == 2
    assert messages[0].startswith("sftp upload a/b.csv: attempt 1 of 3 failed (ConnectionError: reset by peer")
    assert "s3cr3t-token-value" not in " ".join(messages)
