//! Flow control and run bounds, in the shapes of Inngest's `createFunction`
//! options: `Concurrency`, `Throttle`, `RateLimit`, `Debounce`, `Batch`,
//! `CancelOn`, `Timeouts`, `Singleton`.
//!
//! Durations are Inngest strings (`"1m"`) or `Duration`s; keys, conditions
//! and priorities are CEL expressions over `event` (the host compiles them
//! at upload and refuses the app with the parse error if one is wrong). A
//! duration that does not parse stops the upload with a message naming it.

use crate::bindings::stepwise::durable::types as wit;
use crate::duration::{IntoDuration, as_millis};

/// Reads a duration given to an option, or stops the registration with a
/// message that names the option.
fn millis(option: &str, duration: impl IntoDuration) -> u64 {
    match duration.into_duration() {
        Ok(duration) => as_millis(duration),
        Err(error) => panic!("{option}: {}", error.message()),
    }
}

/// `concurrency`: at most `limit` steps of the matching runs execute at once
/// (sleeping and waiting runs hold no slot).
#[derive(Debug, Clone)]
pub struct Concurrency(pub(crate) wit::Concurrency);

impl Concurrency {
    /// A limit over the function's runs.
    pub fn new(limit: u32) -> Self {
        Concurrency(wit::Concurrency {
            limit,
            key: None,
            scope: wit::ConcurrencyScope::Function,
        })
    }

    /// One limit per value of this expression, e.g. `"event.data.userId"`.
    pub fn key(mut self, expression: impl Into<String>) -> Self {
        self.0.key = Some(expression.into());
        self
    }

    /// Share the limit with every function of the tenant that declares it
    /// (Inngest's `scope: "env"` / `"account"`).
    pub fn across_tenant(mut self) -> Self {
        self.0.scope = wit::ConcurrencyScope::Tenant;
        self
    }
}

/// `throttle`: at most `limit` runs start per `period`, plus `burst` at
/// once; the rest wait, first in first out.
#[derive(Debug, Clone)]
pub struct Throttle(pub(crate) wit::Throttle);

impl Throttle {
    /// `limit` starts per `period`.
    pub fn new(limit: u32, period: impl IntoDuration) -> Self {
        Throttle(wit::Throttle {
            limit,
            period_ms: millis("throttle period", period),
            burst: None,
            key: None,
        })
    }

    /// Extra starts allowed at once on top of `limit`.
    pub fn burst(mut self, burst: u32) -> Self {
        self.0.burst = Some(burst);
        self
    }

    /// One throttle per value of this expression.
    pub fn key(mut self, expression: impl Into<String>) -> Self {
        self.0.key = Some(expression.into());
        self
    }
}

/// `rateLimit`: at most `limit` runs per `period`; events over it start
/// nothing (the skipped run is recorded).
#[derive(Debug, Clone)]
pub struct RateLimit(pub(crate) wit::RateLimit);

impl RateLimit {
    /// `limit` runs per `period`.
    pub fn new(limit: u32, period: impl IntoDuration) -> Self {
        RateLimit(wit::RateLimit {
            limit,
            period_ms: millis("rateLimit period", period),
            key: None,
        })
    }

    /// One limit per value of this expression.
    pub fn key(mut self, expression: impl Into<String>) -> Self {
        self.0.key = Some(expression.into());
        self
    }
}

/// `debounce`: one run with the last event, once `period` has passed with no
/// new one.
#[derive(Debug, Clone)]
pub struct Debounce(pub(crate) wit::Debounce);

impl Debounce {
    /// Waits for `period` of quiet.
    pub fn new(period: impl IntoDuration) -> Self {
        Debounce(wit::Debounce {
            period_ms: millis("debounce period", period),
            key: None,
            timeout_ms: None,
        })
    }

    /// One window per value of this expression.
    pub fn key(mut self, expression: impl Into<String>) -> Self {
        self.0.key = Some(expression.into());
        self
    }

    /// Runs at the latest this long after the window's first event.
    pub fn timeout(mut self, timeout: impl IntoDuration) -> Self {
        self.0.timeout_ms = Some(millis("debounce timeout", timeout));
        self
    }
}

/// `batchEvents`: the handler gets up to `max_size` events at once
/// (`ctx.events`), collected for at most `timeout`.
#[derive(Debug, Clone)]
pub struct Batch(pub(crate) wit::BatchEvents);

impl Batch {
    /// Runs with `max_size` events, or with what came within `timeout`.
    pub fn new(max_size: u32, timeout: impl IntoDuration) -> Self {
        Batch(wit::BatchEvents {
            max_size,
            timeout_ms: millis("batchEvents timeout", timeout),
            key: None,
        })
    }

    /// One batch per value of this expression.
    pub fn key(mut self, expression: impl Into<String>) -> Self {
        self.0.key = Some(expression.into());
        self
    }
}

/// `cancelOn`: an event that cancels a run that has not ended.
#[derive(Debug, Clone)]
pub struct CancelOn(pub(crate) wit::CancelOn);

impl CancelOn {
    /// Runs are cancelled by events of this name.
    pub fn event(name: impl Into<String>) -> Self {
        CancelOn(wit::CancelOn {
            event: name.into(),
            match_: None,
            condition: None,
            timeout_ms: None,
        })
    }

    /// Inngest's `match`: the same value at this path in both events.
    pub fn matching(mut self, path: impl Into<String>) -> Self {
        self.0.match_ = Some(path.into());
        self
    }

    /// Inngest's `if`: a CEL expression over `event` and `async`.
    pub fn condition(mut self, expression: impl Into<String>) -> Self {
        self.0.condition = Some(expression.into());
        self
    }

    /// Only events within this long of the run's start cancel it.
    pub fn timeout(mut self, timeout: impl IntoDuration) -> Self {
        self.0.timeout_ms = Some(millis("cancelOn timeout", timeout));
        self
    }
}

/// `timeouts`: a run that has not started within `start`, or not finished
/// within `finish` of starting, is cancelled.
#[derive(Debug, Clone, Default)]
pub struct Timeouts(pub(crate) Option<wit::Timeouts>);

impl Timeouts {
    /// No bounds yet.
    pub fn new() -> Self {
        Timeouts(Some(wit::Timeouts {
            start_ms: None,
            finish_ms: None,
        }))
    }

    /// Longest wait in the queue before the run starts.
    pub fn start(mut self, timeout: impl IntoDuration) -> Self {
        if let Some(t) = self.0.as_mut() {
            t.start_ms = Some(millis("timeouts start", timeout));
        }
        self
    }

    /// Longest time from the run's start to its end.
    pub fn finish(mut self, timeout: impl IntoDuration) -> Self {
        if let Some(t) = self.0.as_mut() {
            t.finish_ms = Some(millis("timeouts finish", timeout));
        }
        self
    }
}

/// `singleton`: at most one active run per key.
#[derive(Debug, Clone)]
pub struct Singleton(pub(crate) wit::Singleton);

impl Singleton {
    /// A new run is skipped while one is active.
    pub fn skip() -> Self {
        Singleton(wit::Singleton {
            key: None,
            mode: wit::SingletonMode::Skip,
        })
    }

    /// A new run cancels the active one.
    pub fn cancel() -> Self {
        Singleton(wit::Singleton {
            key: None,
            mode: wit::SingletonMode::Cancel,
        })
    }

    /// One active run per value of this expression.
    pub fn key(mut self, expression: impl Into<String>) -> Self {
        self.0.key = Some(expression.into());
        self
    }
}
