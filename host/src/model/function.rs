//! A function's configuration as the host keeps it: Inngest's
//! `createFunction` options, checked at upload, with durations in ms and
//! expressions as CEL text (compiled when used, from a cache).

use serde::{Deserialize, Serialize};

/// One trigger of a registered function: an event (with an optional `if`)
/// or a cron schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRecord {
    /// The event name that starts a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Inngest's `if` over `event`.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// A cron schedule (`TZ=Zone ` prefix allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
}

impl TriggerRecord {
    /// How people read it: the event name (with its `if`), or `cron ...`.
    pub fn describe(&self) -> String {
        match (&self.event, &self.condition, &self.cron) {
            (Some(event), Some(condition), _) => format!("{event} if {condition}"),
            (Some(event), None, _) => event.clone(),
            (None, _, Some(cron)) => format!("cron {cron}"),
            (None, _, None) => "nothing".into(),
        }
    }

    /// A trigger on event `name`.
    pub fn event(name: impl Into<String>) -> Self {
        TriggerRecord {
            event: Some(name.into()),
            condition: None,
            cron: None,
        }
    }
}

/// Which runs share a concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyScope {
    /// Runs of the function.
    Function,
    /// Runs of every function of the tenant.
    Tenant,
}

/// `concurrency`: steps executing at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencyConfig {
    /// Steps executing at once.
    pub limit: u32,
    /// One limit per value of this expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Which runs share it.
    pub scope: ConcurrencyScope,
}

/// `throttle`: runs started per period, FIFO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleConfig {
    /// Runs started per period.
    pub limit: u32,
    /// The period, ms.
    pub period_ms: u64,
    /// Extra runs that may start at once.
    pub burst: u32,
    /// One throttle per value of this expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `rateLimit`: runs accepted per period; excess events are skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitConfig {
    /// Runs per period.
    pub limit: u32,
    /// The period, ms.
    pub period_ms: u64,
    /// One limit per value of this expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `debounce`: one run with the last event of a quiet window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebounceConfig {
    /// Quiet time that ends the window, ms.
    pub period_ms: u64,
    /// One window per value of this expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Longest delay from the window's first event, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `batchEvents`: many events, one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchConfig {
    /// Events that start the run at once.
    pub max_size: u32,
    /// Time after the first event that starts the run anyway, ms.
    pub timeout_ms: u64,
    /// One batch per value of this expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `cancelOn`: an event that cancels a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOnConfig {
    /// The name of the event that cancels.
    pub event: String,
    /// Inngest's `match` path: the incoming event must hold the run's
    /// trigger's value there.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_path: Option<String>,
    /// Inngest's `if` over `event` and `async`.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Only within this long of the run's creation, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `timeouts`: bounds on a run's life.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutsConfig {
    /// Longest wait in the queue before starting, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// Longest time from start to end, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_ms: Option<u64>,
}

/// What a new run does while another with its singleton key is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SingletonMode {
    /// The new run is skipped (recorded as `skipped`).
    Skip,
    /// The active one is cancelled.
    Cancel,
}

/// `singleton`: one active run per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SingletonConfig {
    /// One per value of this expression (absent: one per function).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Skip the new run or cancel the old one.
    pub mode: SingletonMode,
}

/// Everything a function declares besides its id, name and triggers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowConfig {
    /// Concurrency limits (at most two).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concurrency: Vec<ConcurrencyConfig>,
    /// Runs started per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleConfig>,
    /// Runs accepted per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// One run per quiet window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce: Option<DebounceConfig>,
    /// Inngest's `priority.run` expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Many events, one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_events: Option<BatchConfig>,
    /// Idempotency key expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<String>,
    /// Events that cancel a run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancel_on: Vec<CancelOnConfig>,
    /// Bounds on a run's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsConfig>,
    /// One active run per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singleton: Option<SingletonConfig>,
}

/// A function as registered by its app's component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// The owning tenant.
    pub tenant: String,
    /// Its id, unique in the tenant across apps: what `invoke`, the API
    /// and the CLI name it by.
    pub id: String,
    /// Its display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The app that serves it.
    pub app: String,
    /// The app version new runs are pinned to.
    pub version: String,
    /// What starts it.
    pub triggers: Vec<TriggerRecord>,
    /// Retries per step, and of the handler for errors raised outside
    /// steps (0–20).
    pub retries: u32,
    /// Flow control and run bounds.
    #[serde(default, flatten)]
    pub flow: FlowConfig,
    /// Whether the app handles this function's failures (`on-failure`).
    #[serde(default)]
    pub on_failure: bool,
}

impl FunctionRecord {
    /// The cron schedules among its triggers.
    pub fn crons(&self) -> impl Iterator<Item = &str> {
        self.triggers.iter().filter_map(|t| t.cron.as_deref())
    }
}
