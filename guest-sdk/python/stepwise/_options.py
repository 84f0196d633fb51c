"""Triggers and flow control, in the shapes of Inngest's Python SDK:
`TriggerEvent`, `TriggerCron`, `Concurrency`, `Throttle`, `RateLimit`,
`Debounce`, `Priority`, `Batch`, `Cancel`, `Timeouts`, `Singleton`.

Durations are Inngest strings ("1m"), `timedelta`s or seconds; keys,
conditions and priorities are CEL expressions over `event` (the host compiles
them at upload and refuses the app with the parse error if one is wrong).
Everything else that is wrong is refused here, when `@app.function` runs,
with a message naming the function and the option: `stepwise build` imports
the app, so a bad option stops the build.
"""

from typing import List, Optional

from wit_world.imports import stepwise_durable_types as _wit

from ._duration import parse_duration


class TriggerEvent:
    """Runs the function for every event named `event`; with `expression`
    (Inngest's `if`, a CEL expression over `event`) only for those for
    which it holds."""

    def __init__(self, event: str, expression: Optional[str] = None):
        self.event = event
        self.expression = expression


class TriggerCron:
    """Runs the function on a cron schedule, e.g. "0 * * * *" or
    "TZ=Europe/Paris 0 9 * * 1-5". A run missed while the host was down
    starts once when it comes back."""

    def __init__(self, cron: str):
        self.cron = cron


class Concurrency:
    """At most `limit` steps of the matching runs execute at once (sleeping
    and waiting runs hold no slot); one limit per value of `key`. `scope`
    is "fn" (this function's runs), or "env" / "account" (every function
    of the tenant that declares the same limit)."""

    def __init__(self, limit: int, key: Optional[str] = None, scope: str = "fn"):
        self.limit = limit
        self.key = key
        self.scope = scope


class Throttle:
    """At most `limit` runs start per `period`, plus `burst` at once; the
    rest wait, first in first out. One throttle per value of `key`."""

    def __init__(self, limit: int, period, burst: Optional[int] = None, key: Optional[str] = None):
        self.limit = limit
        self.period = period
        self.burst = burst
        self.key = key


class RateLimit:
    """At most `limit` runs per `period`; events over it start nothing (the
    skipped run is recorded). One limit per value of `key`."""

    def __init__(self, limit: int, period, key: Optional[str] = None):
        self.limit = limit
        self.period = period
        self.key = key


class Debounce:
    """One run with the last event, once `period` has passed with no new one
    (at the latest `timeout` after the first). One window per value of `key`."""

    def __init__(self, period, key: Optional[str] = None, timeout=None):
        self.period = period
        self.key = key
        self.timeout = timeout


class Priority:
    """Inngest's `priority.run`: a CEL expression over `event` giving seconds
    of head start in the queue, -600 to 600."""

    def __init__(self, run: Optional[str] = None):
        self.run = run


class Batch:
    """The handler gets up to `max_size` events at once (`ctx.events`),
    collected for at most `timeout`. One batch per value of `key`."""

    def __init__(self, max_size: int, timeout, key: Optional[str] = None):
        self.max_size = max_size
        self.timeout = timeout
        self.key = key


class Cancel:
    """An event that cancels a run that has not ended: named `event`, with
    the same value at the dotted path `match` as the run's event, for which
    `if_exp` (CEL over `event` and `async`) holds, within `timeout` of the
    run's start. Each of `match`, `if_exp` and `timeout` is optional."""

    def __init__(self, event: str, match: Optional[str] = None, if_exp: Optional[str] = None, timeout=None):
        self.event = event
        self.match = match
        self.if_exp = if_exp
        self.timeout = timeout


class Timeouts:
    """A run that has not started within `start`, or not finished within
    `finish` of starting, is cancelled."""

    def __init__(self, start=None, finish=None):
        self.start = start
        self.finish = finish


class Singleton:
    """At most one active run per value of `key` (per function without
    one). `mode` "skip" skips a new run meanwhile; "cancel" cancels the
    active run and starts the new one."""

    def __init__(self, key: Optional[str] = None, mode: str = "skip"):
        self.key = key
        self.mode = mode


class _Invalid(ValueError):
    """An option of `@app.function` that cannot be registered."""


def _check_type(value, kinds, option: str, expected: str):
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise _Invalid(f"{option}: expected {expected}, got {value!r}")
    return value


def _text(value, option: str) -> str:
    _check_type(value, str, option, "a string")
    if not value.strip():
        raise _Invalid(f"{option}: it is empty")
    return value


def _optional_text(value, option: str) -> Optional[str]:
    return None if value is None else _text(value, option)


def _count(value, option: str, minimum: int = 1) -> int:
    _check_type(value, int, option, "a whole number")
    if value < minimum:
        raise _Invalid(f"{option}: it must be at least {minimum}, got {value}")
    return value


def _ms(value, option: str) -> int:
    try:
        return parse_duration(value)
    except Exception as error:
        raise _Invalid(f"{option}: {error}") from None


def _optional_ms(value, option: str) -> Optional[int]:
    return None if value is None else _ms(value, option)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def triggers(event, events, cron, trigger) -> List[_wit.Trigger]:
    """The triggers of `event=`, `events=`, `cron=` and `trigger(s)=`."""
    found = []
    for name in _as_list(event) + _as_list(events):
        found.append(_wit.Trigger_Event(_wit.EventTrigger(event=_text(name, "event"), condition=None)))
    for schedule in _as_list(cron):
        found.append(_wit.Trigger_Cron(_text(schedule, "cron")))
    for t in _as_list(trigger):
        if isinstance(t, TriggerEvent):
            found.append(_wit.Trigger_Event(_wit.EventTrigger(
                event=_text(t.event, "trigger event"),
                condition=_optional_text(t.expression, "trigger expression"),
            )))
        elif isinstance(t, TriggerCron):
            found.append(_wit.Trigger_Cron(_text(t.cron, "trigger cron")))
        else:
            raise _Invalid(
                f"trigger: expected TriggerEvent(event=..., expression=...) or TriggerCron(cron=...), got {t!r}"
            )
    if not found:
        raise _Invalid('no trigger: give event="app/thing.happened", cron="0 * * * *" or trigger=TriggerEvent(...)')
    return found


_SCOPES = {"fn": _wit.ConcurrencyScope.FUNCTION, "env": _wit.ConcurrencyScope.TENANT,
           "account": _wit.ConcurrencyScope.TENANT}


def concurrency(value) -> List[_wit.Concurrency]:
    """`concurrency=`: a limit, a `Concurrency`, or a list of up to two."""
    limits = _as_list(value)
    if len(limits) > 2:
        raise _Invalid(f"concurrency: at most two limits are allowed, as in Inngest; got {len(limits)}")
    found = []
    for limit in limits:
        if isinstance(limit, int) and not isinstance(limit, bool):
            limit = Concurrency(limit)
        if not isinstance(limit, Concurrency):
            raise _Invalid(f"concurrency: expected a number or Concurrency(limit, key=..., scope=...), got {limit!r}")
        if limit.scope not in _SCOPES:
            raise _Invalid(f'concurrency scope: expected "fn", "env" or "account", got {limit.scope!r}')
        found.append(_wit.Concurrency(
            limit=_count(limit.limit, "concurrency limit"),
            key=_optional_text(limit.key, "concurrency key"),
            scope=_SCOPES[limit.scope],
        ))
    return found


def _expect(value, kind, option: str, shape: str):
    if value is not None and not isinstance(value, kind):
        raise _Invalid(f"{option}: expected {shape}, got {value!r}")
    return value


def throttle(value) -> Optional[_wit.Throttle]:
    t = _expect(value, Throttle, "throttle", "Throttle(limit, period, burst=..., key=...)")
    if t is None:
        return None
    return _wit.Throttle(
        limit=_count(t.limit, "throttle limit"),
        period_ms=_ms(t.period, "throttle period"),
        burst=None if t.burst is None else _count(t.burst, "throttle burst", minimum=0),
        key=_optional_text(t.key, "throttle key"),
    )


def rate_limit(value) -> Optional[_wit.RateLimit]:
    r = _expect(value, RateLimit, "rate_limit", "RateLimit(limit, period, key=...)")
    if r is None:
        return None
    return _wit.RateLimit(
        limit=_count(r.limit, "rate_limit limit"),
        period_ms=_ms(r.period, "rate_limit period"),
        key=_optional_text(r.key, "rate_limit key"),
    )


def debounce(value) -> Optional[_wit.Debounce]:
    d = _expect(value, Debounce, "debounce", "Debounce(period, key=..., timeout=...)")
    if d is None:
        return None
    return _wit.Debounce(
        period_ms=_ms(d.period, "debounce period"),
        key=_optional_text(d.key, "debounce key"),
        timeout_ms=_optional_ms(d.timeout, "debounce timeout"),
    )


def priority(value) -> Optional[str]:
    """`priority=`: `Priority(run="...")` or the expression itself."""
    if isinstance(value, Priority):
        value = value.run
    elif value is not None and not isinstance(value, str):
        raise _Invalid(f'priority: expected Priority(run="...") or a CEL expression, got {value!r}')
    return _optional_text(value, "priority run")


def batch_events(value) -> Optional[_wit.BatchEvents]:
    b = _expect(value, Batch, "batch_events", "Batch(max_size, timeout, key=...)")
    if b is None:
        return None
    return _wit.BatchEvents(
        max_size=_count(b.max_size, "batch_events max_size"),
        timeout_ms=_ms(b.timeout, "batch_events timeout"),
        key=_optional_text(b.key, "batch_events key"),
    )


def cancel(value) -> List[_wit.CancelOn]:
    """`cancel=` (or `cancel_on=`): a `Cancel` or a list of them."""
    found = []
    for c in _as_list(value):
        if not isinstance(c, Cancel):
            raise _Invalid(f"cancel: expected Cancel(event, match=..., if_exp=..., timeout=...), got {c!r}")
        found.append(_wit.CancelOn(
            event=_text(c.event, "cancel event"),
            match=_optional_text(c.match, "cancel match"),
            condition=_optional_text(c.if_exp, "cancel if_exp"),
            timeout_ms=_optional_ms(c.timeout, "cancel timeout"),
        ))
    return found


def timeouts(value) -> Optional[_wit.Timeouts]:
    t = _expect(value, Timeouts, "timeouts", "Timeouts(start=..., finish=...)")
    if t is None:
        return None
    return _wit.Timeouts(
        start_ms=_optional_ms(t.start, "timeouts start"),
        finish_ms=_optional_ms(t.finish, "timeouts finish"),
    )


_MODES = {"skip": _wit.SingletonMode.SKIP, "cancel": _wit.SingletonMode.CANCEL}


def singleton(value) -> Optional[_wit.Singleton]:
    s = _expect(value, Singleton, "singleton", 'Singleton(key=..., mode="skip" or "cancel")')
    if s is None:
        return None
    if s.mode not in _MODES:
        raise _Invalid(f'singleton mode: expected "skip" or "cancel", got {s.mode!r}')
    return _wit.Singleton(key=_optional_text(s.key, "singleton key"), mode=_MODES[s.mode])


def retries(value) -> Optional[int]:
    if value is None:
        return None
    _count(value, "retries", minimum=0)
    if value > 20:
        raise _Invalid(f"retries: at most 20 are allowed, as in Inngest; got {value}")
    return value
