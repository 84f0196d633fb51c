"""Write durable step functions for Stepwise in Python.

    from stepwise import App, Cancel, NonRetriableError, Throttle
    app = App("shop")

    @app.function(id="process-order", event="shop/order.created", retries=3,
                  throttle=Throttle(10, "1m"), cancel=[Cancel("shop/order.cancelled", match="data.orderId")])
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
generator seeded by the run id, and may not use the network (`stepwise.http`
works inside step bodies only).

The package is split by concern: `_app` (registration and the component's
exports), `_options` (triggers and flow control), `_step` (the step calls),
`_errors`, `_duration`, and `http`.
"""

from . import http
from ._app import App, Context, FailureContext, WitWorld
from ._duration import MAX_DURATION_MS, parse_duration
from ._errors import NonRetriableError, RetryAfterError, StepError
from ._options import (
    Batch,
    Cancel,
    Concurrency,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
    TriggerCron,
    TriggerEvent,
)
from ._step import Event, Step

__all__ = [
    "App",
    "Batch",
    "Cancel",
    "Concurrency",
    "Context",
    "Debounce",
    "Event",
    "FailureContext",
    "MAX_DURATION_MS",
    "NonRetriableError",
    "Priority",
    "RateLimit",
    "RetryAfterError",
    "Singleton",
    "Step",
    "StepError",
    "Throttle",
    "Timeouts",
    "TriggerCron",
    "TriggerEvent",
    "http",
    "parse_duration",
]
