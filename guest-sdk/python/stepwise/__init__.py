"""Write durable step functions for Stepwise in Python.

    from stepwise import App, NonRetriableError
    app = App("shop")

    @app.function(id="process-order", event="shop/order.created", retries=3)
    def process_order(ctx):
        user = ctx.step.run("get-user", lambda: get_user(ctx.event.data["userId"]))
        ctx.step.sleep("wait-for-payment", "1h")
        payment = ctx.step.wait_for_event(
            "wait-payment", event="shop/payment.success", match="data.orderId", timeout="24h")
        if payment is None:
            ctx.step.run("cancel-order", lambda: cancel(user))

Build with `stepwise build app.py`: the result is a component for
`stepwise deploy`. The semantics are those of the Rust SDK and of Inngest:
a step's body runs once and its JSON output is journaled; code outside steps
runs again on every replay, sees the run's logical time and a random
generator seeded by the run id, and may not use the network.
"""

import json
import os
import random
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional

import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports import step as _host
from wit_world.imports import types as _wit

__all__ = [
    "App",
    "Context",
    "Event",
    "NonRetriableError",
    "RetryAfterError",
    "Step",
    "StepError",
    "parse_duration",
]

# The longest sleep or wait, as in Inngest: one year.
MAX_DURATION_MS = 365 * 24 * 60 * 60 * 1000
_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+)([a-z]*)")


def parse_duration(value) -> int:
    """Milliseconds of an Inngest duration ("30s", "1h30m", "7d"), a
    `timedelta`, or a number of seconds."""
    if isinstance(value, timedelta):
        ms = int(value.total_seconds() * 1000)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        ms = int(value * 1000)
    elif isinstance(value, str):
        ms = _parse_duration_text(value)
    else:
        raise NonRetriableError(f"invalid duration {value!r}: give a string such as \"30s\", a timedelta or seconds")
    if ms < 0 or ms > MAX_DURATION_MS:
        raise NonRetriableError(f"invalid duration {value!r}: it must be between 0 and a year")
    return ms


def _parse_duration_text(text: str) -> int:
    def complain(why):
        return NonRetriableError(
            f"invalid duration {text!r}: {why}; write it as Inngest does, "
            f'e.g. "30s", "10m", "1h30m", "7d" (units ms, s, m, h, d, w)'
        )

    rest = text.strip()
    if not rest:
        raise complain("it is empty")
    total = 0
    while rest:
        match = _PART.match(rest)
        if not match:
            raise complain("expected a number")
        number, unit = match.groups()
        if not unit:
            raise complain("a number has no unit")
        if unit not in _UNITS_MS:
            raise complain(f"unknown unit {unit!r}")
        total += int(number) * _UNITS_MS[unit]
        rest = rest[match.end():]
    return total


class NonRetriableError(Exception):
    """Stops retries at once: the step or run fails with this message."""


class RetryAfterError(Exception):
    """Retries after `retry_after` (a duration) instead of the backoff table."""

    def __init__(self, message: str, retry_after):
        super().__init__(message)
        self.retry_after_ms = parse_duration(retry_after)


class StepError(Exception):
    """A step that failed for good (its retries are used up, or it raised
    `NonRetriableError`). Catch it to handle the failure; left uncaught it
    fails the run without further retries."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name
        self.message = message


def _to_wit_error(error: BaseException) -> _wit.StepError:
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
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise NonRetriableError(f"{what} is not JSON-serialisable: {error}") from None


class Event:
    """An event: `id`, `name`, `data` (a dict), `ts` (ms since the epoch), `user`."""

    def __init__(self, id: str, name: str, data: Any, ts: int, user: Any = None):
        self.id = id
        self.name = name
        self.data = data
        self.ts = ts
        self.user = user

    @staticmethod
    def _from_wit(event: _wit.Event) -> "Event":
        user = json.loads(event.user) if event.user is not None else None
        return Event(event.id, event.name, json.loads(event.data), event.ts, user)

    def __repr__(self):
        return f"Event(id={self.id!r}, name={self.name!r}, data={self.data!r})"


class Step:
    """The step tools of a run, as `step` in Inngest's handlers."""

    def run(self, id: str, fn: Callable, *args, **kwargs):
        """Runs `fn(*args, **kwargs)` once, durably: its (JSON) output is
        journaled, and every replay gets the journaled output instead of
        running `fn` again. An exception is retried with backoff; when the
        last attempt fails (or it is a `NonRetriableError`) a `StepError` is
        raised here."""
        memo = _host.begin(id)
        if isinstance(memo, _host.Memo_Done):
            return json.loads(memo.value)
        if isinstance(memo, _host.Memo_Failed):
            raise StepError(memo.value.name, memo.value.message)
        try:
            outcome = Ok(_to_json(fn(*args, **kwargs), f"the output of step {id!r}"))
        except Exception as error:  # every failure of a step body is the step's
            outcome = Err(_to_wit_error(error))
        # Returns only when the outcome is final (and on disk).
        _host.complete(id, outcome)
        if isinstance(outcome, Err):
            raise StepError(outcome.value.name, outcome.value.message)
        return json.loads(outcome.value)

    def sleep(self, id: str, duration) -> None:
        """Pauses the run for `duration` ("1h", "30m", a timedelta, seconds),
        up to a year. No instance stays in memory meanwhile."""
        _host.sleep(id, parse_duration(duration))

    def sleep_until(self, id: str, when) -> None:
        """Pauses the run until `when` (a datetime, or ms since the epoch)."""
        if isinstance(when, datetime):
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            when = int(when.timestamp() * 1000)
        _host.sleep_until(id, int(when))

    def wait_for_event(self, id: str, *, event: str, timeout, match: Optional[str] = None) -> Optional[Event]:
        """Pauses the run until an `event` arrives (with the same value at the
        dotted path `match` as the triggering event, if given) and returns it;
        returns None when `timeout` passes first. Only events accepted after
        the wait began can match."""
        options = _wit.WaitOptions(event=event, match=match, timeout_ms=parse_duration(timeout))
        found = _host.wait_for_event(id, options)
        return Event._from_wit(found) if found is not None else None


class Context:
    """What a handler receives: `event`, `events`, `step`, `run_id`, `attempt`."""

    def __init__(self, ctx: _wit.RunContext):
        self.event = Event._from_wit(ctx.event)
        self.events = [Event._from_wit(e) for e in ctx.events]
        self.step = Step()
        self.run_id = ctx.run_id
        self.attempt = ctx.attempt


class _Function:
    def __init__(self, id, name, triggers, retries, handler):
        self.id = id
        self.name = name
        self.triggers = triggers
        self.retries = retries
        self.handler = handler

    def config(self) -> _wit.FunctionConfig:
        triggers = [_wit.Trigger_Event(name) for name in self.triggers]
        return _wit.FunctionConfig(id=self.id, name=self.name, triggers=triggers, retries=self.retries)


_APPS: List["App"] = []


class App:
    """An app: every function it serves. Functions are registered with the
    `@app.function(...)` decorator; `stepwise build` exports them all."""

    def __init__(self, name: Optional[str] = None):
        self.name = name
        self._functions: Dict[str, _Function] = {}
        _APPS.append(self)

    def function(
        self,
        id: str,
        event: Optional[str] = None,
        events: Optional[List[str]] = None,
        retries: Optional[int] = None,
        name: Optional[str] = None,
    ):
        """Registers the decorated `handler(ctx)` as function `id`, run for
        every `event` (or each of `events`); `retries` per step, 0 to 20
        (default 4)."""
        triggers = ([event] if event else []) + list(events or [])

        def register(handler):
            self._functions[id] = _Function(id, name, triggers, retries, handler)
            return handler

        return register


def _find(function_id: str) -> _Function:
    for app in _APPS:
        if function_id in app._functions:
            return app._functions[function_id]
    error = NonRetriableError(
        f"this app has no function {function_id!r}; it was probably removed from the app's registration"
    )
    raise Err(_to_wit_error(error))


class WitWorld(wit_world.WitWorld):
    """The component's exports; `stepwise build` points componentize-py here."""

    def functions(self) -> List[_wit.FunctionConfig]:
        return [f.config() for app in _APPS for f in app._functions.values()]

    def handle(self, function_id: str, ctx: _wit.RunContext) -> str:
        # The `random` module was seeded when the component was built; seed it
        # per run (outside steps os.urandom is the run's replayable stream),
        # so runs differ and every replay of a run draws the same numbers.
        random.seed(os.urandom(32))
        function = _find(function_id)
        try:
            output = function.handler(Context(ctx))
        except Exception as error:
            raise Err(_to_wit_error(error))
        try:
            return _to_json(output, "the function's output")
        except NonRetriableError as error:
            raise Err(_to_wit_error(error))
