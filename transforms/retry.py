"""The one retry policy of the hand-written clients (Redshift's connection, sFTP's uploads), on tenacity:
``max_attempts`` means attempts in all (the first one included), as the vendors' own clients count it
(botocore's ``max_attempts``, google-api-core's deadline from the same setting); waits grow exponentially
from ``first_wait`` up to ``max_wait`` seconds. Errors that are not transient fail at once."""
from __future__ import annotations

import logging
from collections.abc import Callable

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from transforms.secrets import redact

log = logging.getLogger("beamhouse.retry")


def attempts(max_attempts: int, transient: Callable[[BaseException], bool], first_wait: float, max_wait: float,
             between: Callable[[], None] | None = None, what: str = "request",
             logger: logging.Logger = log) -> Retrying:
    """``for attempt in attempts(...): with attempt: ...`` - the body runs until it succeeds, fails with a
    non-transient error, or ``max_attempts`` have failed (then the last error is raised as it was).
    ``between`` runs after each failed attempt that will be retried (e.g. dropping a broken connection);
    each retry is logged as a warning on ``logger``, naming ``what`` and the error (redacted)."""

    def before_sleep(state) -> None:
        exc = state.outcome.exception()
        logger.warning("%s: attempt %d of %d failed (%s: %s); retrying in %.1f s", what, state.attempt_number,
                       max_attempts, type(exc).__name__, redact(str(exc))[:300], state.next_action.sleep)
        if between is not None:
            between()

    return Retrying(stop=stop_after_attempt(max_attempts), reraise=True, retry=retry_if_exception(transient),
                    wait=wait_exponential(multiplier=first_wait, max=max_wait), before_sleep=before_sleep)
