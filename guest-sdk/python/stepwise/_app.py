"""Registration: the one list of an app's functions and their handlers.

The host reads `functions()` once at upload and calls `handle` (or
`on_failure`) for each run; all three answer from the functions that
`@app.function` registered, so a handler cannot exist without being
registered, nor be registered without a handler.
"""

import os
import random
from typing import Callable, Dict, List, Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import stepwise_durable_types as _wit

from . import _options
from ._errors import NonRetriableError, StepError, _to_json, _to_wit_error
from ._step import Event, Step


class Context:
    """What a handler receives: `event`, `events`, `step`, `run_id`, `attempt`."""

    def __init__(self, ctx: _wit.RunContext):
        self.event = Event._from_wit(ctx.event)
        self.events = [Event._from_wit(e) for e in ctx.events]
        self.step = Step()
        self.run_id = ctx.run_id
        self.attempt = ctx.attempt


class FailureContext:
    """What an `on_failure` handler receives, as Inngest's: `event` (the
    `inngest/function.failed` event, whose data holds `function_id`,
    `run_id` of the failed run, `error` {name, message} and `event`),
    `original_event` (the failed run's event), `error` (a `StepError`),
    `step`, and the failure handler's own `run_id` and `attempt`."""

    def __init__(self, ctx: _wit.FailureContext):
        self.event = Event._from_wit(ctx.event)
        self.original_event = Event._from_wit(ctx.original_event)
        self.error = StepError._from_wit(ctx.error)
        self.step = Step()
        self.run_id = ctx.run_id
        self.attempt = ctx.attempt


class _Function:
    def __init__(self, config: _wit.FunctionConfig, handler: Callable, on_failure: Optional[Callable]):
        self.config = config
        self.handler = handler
        self.on_failure = on_failure


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
        event=None,
        events=None,
        retries: Optional[int] = None,
        name: Optional[str] = None,
        *,
        cron=None,
        trigger=None,
        triggers=None,
        concurrency=None,
        throttle=None,
        rate_limit=None,
        debounce=None,
        priority=None,
        batch_events=None,
        idempotency: Optional[str] = None,
        cancel=None,
        cancel_on=None,
        timeouts=None,
        singleton=None,
        on_failure: Optional[Callable] = None,
    ):
        """Registers the decorated `handler(ctx)` as function `id`.

        Triggers (at least one): `event="shop/order.created"`, `events=[...]`,
        `cron="TZ=Europe/Paris 0 9 * * *"` (or a list), and `trigger=` /
        `triggers=` with `TriggerEvent(event, expression=...)` and
        `TriggerCron(cron)`. Options, as Inngest's: `retries` (0 to 20,
        default 4), `concurrency` (a number, `Concurrency` or a list of two),
        `throttle=Throttle(...)`, `rate_limit=RateLimit(...)`,
        `debounce=Debounce(...)`, `priority=Priority(run=...)`,
        `batch_events=Batch(...)`, `idempotency="event.data.x"`,
        `cancel=[Cancel(...)]` (or `cancel_on=`), `timeouts=Timeouts(...)`,
        `singleton=Singleton(...)` and `on_failure=handler`, which runs as a
        run of its own with a `FailureContext` when a run fails for good.
        A wrong option raises `ValueError` here, naming the function and the
        option."""
        try:
            if not isinstance(id, str) or not id:
                raise _options._Invalid(f"id: expected a non-empty string, got {id!r}")
            if any(id in app._functions for app in _APPS):
                raise _options._Invalid("it is registered twice; function ids must be unique")
            if on_failure is not None and not callable(on_failure):
                raise _options._Invalid(f"on_failure: expected a function, got {on_failure!r}")
            if cancel is not None and cancel_on is not None:
                raise _options._Invalid("give cancel= or cancel_on=, not both")
            config = _wit.FunctionConfig(
                id=id,
                name=_options._optional_text(name, "name"),
                triggers=_options.triggers(event, events, cron, _options._as_list(trigger) + _options._as_list(triggers)),
                retries=_options.retries(retries),
                concurrency=_options.concurrency(concurrency),
                throttle=_options.throttle(throttle),
                rate_limit=_options.rate_limit(rate_limit),
                debounce=_options.debounce(debounce),
                priority=_options.priority(priority),
                batch_events=_options.batch_events(batch_events),
                idempotency=_options._optional_text(idempotency, "idempotency"),
                cancel_on=_options.cancel(cancel if cancel is not None else cancel_on),
                timeouts=_options.timeouts(timeouts),
                singleton=_options.singleton(singleton),
                on_failure=on_failure is not None,
            )
        except _options._Invalid as error:
            raise ValueError(f"function {id!r}: {error}") from None

        def register(handler):
            if not callable(handler):
                raise ValueError(f"function {id!r}: @app.function(...) must decorate a function")
            self._functions[id] = _Function(config, handler, on_failure)
            # Lets `step.invoke(..., function=handler)` name the function.
            handler._stepwise_function_id = id
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


def _call(handler: Callable, ctx) -> str:
    """Runs a handler; its output as JSON text, or its error as `Err`."""
    # The `random` module was seeded when the component was built; seed it
    # per run (outside steps os.urandom is the run's replayable stream),
    # so runs differ and every replay of a run draws the same numbers.
    random.seed(os.urandom(32))
    try:
        return _to_json(handler(ctx), "the function's output")
    except Exception as error:
        raise Err(_to_wit_error(error))


class WitWorld(wit_world.WitWorld):
    """The component's exports; `stepwise build` points componentize-py here."""

    def functions(self) -> List[_wit.FunctionConfig]:
        return [f.config for app in _APPS for f in app._functions.values()]

    def handle(self, function_id: str, ctx: _wit.RunContext) -> str:
        function = _find(function_id)
        try:
            context = Context(ctx)
        except Exception as error:
            raise Err(_to_wit_error(NonRetriableError(f"the run's event could not be read: {error}")))
        return _call(function.handler, context)

    def on_failure(self, function_id: str, ctx: _wit.FailureContext) -> str:
        function = _find(function_id)
        if function.on_failure is None:
            error = NonRetriableError(
                f"function {function_id!r} has no on_failure handler in this version of the app"
            )
            raise Err(_to_wit_error(error))
        try:
            context = FailureContext(ctx)
        except Exception as error:
            raise Err(_to_wit_error(NonRetriableError(f"the failure event could not be read: {error}")))
        return _call(function.on_failure, context)
