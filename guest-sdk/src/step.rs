//! `step.run`, `step.sleep`, `step.sleep_until`, `step.wait_for_event`,
//! `step.parallel` / `step.join`, `step.send_event` and `step.invoke`.
//!
//! Each is a host call: the host answers from the run's journal when the step
//! is already done, so code around steps may run many times while each step
//! body runs once.

use crate::bindings::stepwise::durable::step::{self as host, Memo};
use crate::bindings::stepwise::durable::types::{EventPayload, StepError, WaitOptions};
use crate::duration::{IntoDuration, as_millis};
use crate::{Error, Event};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A step body with its output as JSON, for groups of bodies of any type.
type ErasedBody<'a> = Box<dyn FnOnce() -> Result<String, StepError> + 'a>;

fn erase<'a, T, E, F>(id: &str, body: F) -> ErasedBody<'a>
where
    T: Serialize,
    E: Into<Error>,
    F: FnOnce() -> Result<T, E> + 'a,
{
    let id = id.to_string();
    Box::new(move || match body() {
        Ok(value) => serde_json::to_string(&value).map_err(|e| {
            Error::non_retriable(format!("the output of step {id:?} is not JSON: {e}")).to_wit()
        }),
        Err(error) => Err(error.into().to_wit()),
    })
}

fn read_output<T: DeserializeOwned>(id: &str, json: &str) -> Result<T, Error> {
    serde_json::from_str(json).map_err(|e| {
        Error::non_retriable(format!(
            "the journaled output of step {id:?} does not fit the step's type: {e}"
        ))
    })
}

/// The step tools of a run, as `step` in Inngest's handlers.
#[derive(Debug)]
pub struct Step {
    _private: (),
}

impl Step {
    pub(crate) fn new() -> Self {
        Step { _private: () }
    }

    /// Runs `body` once, durably: its output is journaled, and every replay
    /// of the run gets the journaled output instead of running `body` again.
    ///
    /// An error from `body` is retried with backoff (the function's
    /// `retries`); when the last attempt fails, or the error is a
    /// [`NonRetriableError`](crate::NonRetriableError), it is returned here.
    /// The value returned is always the journaled JSON read back as `T`, so a
    /// first run and a replay see the same value.
    pub fn run<T, E, F>(&self, id: &str, body: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        E: Into<Error>,
        F: FnOnce() -> Result<T, E>,
    {
        let json = match host::begin(id) {
            Memo::Done(json) => json,
            Memo::Failed(error) => return Err(Error::from_final_step_error(error)),
            Memo::Elsewhere => {
                return Err(Error::non_retriable(format!(
                    "the host answered step {id:?} with `elsewhere`, which only `parallel` may"
                )));
            }
            Memo::Execute => {
                let outcome = match body() {
                    Ok(value) => serde_json::to_string(&value).map_err(|e| {
                        Error::non_retriable(format!("the output of step {id:?} is not JSON: {e}"))
                            .to_wit()
                    }),
                    Err(error) => Err(error.into().to_wit()),
                };
                // Returns only when the outcome is final (and on disk).
                host::complete(id, outcome.as_deref());
                match outcome {
                    Ok(json) => json,
                    Err(error) => return Err(Error::from_final_step_error(error)),
                }
            }
        };
        read_output(id, &json)
    }

    /// Runs several steps at once (Inngest's `Promise.all` over `step.run`)
    /// and returns each one's outcome, in order. Branches that are not yet
    /// journaled run concurrently, each in an instance of its own; each
    /// follows the retry rules of its own step. All branches share the one
    /// closure type, as those made by one `map`:
    ///
    /// ```ignore
    /// let pages: Vec<Result<String, Error>> = step.parallel(
    ///     urls.iter().enumerate().map(|(i, url)| (format!("fetch-{i}"), move || fetch(url))),
    /// );
    /// ```
    pub fn parallel<T, E, F, I, S>(&self, branches: I) -> Vec<Result<T, Error>>
    where
        T: Serialize + DeserializeOwned,
        E: Into<Error>,
        F: FnOnce() -> Result<T, E>,
        I: IntoIterator<Item = (S, F)>,
        S: Into<String>,
    {
        let (ids, bodies): (Vec<String>, Vec<ErasedBody<'_>>) = branches
            .into_iter()
            .map(|(id, body)| {
                let id = id.into();
                let body = erase(&id, body);
                (id, body)
            })
            .unzip();
        let outputs = self.group(&ids, bodies);
        ids.iter()
            .zip(outputs)
            .map(|(id, output)| output.and_then(|json| read_output(id, &json)))
            .collect()
    }

    /// Runs two or more steps of different types at once, as
    /// [`parallel`](Self::parallel): `step.join((("user", || get_user()),
    /// ("plan", || get_plan())))` gives `(Result<User, Error>, Result<Plan,
    /// Error>)`.
    pub fn join<J: Join>(&self, branches: J) -> J::Output {
        branches.run(self)
    }

    /// Runs a group of erased bodies: the host answers each, and the guest
    /// runs the bodies it is told to, in order.
    fn group(&self, ids: &[String], bodies: Vec<ErasedBody<'_>>) -> Vec<Result<String, Error>> {
        let memos = host::parallel(ids);
        ids.iter()
            .zip(memos)
            .zip(bodies)
            .map(|((id, memo), body)| match memo {
                Memo::Done(json) => Ok(json),
                Memo::Failed(error) => Err(Error::from_final_step_error(error)),
                Memo::Execute => {
                    let outcome = body();
                    // Returns only when the outcome is final (and on disk).
                    host::complete(id, outcome.as_deref());
                    outcome.map_err(Error::from_final_step_error)
                }
                Memo::Elsewhere => Err(Error::non_retriable(format!(
                    "step {id:?} runs in another instance; the host does not return here"
                ))),
            })
            .collect()
    }

    /// Sends events (Inngest's `step.sendEvent`), once: a replay gets the
    /// journaled ids back instead of sending again. Returns the events' ids.
    pub fn send_event(
        &self,
        id: &str,
        events: impl IntoIterator<Item = NewEvent>,
    ) -> Result<Vec<String>, Error> {
        let payloads: Vec<EventPayload> = events
            .into_iter()
            .map(NewEvent::into_payload)
            .collect::<Result<_, _>>()?;
        host::send_event(id, &payloads).map_err(Error::from_final_step_error)
    }

    /// Runs another function of the tenant and waits for its output
    /// (Inngest's `step.invoke`); its failure (or the timeout passing) is
    /// this step's error.
    pub fn invoke<T: DeserializeOwned>(&self, id: &str, invoke: Invoke) -> Result<T, Error> {
        let timeout = invoke.timeout.transpose()?.map(as_millis);
        let json = host::invoke(id, &invoke.function, &invoke.data?, timeout)
            .map_err(Error::from_final_step_error)?;
        read_output(id, &json)
    }

    /// Pauses the run for `duration` (`"1h"`, `"30m"`, a `Duration`...), up to
    /// a year. No instance stays in memory meanwhile.
    pub fn sleep(&self, id: &str, duration: impl IntoDuration) -> Result<(), Error> {
        let duration = duration.into_duration()?;
        host::sleep(id, as_millis(duration));
        Ok(())
    }

    /// Pauses the run until `at` (a `SystemTime`, or milliseconds since the
    /// Unix epoch).
    pub fn sleep_until(&self, id: &str, at: impl Into<Timestamp>) -> Result<(), Error> {
        host::sleep_until(id, at.into().0);
        Ok(())
    }

    /// Pauses the run until an event described by `wait` arrives, and returns
    /// it; returns `None` when the timeout passes first. Only events accepted
    /// after the wait began can match.
    pub fn wait_for_event(&self, id: &str, wait: WaitFor) -> Result<Option<Event>, Error> {
        let timeout = wait.timeout.ok_or_else(|| {
            Error::non_retriable(format!(
                "wait_for_event {id:?} needs a timeout, e.g. .timeout(\"24h\")"
            ))
        })??;
        let options = WaitOptions {
            event: wait.event,
            match_: wait.matching,
            condition: wait.condition,
            timeout_ms: as_millis(timeout),
        };
        match host::wait_for_event(id, &options) {
            Some(event) => Event::<Value>::from_wit(event).map(Some),
            None => Ok(None),
        }
    }
}

/// A point in time, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub u64);

impl From<u64> for Timestamp {
    fn from(ms: u64) -> Self {
        Timestamp(ms)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Timestamp(as_millis(since))
    }
}

/// What `wait_for_event` waits for, built like Inngest's options:
/// `WaitFor::event("shop/payment.success").matching("data.orderId").timeout("24h")`.
#[derive(Debug, Clone)]
pub struct WaitFor {
    event: String,
    matching: Option<String>,
    condition: Option<String>,
    timeout: Option<Result<Duration, Error>>,
}

impl WaitFor {
    /// Waits for an event with this name.
    pub fn event(name: impl Into<String>) -> Self {
        WaitFor {
            event: name.into(),
            matching: None,
            condition: None,
            timeout: None,
        }
    }

    /// Inngest's `match`: the awaited event must carry the same value as the
    /// triggering event at this dotted path, e.g. `"data.orderId"`.
    pub fn matching(mut self, path: impl Into<String>) -> Self {
        self.matching = Some(path.into());
        self
    }

    /// Inngest's `if`: a CEL expression over `event` (the run's triggering
    /// event) and `async` (the awaited one), e.g.
    /// `"async.data.amount >= event.data.total"`.
    pub fn condition(mut self, expression: impl Into<String>) -> Self {
        self.condition = Some(expression.into());
        self
    }

    /// How long to wait before giving up (required, as in Inngest).
    pub fn timeout(mut self, timeout: impl IntoDuration) -> Self {
        self.timeout = Some(timeout.into_duration());
        self
    }
}

/// An event for [`Step::send_event`], as Inngest's `send()` takes it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    name: String,
    data: Result<String, Error>,
    id: Option<String>,
    ts: Option<u64>,
}

impl NewEvent {
    /// An event `name` with `data` (any serde value that is a JSON object).
    pub fn new(name: impl Into<String>, data: impl Serialize) -> Self {
        NewEvent {
            name: name.into(),
            data: serde_json::to_string(&data)
                .map_err(|e| Error::non_retriable(format!("the event's data is not JSON: {e}"))),
            id: None,
            ts: None,
        }
    }

    /// A de-duplication id (by default the host makes one from the run and
    /// the step, so a replay never sends twice).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// When it happened, in ms since the Unix epoch (default: now).
    pub fn ts(mut self, ts: u64) -> Self {
        self.ts = Some(ts);
        self
    }

    fn into_payload(self) -> Result<EventPayload, Error> {
        Ok(EventPayload {
            name: self.name,
            data: self.data?,
            id: self.id,
            ts: self.ts,
            user: None,
        })
    }
}

/// What [`Step::invoke`] runs: `Invoke::function("id").data(...).timeout("1h")`.
#[derive(Debug, Clone)]
pub struct Invoke {
    function: String,
    data: Result<String, Error>,
    timeout: Option<Result<Duration, Error>>,
}

impl Invoke {
    /// Invokes the function with this id (of the same tenant).
    pub fn function(id: impl Into<String>) -> Self {
        Invoke {
            function: id.into(),
            data: Ok("{}".into()),
            timeout: None,
        }
    }

    /// The invoked run's event data (a JSON object).
    pub fn data(mut self, data: impl Serialize) -> Self {
        self.data = serde_json::to_string(&data)
            .map_err(|e| Error::non_retriable(format!("the invoke's data is not JSON: {e}")));
        self
    }

    /// Give up (with an error) if the invoked run has not ended by then.
    pub fn timeout(mut self, timeout: impl IntoDuration) -> Self {
        self.timeout = Some(timeout.into_duration());
        self
    }
}

/// Tuples of `(id, body)` pairs that [`Step::join`] runs at once.
pub trait Join {
    /// A tuple of each branch's outcome.
    type Output;
    /// Runs the branches as one parallel group.
    fn run(self, step: &Step) -> Self::Output;
}

macro_rules! join_tuple {
    ($(($id:ident, $body:ident, $t:ident, $e:ident, $f:ident, $out:ident)),+) => {
        impl<$($t, $e, $f),+> Join for ($((&str, $f),)+)
        where
            $($t: Serialize + DeserializeOwned, $e: Into<Error>, $f: FnOnce() -> Result<$t, $e>,)+
        {
            type Output = ($(Result<$t, Error>,)+);

            fn run(self, step: &Step) -> Self::Output {
                let ($(($id, $body),)+) = self;
                let ids = vec![$($id.to_string()),+];
                let bodies = vec![$(erase($id, $body)),+];
                let mut outputs = step.group(&ids, bodies).into_iter();
                $(let $out = outputs
                    .next()
                    .unwrap_or_else(|| Err(Error::non_retriable("a branch has no outcome")))
                    .and_then(|json| read_output::<$t>($id, &json));)+
                ($($out,)+)
            }
        }
    };
}

join_tuple!((a, fa, TA, EA, FA, oa), (b, fb, TB, EB, FB, ob));
join_tuple!(
    (a, fa, TA, EA, FA, oa),
    (b, fb, TB, EB, FB, ob),
    (c, fc, TC, EC, FC, oc)
);
join_tuple!(
    (a, fa, TA, EA, FA, oa),
    (b, fb, TB, EB, FB, ob),
    (c, fc, TC, EC, FC, oc),
    (d, fd, TD, ED, FD, od)
);
