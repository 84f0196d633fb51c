//! Domain records: what the journal stores and the API shows.
//!
//! Runs, functions, apps, timers and waiters carry their tenant, and steps,
//! output and events are stored under keys that start with it, so another
//! storage backend needs no migration. These types know nothing of wasm,
//! HTTP or sled.

mod clock;
mod error_name;
mod function;
mod incoming;
mod matching;
mod run;
mod tenant;

pub use clock::{Clock, FixedClock, SystemClock};
pub use error_name::ErrorName;
pub use function::*;
pub use incoming::{
    EventError, IncomingEvent, MAX_EVENTS_PER_REQUEST, PRINTABLE_RULE, check_name, check_printable,
    escape_unprintable, is_unprintable, parse_event, parse_events,
};
pub use run::{RunRecord, RunState};
pub use tenant::*;

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The tenant a `/v1` call without a key acts for when the host does not
/// require keys (dev mode), and the one `dev` deploys its examples to.
pub const DEFAULT_TENANT: &str = "default";

/// Milliseconds since the Unix epoch, the time unit of every record.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks a name that appears in URLs and storage keys (an app's, a
/// tenant's): 1 to 64 letters, digits, `-`, `_` or `.`, starting with a
/// letter or digit (so never `.` or `..`, which URLs resolve away, nor a
/// leading `-` that reads as a CLI flag).
pub fn check_name_part(what: &str, name: &str) -> Result<(), String> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

/// A new id for a run or an event: a ULID, increasing even within one
/// millisecond, so ids sort in creation order (listings are newest first by
/// id).
pub fn new_id() -> String {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut generator = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
    generator
        .get_or_insert_with(ulid::Generator::new)
        .generate()
        .unwrap_or_else(|_| ulid::Ulid::new())
        .to_string()
}

/// Identifies a run across tenants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunKey {
    /// The owning tenant.
    pub tenant: String,
    /// The run's id (a ULID: sortable by creation time).
    pub run: String,
}

impl RunKey {
    /// A key for `run` in `tenant`.
    pub fn new(tenant: impl Into<String>, run: impl Into<String>) -> Self {
        RunKey {
            tenant: tenant.into(),
            run: run.into(),
        }
    }
}

impl std::fmt::Display for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.run)
    }
}

/// An accepted event, as stored and as given to handlers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The sender's id, or a ULID the host made.
    pub id: String,
    /// What triggers, waits and `cancelOn` match on, e.g.
    /// `shop/order.created`.
    pub name: String,
    /// The payload: always a JSON object (`{}` if the sender gave none).
    pub data: serde_json::Value,
    /// The `user` object, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<serde_json::Value>,
    /// When it happened (the sender's `ts`, or when it was accepted), in ms.
    pub ts: u64,
    /// The sender's `v` (event schema version), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<String>,
    /// When the host accepted it, in ms.
    pub received_at: u64,
    /// The W3C `traceparent` of its span, on a host exporting traces: the
    /// runs it starts link to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// Where a run is in its life. Shown as lower-case words by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Waiting for an executor.
    Queued,
    /// Executing, or between attempts of a step (its retry is timed).
    Running,
    /// Suspended in `step.sleep`.
    Sleeping,
    /// Suspended in `step.wait_for_event`, or in `step.invoke` until the
    /// invoked run ends.
    Waiting,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped by a user, a `cancelOn` event, a singleton or a timeout.
    Cancelled,
    /// Never started: flow control (a rate limit, a singleton) turned its
    /// event away; `error` says which.
    Skipped,
}

impl RunStatus {
    /// Whether the run is over: nothing will change it again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled | RunStatus::Skipped
        )
    }

    /// The word the API and CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Sleeping => "sleeping",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Skipped => "skipped",
        }
    }

    /// Parses the API word.
    pub fn parse(word: &str) -> Option<RunStatus> {
        serde_json::from_value(serde_json::Value::String(word.to_string())).ok()
    }
}

/// An error as recorded on a step or a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// Class name, e.g. `Error`, `NonRetriableError`, `DeterminismError`.
    pub name: String,
    /// Message for people.
    pub message: String,
    /// Whether another attempt was allowed by the error itself.
    pub retriable: bool,
    /// Delay the error asked for before the next attempt, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorRecord {
    /// An error of the host's that no retry can fix.
    pub fn fatal(name: ErrorName, message: impl Into<String>) -> Self {
        ErrorRecord {
            name: name.as_str().to_string(),
            message: message.into(),
            retriable: false,
            retry_after_ms: None,
        }
    }
}

/// Which export a run calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// `handle`: the function itself.
    #[default]
    Handler,
    /// `on-failure`: the function's failure handler.
    OnFailure,
}

impl RunKind {
    fn is_handler(&self) -> bool {
        *self == RunKind::Handler
    }
}

/// The invoking run's step that waits for a run to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentStep {
    /// The invoking run's id (same tenant).
    pub run: String,
    /// The position of its `invoke` step, which gets this run's output or
    /// error.
    pub seq: u32,
}

/// A concurrency limit a run counts against while one of its steps executes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConcurrencyKey {
    /// Runs whose keys are equal share the limit. Made of the scope (`fn`
    /// or `tenant`), the tenant, the function id (for a tenant-wide limit,
    /// the key expression) and the evaluated key, joined by `\0`.
    pub key: String,
    /// Steps executing at once under this key.
    pub limit: u32,
}

/// The throttle a run's first start counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ThrottleKey {
    /// Tenant, function id and evaluated key, joined by `\0`: runs whose
    /// keys are equal share the throttle.
    pub key: String,
    /// Runs started per period.
    pub limit: u32,
    /// The period, ms.
    pub period_ms: u64,
    /// Extra runs that may start at once.
    pub burst: u32,
}

/// Where a run waits in the queue, evaluated from its event when created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueueSpec {
    /// Limits on its executing steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concurrency: Vec<ConcurrencyKey>,
    /// The throttle of its first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleKey>,
    /// Head start in the queue, ms (Inngest's `priority.run` × 1000).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority_ms: i64,
}

impl QueueSpec {
    /// No limits and no priority: starts as soon as an instance is free.
    pub fn is_unlimited(&self) -> bool {
        self.concurrency.is_empty() && self.throttle.is_none() && self.priority_ms == 0
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The secondary indexes flow control keeps in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexKind {
    /// debounce key → the pending run.
    Debounce,
    /// batch key → the run collecting events.
    Batch,
    /// singleton key → the active run.
    Singleton,
    /// idempotency key → when it was first seen (ms).
    Idempotency,
    /// rate-limit key → its GCRA state (theoretical arrival time, ms).
    RateLimit,
    /// `tenant \0 event \0 run \0 n` → a cancel-on listener.
    CancelOn,
    /// `tenant \0 function \0 schedule` → the next cron fire time (ms).
    Cron,
}

impl IndexKind {
    /// A one-byte prefix that separates the kinds in storage.
    pub fn tag(self) -> u8 {
        self as u8
    }
}

/// One entry of a secondary index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IndexRef {
    /// Which index: each has a key space of its own.
    pub kind: IndexKind,
    /// The entry's key within its index (its layout: see [`IndexKind`]).
    pub key: String,
}

/// What a `cancelOn` listener stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelListener {
    /// The id of the run it cancels, in the tenant of its key.
    pub run: String,
    /// Inngest's `match` path, e.g. `data.userId`: the incoming event must
    /// hold `match_value` there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_path: Option<String>,
    /// The run's triggering event's value at `match_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_value: Option<serde_json::Value>,
    /// The `if` expression, over `event` and `async`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Events after this (ms) no longer cancel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// What kind of durable call a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// `step.run`.
    Run,
    /// `step.sleep` / `step.sleep_until`.
    Sleep,
    /// `step.wait_for_event`.
    Wait,
    /// `step.send_event`.
    Send,
    /// `step.invoke`.
    Invoke,
}

impl StepKind {
    /// The word shown in timelines and determinism errors.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Run => "run",
            StepKind::Sleep => "sleep",
            StepKind::Wait => "wait",
            StepKind::Send => "send",
            StepKind::Invoke => "invoke",
        }
    }
}

/// Where a journaled step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// An attempt failed; the next one is timed (`wake_at`).
    Retrying,
    /// A sleep that has not woken yet.
    Sleeping,
    /// A wait (or an invoke) that has neither ended nor timed out.
    Waiting,
    /// Done; `output` holds the result.
    Completed,
    /// Failed for good; `error` holds why.
    Failed,
}

/// What a waiting step waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitSpec {
    /// The event name awaited.
    pub event: String,
    /// Inngest's `match` path, e.g. `data.orderId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_path: Option<String>,
    /// The triggering event's value at `match_path` (None: absent, so no
    /// event can match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_value: Option<serde_json::Value>,
    /// Inngest's `if`, over `event` (the run's) and `async` (the awaited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// One durable call of a run: the journal is the list of these in call order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Position in the run's call sequence, from 0.
    pub seq: u32,
    /// Effective id (with the `:N` suffix of a repeated id).
    pub id: String,
    /// What kind of call.
    pub kind: StepKind,
    /// Where it is.
    pub status: StepStatus,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The output as JSON text (`null` for sleeps and timed-out waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The error of the last failed attempt (`retrying`), or the final one
    /// (`failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
    /// When the call was first made, in ms.
    pub started_at: u64,
    /// When it reached its current status, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    /// Wake time of a sleep, next attempt of a retry, or timeout of a wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<u64>,
    /// What a wait waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitSpec>,
    /// The run an invoke started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
}

impl StepRecord {
    /// A new entry at `seq` with this status, started at `now`.
    pub fn new(seq: u32, id: String, kind: StepKind, status: StepStatus, now: u64) -> Self {
        StepRecord {
            seq,
            id,
            kind,
            status,
            attempts: 0,
            output: None,
            error: None,
            started_at: now,
            ended_at: None,
            wake_at: None,
            wait: None,
            child: None,
        }
    }
}

/// Why a timer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// A sleep wakes.
    Sleep,
    /// A wait times out.
    WaitTimeout,
    /// A failed step gets its next attempt.
    StepRetry,
    /// A run whose handler failed outside a step gets its next attempt.
    RunRetry,
    /// An invoked run did not end in time.
    InvokeTimeout,
    /// A run held back (debounce, batch) may start.
    DelayedStart,
    /// A run has waited too long to start (`timeouts.start`).
    StartTimeout,
    /// A run has taken too long (`timeouts.finish`).
    FinishTimeout,
}

/// A durable timer: at `at`, the run state machine acts on run `key` as
/// `kind` says (wakes it, retries, times it out, lets it start).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timer {
    /// When it fires, ms since the epoch.
    pub at: u64,
    /// The run it acts on (tenant and id).
    pub key: RunKey,
    /// The step it belongs to ([`RUN_LEVEL_SEQ`] for run-level timers).
    pub seq: u32,
    /// Why it exists, which says what firing it does.
    pub kind: TimerKind,
}

/// The step sequence number used by run-level timers.
pub const RUN_LEVEL_SEQ: u32 = u32::MAX;

/// A run waiting for an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiter {
    /// The waiting run (tenant and id).
    pub key: RunKey,
    /// The position of its `wait_for_event` step, which gets the event.
    pub seq: u32,
    /// The event name, `match` and `if` an event must pass.
    pub spec: WaitSpec,
    /// When it gives up (its `WaitTimeout` timer), ms since the epoch.
    pub timeout_at: u64,
}

/// One chunk of a run's output, keyed so that a replay rewrites rather than
/// repeats it: `segment` is the number of journal entries before the output,
/// the attempts tell retries apart, `offset` is the byte position within.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// Journal entries before this output.
    pub segment: u32,
    /// Attempts of the handler that failed before this execution.
    #[serde(default)]
    pub run_attempt: u32,
    /// Attempts of the segment's step that failed before this output.
    #[serde(default)]
    pub attempt: u32,
    /// Byte offset within the segment.
    pub offset: u64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The text (lossy UTF-8).
    pub text: String,
}

/// A deployed app and its current version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    /// The owning tenant.
    pub tenant: String,
    /// The app's name, unique in its tenant (part of URLs and keys).
    pub name: String,
    /// Content hash of the current version.
    pub version: String,
    /// Ids of the functions the current version registers.
    pub functions: Vec<String>,
    /// When the current version was deployed, in ms.
    pub deployed_at: u64,
    /// The versions kept (the current one, recent ones, and any a run still
    /// needs), oldest first.
    pub versions: Vec<String>,
    /// When each kept version was last deployed, ms.
    #[serde(default)]
    pub deployed: std::collections::BTreeMap<String, u64>,
}
