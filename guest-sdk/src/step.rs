//! `step.run`, `step.sleep`, `step.sleep_until` and `step.wait_for_event`.
//!
//! Each is a host call: the host answers from the run's journal when the step
//! is already done, so code around steps may run many times while each step
//! body runs once.

use crate::bindings::stepwise::durable::step::{self as host, Memo};
use crate::bindings::stepwise::durable::types::WaitOptions;
use crate::duration::{IntoDuration, as_millis};
use crate::{Error, Event};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
        serde_json::from_str(&json).map_err(|e| {
            Error::non_retriable(format!(
                "the journaled output of step {id:?} does not fit the step's type: {e}"
            ))
        })
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
    timeout: Option<Result<Duration, Error>>,
}

impl WaitFor {
    /// Waits for an event with this name.
    pub fn event(name: impl Into<String>) -> Self {
        WaitFor {
            event: name.into(),
            matching: None,
            timeout: None,
        }
    }

    /// Inngest's `match`: the awaited event must carry the same value as the
    /// triggering event at this dotted path, e.g. `"data.orderId"`.
    pub fn matching(mut self, path: impl Into<String>) -> Self {
        self.matching = Some(path.into());
        self
    }

    /// How long to wait before giving up (required, as in Inngest).
    pub fn timeout(mut self, timeout: impl IntoDuration) -> Self {
        self.timeout = Some(timeout.into_duration());
        self
    }
}
