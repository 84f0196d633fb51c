"""`step.run`, `step.parallel`, `step.sleep`, `step.sleep_until`,
`step.wait_for_event`, `step.send_event` and `step.invoke`.

Each is a host call: the host answers from the run's journal when the step
is already done, so code around steps may run many times while each step
body runs once.
"""

import json
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, List, Optional, Tuple

from componentize_py_types import Err, Ok
from wit_world.imports import step as _host
from wit_world.imports import stepwise_durable_types as _wit

from ._duration import parse_duration
from ._errors import NonRetriableError, StepError, _to_json, _to_wit_error


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

    def to_dict(self) -> dict:
        """The event as Inngest's JSON shape."""
        out = {"id": self.id, "name": self.name, "data": self.data, "ts": self.ts}
        if self.user is not None:
            out["user"] = self.user
        return out

    def __repr__(self):
        return f"Event(id={self.id!r}, name={self.name!r}, data={self.data!r})"


def _run_body(id: str, fn: Callable, args=(), kwargs=None):
    """Runs a step body; its output as JSON text, or its error, for `complete`."""
    try:
        return Ok(_to_json(fn(*args, **(kwargs or {})), f"the output of step {id!r}"))
    except Exception as error:  # every failure of a step body is the step's
        return Err(_to_wit_error(error))


def _payload(event, index: int) -> _wit.EventPayload:
    """An event for `send_event`: a dict {name, data, id?, ts?, user?} or an `Event`."""
    if isinstance(event, Event):
        event = event.to_dict()
    if not isinstance(event, dict):
        raise NonRetriableError(
            f"send_event: event {index} is {event!r}; give a dict such as {{\"name\": \"app/x\", \"data\": {{}}}}"
        )
    name = event.get("name")
    if not isinstance(name, str) or not name:
        raise NonRetriableError(f"send_event: event {index} has no name; give it \"name\": \"app/thing.happened\"")
    data = event.get("data")
    ts = event.get("ts")
    if ts is not None and (not isinstance(ts, int) or isinstance(ts, bool) or ts < 0):
        raise NonRetriableError(f"send_event: event {index} ({name}) has ts {ts!r}; give ms since the epoch")
    user = event.get("user")
    return _wit.EventPayload(
        name=name,
        data=_to_json({} if data is None else data, f"the data of event {name!r}"),
        id=None if event.get("id") is None else str(event["id"]),
        ts=ts,
        user=None if user is None else _to_json(user, f"the user of event {name!r}"),
    )


def _function_id(function) -> str:
    """The id of an `invoke` target: the id itself, or a registered handler."""
    found = getattr(function, "_stepwise_function_id", function)
    if not isinstance(found, str) or not found:
        raise NonRetriableError(
            f"invoke: function is {function!r}; give the function's id or its registered handler"
        )
    return found


class Step:
    """The step tools of a run, as `step` in Inngest's handlers."""

    def run(self, id: str, fn: Callable, *args, **kwargs):
        """Runs `fn(*args, **kwargs)` once, durably: its (JSON) output is
        journaled, and every replay gets the journaled output instead of
        running `fn` again. An exception is retried with backoff; when the
        last attempt fails (or it is a `NonRetriableError`) a `StepError` is
        raised here. The value returned is always the journaled JSON read
        back, so a first run and a replay see the same value."""
        memo = _host.begin(id)
        if isinstance(memo, _host.Memo_Done):
            return json.loads(memo.value)
        if isinstance(memo, _host.Memo_Failed):
            raise StepError._from_wit(memo.value)
        if isinstance(memo, _host.Memo_Elsewhere):
            raise NonRetriableError(f"the host answered step {id!r} with `elsewhere`, which only `parallel` may")
        outcome = _run_body(id, fn, args, kwargs)
        # Returns only when the outcome is final (and on disk).
        _host.complete(id, outcome)
        if isinstance(outcome, Err):
            raise StepError._from_wit(outcome.value)
        return json.loads(outcome.value)

    def parallel(self, branches: Iterable[Tuple[str, Callable]], return_exceptions: bool = False) -> List[Any]:
        """Runs several steps at once (Inngest's `Promise.all` over
        `step.run`), given as `(id, fn)` pairs, and returns their outputs in
        order. Branches not yet journaled run concurrently, each in an
        instance of its own, and each follows the retry rules of its own
        step. If a branch failed for good its `StepError` is raised (the
        first in order, as `asyncio.gather` does), once every branch ended;
        with `return_exceptions=True` it takes that branch's place in the
        list instead, so every branch's outcome can be seen."""
        pairs = list(branches)
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str) and callable(pair[1])):
                raise NonRetriableError(f"parallel: expected (id, fn) pairs, got {pair!r}")
        if not pairs:
            return []
        memos = _host.parallel([id for id, _ in pairs])
        outcomes = []
        for (id, fn), memo in zip(pairs, memos):
            if isinstance(memo, _host.Memo_Done):
                outcomes.append(Ok(memo.value))
            elif isinstance(memo, _host.Memo_Failed):
                outcomes.append(Err(memo.value))
            elif isinstance(memo, _host.Memo_Execute):
                outcome = _run_body(id, fn)
                # Returns only when the outcome is final (and on disk).
                _host.complete(id, outcome)
                outcomes.append(outcome)
            else:
                # Another instance runs this branch; the host replays this
                # call once it is journaled instead of returning here.
                outcomes.append(None)
        results = []
        for (id, _), outcome in zip(pairs, outcomes):
            if outcome is None:
                raise NonRetriableError(f"step {id!r} runs in another instance; the host does not return here")
            if isinstance(outcome, Err):
                error = StepError._from_wit(outcome.value)
                if not return_exceptions:
                    raise error
                results.append(error)
                continue
            results.append(json.loads(outcome.value))
        return results

    def send_event(self, id: str, events) -> List[str]:
        """Sends an event or a list of events (dicts {name, data, id?, ts?}),
        once: a replay gets the journaled ids back instead of sending again.
        Returns the events' ids."""
        batch = events if isinstance(events, (list, tuple)) else [events]
        payloads = [_payload(event, i) for i, event in enumerate(batch)]
        try:
            return list(_host.send_event(id, payloads))
        except Err as error:
            raise StepError._from_wit(error.value) from None

    def invoke(self, id: str, *, function, data: Optional[dict] = None, timeout=None) -> Any:
        """Runs another function of the app's tenant (its id, or its
        registered handler) with `data` as its event's data, and returns its
        output (Inngest's `step.invoke`). Its failure, or `timeout` passing
        first, raises `StepError`."""
        function_id = _function_id(function)
        timeout_ms = None if timeout is None else parse_duration(timeout)
        body = _to_json({} if data is None else data, f"the data of invoke {id!r}")
        try:
            output = _host.invoke(id, function_id, body, timeout_ms)
        except Err as error:
            raise StepError._from_wit(error.value) from None
        return json.loads(output)

    def invoke_by_id(self, id: str, *, function_id: str, data: Optional[dict] = None, timeout=None) -> Any:
        """`invoke` by function id, as in Inngest's Python SDK."""
        return self.invoke(id, function=function_id, data=data, timeout=timeout)

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

    def wait_for_event(
        self, id: str, *, event: str, timeout, match: Optional[str] = None, if_exp: Optional[str] = None
    ) -> Optional[Event]:
        """Pauses the run until an `event` arrives and returns it; returns
        None when `timeout` passes first. `match` (a dotted path such as
        "data.orderId") asks for the same value there as in the triggering
        event; `if_exp` (Inngest's `if`) is a CEL expression over `event`
        (the triggering one) and `async` (the awaited one), e.g.
        "async.data.amount >= event.data.total". Only events accepted after
        the wait began can match."""
        options = _wit.WaitOptions(
            event=event, match=match, condition=if_exp, timeout_ms=parse_duration(timeout)
        )
        found = _host.wait_for_event(id, options)
        return Event._from_wit(found) if found is not None else None
