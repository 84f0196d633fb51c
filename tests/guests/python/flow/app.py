"""The `tests/guests/flow` app in Python: one function per feature of
Inngest's function model, with the same function ids, events, step ids and
outputs as the Rust guest, so that the conformance tests can compare the
journals the three languages leave (`burn`, the benchmark's, is left out).

Every step body that matters calls `{url}/step/{run}/{step}` on the test's
loopback server (when the event carries a `url`).

Where Python differs from Rust:
- `step.join` (a tuple of differently typed branches) is `step.parallel`
  with a list: the same journal and the same output.
- Rust's `step.parallel` gives each branch's result; Python's does with
  `return_exceptions=True` (a failed branch's `StepError` in its place).
"""

import json

from stepwise import (
    App,
    Batch,
    Cancel,
    Concurrency,
    Debounce,
    NonRetriableError,
    Priority,
    Singleton,
    StepError,
    Throttle,
    Timeouts,
    TriggerEvent,
    http,
)

app = App("flow")


class Error(Exception):
    """A retriable failure (named like the Rust SDK's default error)."""


def as_json(value) -> str:
    """`value` as serde_json's `Display` writes it (`null` when missing)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def call(ctx, step):
    """Calls the loopback server for this step, if the event names one."""
    url = ctx.event.data.get("url")
    if not isinstance(url, str):
        return step
    response = http.get(f"{url}/step/{ctx.run_id}/{step}")
    if 200 <= response.status <= 299:
        return response.json()
    raise Error(f"HTTP {response.status}")


def whole(value, default):
    """`value` if it is a whole number (serde_json's `as_i64`), else `default`."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def one_step(ctx):
    return ctx.step.run("work", lambda: call(ctx, "work"))


def two_steps(ctx):
    a = ctx.step.run("a", lambda: call(ctx, "a"))
    b = ctx.step.run("b", lambda: call(ctx, "b"))
    return [a, b]


def echo(ctx):
    data = ctx.event.data
    return ctx.step.run("echo", lambda: data)


def count_events(ctx):
    ids = [e.data.get("n") for e in ctx.events]
    return ctx.step.run("count", lambda: ids)


def nap(ctx):
    """A step, then a long sleep: a run that stays active."""
    first = ctx.step.run("before", lambda: call(ctx, "before"))
    ctx.step.sleep("nap", "10m")
    return first


# Functions that share a handler are registered by calling `app.function(...)`
# on it; the others use it as a decorator.
app.function(id="limited", event="flow/limited", concurrency=Concurrency(2))(two_steps)
app.function(id="keyed", event="flow/keyed", concurrency=Concurrency(1, key="event.data.user"))(one_step)
app.function(id="throttled", event="flow/throttled", throttle=Throttle(2, "2s"))(one_step)
app.function(
    id="debounced", event="flow/debounced", debounce=Debounce("1s", key="event.data.id", timeout="4s")
)(echo)
app.function(id="batched", event="flow/batched", batch_events=Batch(3, "1s"))(count_events)
app.function(id="idempotent", event="flow/idempotent", idempotency="event.data.orderId")(echo)
app.function(id="single-skip", event="flow/single-skip", singleton=Singleton(key="event.data.id", mode="skip"))(nap)
app.function(
    id="single-cancel", event="flow/single-cancel", singleton=Singleton(key="event.data.id", mode="cancel")
)(nap)
app.function(
    id="cancellable",
    event="flow/cancellable",
    cancel=[
        Cancel("flow/cancel", match="data.id"),
        Cancel("flow/cancel-if", if_exp="async.data.reason == 'fraud' && async.data.id == event.data.id"),
    ],
)(nap)
app.function(id="slow-start", event="flow/slow-start", concurrency=1, timeouts=Timeouts(start="1s"))(one_step)
app.function(id="slow-finish", event="flow/slow-finish", timeouts=Timeouts(finish="1s"))(nap)
app.function(id="ranked", event="flow/ranked", concurrency=1, priority=Priority(run="event.data.vip ? 60 : 0"))(
    one_step
)
app.function(
    id="filtered",
    triggers=[TriggerEvent("flow/filtered", expression="event.data.n > 5"), TriggerEvent("flow/any")],
)(echo)


@app.function(id="parent", event="flow/parent")
def parent(ctx):
    timeout = ctx.event.data.get("timeout")
    try:
        output = ctx.step.invoke(
            "call-child",
            function="child",
            data=ctx.event.data,
            timeout=timeout if isinstance(timeout, str) else None,
        )
        return {"child": output}
    except StepError as error:
        return {"child_error": error.message}


@app.function(id="child", event="flow/child", retries=0)
def child(ctx):
    data = ctx.event.data
    if isinstance(data.get("sleep"), str):
        ctx.step.sleep("slow", data["sleep"])
    n = whole(data.get("n"), 0)
    fail = data.get("fail") is True

    def double():
        if fail:
            raise NonRetriableError("the child was told to fail")
        return n * 2

    return ctx.step.run("double", double)


@app.function(id="sender", event="flow/send")
def sender(ctx):
    n = ctx.event.data.get("n")
    ids = ctx.step.send_event(
        "announce",
        [
            {"name": "flow/sent", "data": {"n": n, "copy": 1}},
            {"name": "flow/sent", "data": {"n": n, "copy": 2}},
        ],
    )
    # A step after the send: a crash or a retry here replays the send from
    # the journal instead of sending again.
    after = ctx.step.run("after", lambda: call(ctx, "after"))
    return {"ids": ids, "after": after}


app.function(id="received", event="flow/sent")(echo)


@app.function(id="wait-if", event="flow/wait-if")
def wait_if(ctx):
    paid = ctx.step.wait_for_event(
        "big-payment",
        event="flow/paid",
        match="data.order",
        if_exp="async.data.amount >= event.data.total",
        timeout="1m",
    )
    return None if paid is None else paid.data


def recover(ctx):
    original = ctx.original_event.data
    failed_run = ctx.event.data.get("run_id")
    message = ctx.error.message
    return ctx.step.run("cleanup", lambda: {"id": original.get("id"), "failed_run": failed_run, "error": message})


@app.function(id="fails", event="flow/fails", retries=0, on_failure=recover)
def fails(ctx):
    def doomed():
        raise Error(f"failing for {as_json(ctx.event.data.get('id'))}")

    return ctx.step.run("doomed", doomed)


app.function(
    id="watch-failures",
    trigger=TriggerEvent("inngest/function.failed", expression="event.data.function_id == 'fails'"),
)(echo)


@app.function(id="fan", event="flow/fan", retries=2)
def fan(ctx):
    """Parallel branches that call the loopback server (the test delays or
    fails them to watch them overlap and retry)."""
    count = whole(ctx.event.data.get("branches"), -1)
    count = count if count >= 0 else 3
    # `id=id` binds each branch to its own id.
    branches = [(f"branch-{i}", lambda id=f"branch-{i}": call(ctx, id)) for i in range(count)]
    outcomes = [
        {"failed": o.message} if isinstance(o, StepError) else o
        for o in ctx.step.parallel(branches, return_exceptions=True)
    ]
    left, right = ctx.step.parallel([("left", lambda: 1), ("right", lambda: "two")])
    return {"branches": outcomes, "join": [left, right]}
