"""Errors a step or handler raises, and how they map to retries.

As in Inngest: any exception is retried with backoff, `NonRetriableError`
stops at once, `RetryAfterError` names when to try again, and `StepError`
is a step that failed for good.
"""

import json

from wit_world.imports import stepwise_durable_types as _wit


class NonRetriableError(Exception):
    """Stops retries at once: the step or run fails with this message."""


class RetryAfterError(Exception):
    """Retries after `retry_after` (a duration: "30s", a timedelta or
    seconds) instead of the backoff table's delay. It still uses an attempt."""

    def __init__(self, message: str, retry_after):
        from ._duration import parse_duration

        super().__init__(message)
        self.retry_after_ms = parse_duration(retry_after)


class StepError(Exception):
    """A step that failed for good (its retries are used up, or it raised
    `NonRetriableError`), or a failed `invoke`. Catch it to handle the
    failure; left uncaught it fails the run without further retries.
    `name` is the class name of the original error, `message` its message."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name
        self.message = message

    def __repr__(self):
        return f"StepError(name={self.name!r}, message={self.message!r})"

    @staticmethod
    def _from_wit(error: _wit.StepError) -> "StepError":
        return StepError(error.name, error.message)


def _to_wit_error(error: BaseException) -> _wit.StepError:
    """The WIT form of an exception raised by a step body or a handler."""
    if isinstance(error, StepError):
        return _wit.StepError(name=error.name, message=error.message, retriable=False, retry_after_ms=None)
    if isinstance(error, NonRetriableError):
        return _wit.StepError(name="NonRetriableError", message=str(error), retriable=False, retry_after_ms=None)
    if isinstance(error, RetryAfterError):
        return _wit.StepError(
            name="RetryAfterError", message=str(error), retriable=True, retry_after_ms=error.retry_after_ms
        )
    return _wit.StepError(name=type(error).__name__, message=str(error), retriable=True, retry_after_ms=None)


def _to_json(value, what: str) -> str:
    """Compact JSON text of `value`, as the Rust SDK writes it, or a
    `NonRetriableError` naming `what` was not JSON."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise NonRetriableError(f"{what} is not JSON-serialisable: {error}") from None
